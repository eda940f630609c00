"""learner/demos.py and the demonstration loss in a whole PPO update (learner/ppo_update.py), on the tiny LLaVA in
plain torch: the pool is laid out as SFT lays out a demonstration, and the loss teaches the thoughts only."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from learner_checks import numberline_table, plain_torch, with_own_behaviour
from PIL import Image

from contracts.config import PPOConfig
from envs.experts import numberline_expert, numberline_response
from envs.prompts import chat_prompt, task_prompt
from learner import ppo
from learner.batch import TokenTexts, samples_from_table
from learner.demos import demo_pool
from learner.ppo_update import ppo_update
from learner.sft import demonstrations


def test_the_pool_is_the_noiseless_expert_laid_out_as_sft_does(tiny_model_path):
    from models.policy import load_policy

    _, processor, _ = load_policy(tiny_model_path)
    tokenizer = processor.tokenizer
    pool = demo_pool("numberline", processor, 12)
    demos = demonstrations("numberline", 12, 0.0, 0)  # the SFT seeds: the same states SFT was taught
    assert len(pool) == 12
    for sample, (img, prompt, response, info) in zip(pool, demos, strict=True):
        assert prompt == chat_prompt(task_prompt("numberline", info))
        expected = [int(i) for i in processor(text=prompt, images=Image.fromarray(img))["input_ids"][0]]
        assert sample.record.prompt_ids == expected  # the image placeholder expanded, as the engine runs it
        assert np.array_equal(np.asarray(sample.image), img)
        assert response == numberline_response(info, numberline_expert(info), True)  # no action noise
        ids = sample.record.response_ids
        assert ids[-1] == tokenizer.eos_token_id
        thoughts, action = tokenizer.decode(ids[: sample.action_start]), tokenizer.decode(ids[sample.action_start :])
        assert '"thoughts"' in thoughts and '"action"' not in thoughts
        assert action.lstrip().startswith('"action":')


def thoughts_and_action_nll(model, make_batch, pool) -> tuple[float, float]:
    """Mean NLL of the pool's thought tokens and of its action tokens (EOS excluded) at T = 1."""
    with torch.no_grad():
        batch = make_batch(pool)
        logp = model.demo_logprobs(batch)  # (B, R)
    thoughts = float(ppo.thoughts_nll(logp, batch["response_mask"], batch["action_start"]))
    positions = torch.arange(logp.shape[1]).unsqueeze(0)
    ends = batch["response_mask"].sum(-1, keepdim=True) - 1  # the EOS position
    action = (positions >= batch["action_start"].unsqueeze(1)) & (positions < ends)
    return thoughts, float(-(logp * action).sum() / action.sum())


def three_updates(model_path: str, coef: float) -> tuple[tuple[float, float], list[dict]]:
    """A value warm-up and two PPO updates on expert NumberLine rows with the given demonstration weight, same
    seeds; the NLL of a demonstration pool's thoughts and actions after them, and the updates' metrics."""
    cfg = PPOConfig(micro_batch=3, grad_accum=1, epochs=2, lr=1e-3, value_warmup_updates=1, target_kl=float("inf"))
    cfg = dataclasses.replace(cfg, demo_coef=coef, demo_batch=4)
    torch.manual_seed(0)
    _, model, processor, make_batch = plain_torch(model_path, cfg)
    samples = samples_from_table(numberline_table(processor), TokenTexts(processor.tokenizer))
    with_own_behaviour(samples, model, make_batch)
    pool = demo_pool("numberline", processor, 16)
    torch.manual_seed(1)
    logs = [ppo_update(model, samples, make_batch, cfg, u, 3, 0, demos=pool) for u in range(3)]
    return thoughts_and_action_nll(model, make_batch, pool), logs


def test_the_demonstration_loss_teaches_the_thoughts_not_the_action(tiny_model_path):
    """The same updates with and without the loss (the replay rows are expert answers, so PPO alone makes them
    likelier too): with it the thoughts gain much more than without, and more than the actions do."""
    (plain_thoughts, plain_action), plain_logs = three_updates(tiny_model_path, 0.0)
    (thoughts, action), logs = three_updates(tiny_model_path, 1.0)
    assert all("learner/demo_loss" not in m for m in plain_logs)
    assert "learner/demo_loss" not in logs[0]  # the warm-up moves the value head only: no demonstrations either
    assert all(m["learner/demo_loss"] > 0 for m in logs[1:])
    assert thoughts < plain_thoughts - 0.5, (thoughts, plain_thoughts)  # measured: 5.01 against 5.82 nats
    # the action tokens are not in the loss: they gain only through the weights they share with the thoughts
    assert plain_thoughts - thoughts > 1.5 * (plain_action - action), (thoughts, plain_thoughts, action, plain_action)
