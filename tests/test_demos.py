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
from learner.batch import Sample, TokenTexts, samples_from_table
from learner.demos import demo_pool
from learner.ppo_update import Demonstration, PhaseClock, demonstration_loss, ppo_update
from learner.sft import demonstrations


def test_the_pool_is_the_noiseless_expert_laid_out_as_sft_does(tiny_model_path):
    from models.policy import load_policy

    _, processor, _ = load_policy(tiny_model_path)
    tokenizer = processor.tokenizer
    pool = demo_pool("numberline", processor, 12)
    demos = demonstrations("numberline", 12, 0.0, 0)  # the SFT seeds: the same states SFT was taught
    assert len(pool) == 12
    for demo, (img, prompt, response, info) in zip(pool, demos, strict=True):
        sample = demo.sample
        assert prompt == chat_prompt(task_prompt("numberline", info))
        expected = [int(i) for i in processor(text=prompt, images=Image.fromarray(img))["input_ids"][0]]
        assert sample.record.prompt_ids == expected  # the image placeholder expanded, as the engine runs it
        assert np.array_equal(np.asarray(sample.image), img)
        assert response == numberline_response(info, numberline_expert(info), True)  # no action noise
        ids = sample.record.response_ids
        assert ids[-1] == tokenizer.eos_token_id
        # the slot is the action's name: every legal answer (here "+" and "-") has the same tokens before it
        assert tokenizer.decode(ids[: demo.slot]).endswith('"action":') and demo.slot > sample.action_start
        # the sample's action start is the `"action":` key's (as a replay row's), its behaviour log-probs unset
        assert '"action"' in tokenizer.decode(ids[sample.action_start : demo.slot])
        assert '"action"' not in tokenizer.decode(ids[: sample.action_start])
        assert sample.record.behaviour_logprobs == [0.0] * len(ids)
        assert (
            sorted(tokenizer.decode([i]) for i in demo.slot_ids) == [' "+"', ' "-"'] and ids[demo.slot] in demo.slot_ids
        )


def nll_at(model, make_batch, pool) -> tuple[float, float]:
    """At T = 1 over the pool: the mean NLL of the tokens before the slot and of the legal names' mass at it."""
    with torch.no_grad():
        batch = make_batch([d.sample for d in pool])
        slot = torch.tensor([d.slot for d in pool])
        ids = torch.tensor([d.slot_ids for d in pool])  # (B, 2): "+" and "-"
        token_logp, legal = model.demo_logprobs(batch, slot, ids, torch.ones_like(ids, dtype=torch.bool))
    shared = torch.arange(token_logp.shape[1]).unsqueeze(0) < slot.unsqueeze(1)
    return float(-(token_logp * shared).sum() / shared.sum()), float(-legal.mean())


def test_the_loss_is_the_same_whichever_legal_action_was_demonstrated(tiny_model_path):
    """What to do stays RL's: the same state demonstrated with the other action gives the very same loss and
    gradients (nothing at or after the slot depends on the demonstrated name)."""
    cfg = dataclasses.replace(PPOConfig(micro_batch=3, grad_accum=1), demo_coef=1.0, demo_batch=1)
    module, model, processor, make_batch = plain_torch(tiny_model_path, cfg)
    demo = demo_pool("numberline", processor, 1)[0]
    ids, slot = demo.sample.record.response_ids, demo.slot
    (other,) = [i for i in demo.slot_ids if i != ids[slot]]
    swapped = Sample.probe(demo.sample.record.prompt_ids, [*ids[:slot], other, *ids[slot + 1 :]], demo.sample.image)
    grads = []
    for sample in (demo.sample, swapped):
        module.zero_grad()
        one = Demonstration(sample, slot, demo.slot_ids)
        loss = demonstration_loss(model, [one], make_batch, cfg, PhaseClock())
        loss.backward()
        grads.append((float(loss), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    assert grads[0][0] == grads[1][0] > 0
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))


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
    return nll_at(model, make_batch, pool), logs


def test_the_demonstration_loss_teaches_the_answer_not_the_action(tiny_model_path):
    """The same updates with and without the loss (the replay rows are answers of the right form, so PPO alone
    makes them likelier too): with it the shared tokens and the legal names' mass at the slot gain much more."""
    (plain_shared, plain_slot), plain_logs = three_updates(tiny_model_path, 0.0)
    (shared, slot), logs = three_updates(tiny_model_path, 1.0)
    assert all("learner/demo_loss" not in m for m in plain_logs)
    assert "learner/demo_loss" not in logs[0]  # the warm-up moves the value head only: no demonstrations either
    assert all(m["learner/demo_loss"] > 0 for m in logs[1:])
    assert shared < plain_shared - 0.5, (shared, plain_shared)  # measured: 5.01 against 5.82
    assert slot < plain_slot - 0.5, (slot, plain_slot)  # measured: 4.79 against 5.50 nats
