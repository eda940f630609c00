"""Model code the rollout actors and the learner share: tokenizer, the embedded tiny LLaVA, policy + value head."""
