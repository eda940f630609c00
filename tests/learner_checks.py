"""What the learner tests share (tests/test_ppo_update.py on a toy, tests/test_learner.py and tests/test_demos.py
on the tiny LLaVA): StepRecords with the bookkeeping no learner code reads filled in, which weights an update
moved, NumberLine replay rows with expert answers, and the tiny LLaVA behind the update's interface in plain torch."""

from __future__ import annotations

import functools

import pyarrow as pa
import torch
from torch import nn

from contracts.config import PPOConfig
from contracts.schema import StepRecord, encode_png, to_record_batch
from learner.batch import collate
from learner.step_model import PlainTorchModel, WrappedModelStep, param_groups

TEMPERATURE = 0.2


def record(**fields) -> StepRecord:
    """A StepRecord with the bookkeeping fields no learner code reads filled in (the answer parsed)."""
    bookkeeping = {"actor_id": 0, "env_index": 0, "seed": 0, "response_text": "", "action": 0, "action_valid": True}
    return StepRecord(**{**bookkeeping, "parse_status": "ok", **fields})


def params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def numberline_table(processor, episodes: tuple[int, ...] = (6,)) -> pa.Table:
    """NumberLine episodes with the prompt ids the engine would run (image placeholders expanded) and expert
    CoT answers; behaviour log-probs are placeholders (`with_own_behaviour` replaces them)."""
    from PIL import Image

    from envs import make_env
    from envs.experts import numberline_response
    from envs.prompts import chat_prompt, task_prompt

    env, tokenizer, rows = make_env("numberline"), processor.tokenizer, []
    for e, length in enumerate(episodes):
        obs, info = env.reset(seed=e)
        for t in range(length):
            prompt = processor(text=chat_prompt(task_prompt("numberline", info)), images=Image.fromarray(obs))
            response = tokenizer(numberline_response(info, t % 2, True), add_special_tokens=False)["input_ids"]
            response = [*response, tokenizer.eos_token_id]
            rows.append(
                record(
                    episode_id=f"e{e}",
                    step=t,
                    policy_version=0,
                    prompt_ids=[int(i) for i in prompt["input_ids"][0]],
                    image_png=encode_png(obs),
                    response_ids=response,
                    behaviour_logprobs=[-1.0] * len(response),
                    reward=float((t + e) % 3 == 0),
                    terminated=t == length - 1,
                    truncated=False,
                )
            )
            obs, _, _, _, info = env.step(t % 2)
    return pa.Table.from_batches([to_record_batch(rows)])


def plain_torch(model_path: str, cfg: PPOConfig):
    """The policy of `model_path` behind the update's interface, in plain torch; (module, model, make_batch)."""
    from models.policy import PolicyWithValue, load_policy
    from models.tokenizer import banned_token_ids

    vlm, processor, head = load_policy(model_path)
    module = PolicyWithValue(vlm, head)
    optimizer = torch.optim.AdamW(param_groups(module, cfg), lr=cfg.lr, eps=1e-7, weight_decay=0.0)  # as learner.py
    banned = torch.tensor(banned_token_ids(processor.tokenizer))
    wrapped = PlainTorchModel(module, optimizer, cfg.grad_accum, cfg.max_grad_norm)
    model = WrappedModelStep(wrapped, optimizer, torch.device("cpu"), banned, TEMPERATURE, cfg.cot_coef)
    pad_id = processor.tokenizer.pad_token_id
    return (
        module,
        model,
        processor,
        functools.partial(collate, image_processor=processor.image_processor, pad_id=pad_id),
    )


def with_own_behaviour(samples, model, make_batch) -> None:
    """Behaviour log-probs of a synchronous run: the policy's own, so the importance weights are 1."""
    with torch.no_grad():
        token_logp = model.score(make_batch(samples))[2]  # (B, R)
    for s, logp in zip(samples, token_logp):
        s.record.behaviour_logprobs = logp[: len(s.record.response_ids)].tolist()
