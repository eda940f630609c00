"""The demonstration pool of PPO's demonstration loss (PPOConfig.demo_coef): the task expert's answers as Samples.

Each learner rank builds it once at start from noiseless expert episodes on the SFT seeds (learner/sft.py
`demonstrations`), in the checkpoint's chat template and with the prompt ids its processor expands, exactly as
SFT lays out a demonstration. PPO then adds the cross-entropy of their thoughts (learner/ppo.py `thoughts_nll`)
to its loss: the tokens before `"action":` only, so what the policy does stays RL's to learn.
"""

from __future__ import annotations

from PIL import Image

from envs.parsing import action_start_index
from learner.batch import Sample, TokenTexts
from learner.sft import demonstrations
from models.families import chat_format


def demo_pool(task: str, processor, n: int, cot: bool = True, seed: int = 0) -> list[Sample]:
    """`n` expert steps of `task` as Samples: prompt ids with the image placeholder expanded, the answer's ids
    with EOS, `action_start` at its `"action":`. An answer without thoughts (cot False) teaches nothing here."""
    tokenizer, eos = processor.tokenizer, processor.tokenizer.eos_token_id
    token_texts = TokenTexts(tokenizer)
    prompt_ids: dict[tuple[str, tuple], list[int]] = {}  # the expansion depends on the image size (LlavaNext)
    pool = []
    for img, prompt, response, _ in demonstrations(task, n, 0.0, seed, cot, chat=chat_format(processor)):
        image = Image.fromarray(img)
        key = (prompt, img.shape)
        if key not in prompt_ids:
            prompt_ids[key] = [int(i) for i in processor(text=prompt, images=image)["input_ids"][0]]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
        start = action_start_index(token_texts(response_ids))
        pool.append(Sample.probe(prompt_ids[key], response_ids, image, action_start=start))
    return pool
