"""The real system at tiny size: Ray, a vLLM rollout actor, the replay store, 2 DeepSpeed learner ranks.

Asserts the contract rather than a score: PPO updates run on both ranks, the weight push reaches the vLLM
engine in place (its log-probs for a fixed prompt then equal the learner's HF forward), and the policy
version advances and tags new samples. Then the driver runs end to end and writes eval.json.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from contracts.presets import tiny

pytestmark = pytest.mark.slow


def _prompt_and_image():
    from envs import make_env
    from envs.prompts import chat_prompt, task_prompt

    obs, info = make_env("numberline").reset(seed=123)
    return chat_prompt(task_prompt("numberline", info)), obs


def _uneven_split(table):
    """One episode for rank 0, all the others for rank 1."""
    import pyarrow.compute as pc

    first = table.column("episode_id")[0]
    mask = pc.equal(table.column("episode_id"), first)
    return [table.filter(mask), table.filter(pc.invert(mask))]


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_updates_push_and_logprob_match(ray_cluster, tiny_model_path, zero_stage):
    import ray
    from PIL import Image

    from cluster.launch import launch, push_weights, shutdown
    from contracts.schema import from_table

    cfg = tiny()
    cfg.learner.world_size = 2
    cfg.learner.zero_stage = zero_stage  # ZeRO-3 shards the weights: the push must gather them
    cfg.ppo.lr = 1e-3  # large enough that two updates visibly move the weights
    cfg.ppo.value_warmup_updates = 0  # warm-up updates leave the policy untouched by design
    if zero_stage == 3:  # the demonstration loss's forwards are collective too: every rank runs as many
        cfg.ppo.demo_coef, cfg.ppo.demo_samples = 0.5, 16
    system = launch(cfg, tiny_model_path)
    prompt, image = _prompt_and_image()
    before = ray.get(system.actors[0].score.remote(prompt, image))

    version = 0
    for update in range(2):
        shards = None
        while shards is None:
            ray.get(system.actors[0].collect.remote())
            shards = ray.get(system.store.take.remote(cfg.ppo.steps_per_update, version, 2))
        if update == 1:  # uneven shards: ranks must still run the same number of (ZeRO-3 collective) forwards
            shards = _uneven_split(pa.concat_tables(shards))
        metrics = ray.get([l.update.remote(s, version) for l, s in zip(system.learners, shards)])
        assert all(np.isfinite(m["learner/policy_loss"]) and m["learner/samples"] > 0 for m in metrics)
        assert all(("learner/demo_loss" in m) == (zero_stage == 3) for m in metrics)
        version += 1
    push = push_weights(system, version)
    assert push["timing/weight_push_s"] > 0
    assert ray.get(system.actors[0].policy_version.remote()) == version

    # After the push, vLLM's processed log-probs equal the learner's forward on the same tokens.
    after = ray.get(system.actors[0].score.remote(prompt, image))

    def learner_logprobs(gen):  # every rank joins: a ZeRO-3 forward gathers the sharded weights
        calls = [l.logprobs.remote(gen.prompt_ids, gen.response_ids, Image.fromarray(image)) for l in system.learners]
        return ray.get(calls)[0]

    learner_lp = learner_logprobs(after)
    assert len(after.response_ids) > 0
    np.testing.assert_allclose(after.logprobs, learner_lp, atol=2e-3)
    # ... and differ from the pre-push engine's for the same response (the weights really changed).
    stale_lp = learner_logprobs(before)
    assert np.max(np.abs(np.array(stale_lp) - np.array(before.logprobs))) > 1e-3

    # New samples carry the new policy version.
    shards = None
    for _ in range(10):  # an episode lasts up to 10 steps; one collect may finish none
        ray.get(system.actors[0].collect.remote())
        if (shards := ray.get(system.store.take.remote(1, version, 1))) is not None:
            break
    steps = from_table(shards[0])
    assert max(s.policy_version for s in steps) == version
    shutdown(system)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_driver_end_to_end(ray_cluster, tiny_model_path, tmp_path, mode):
    from cluster.train import main

    argv = ["tiny", "--model.path", tiny_model_path, "--run.out-dir", str(tmp_path), "--run.name", "e2e"]
    result = main([*argv, "--run.mode", mode])
    saved = json.loads((tmp_path / "e2e" / "eval.json").read_text())
    assert saved == result
    for key in ("task", "episodes", "sft_success", "final_success"):
        assert key in saved
    assert saved["task"] == "numberline" and saved["episodes"] == 4
    assert 0.0 <= saved["sft_success"] <= 1.0 and 0.0 <= saved["final_success"] <= 1.0
    assert saved["updates"] == 2 and saved["policy_version"] == 2 and saved["mode"] == mode
    assert saved["expert_success"] == 1.0  # NumberLine's expert on the same 4 held-out episodes
    run = tmp_path / "e2e"
    assert (run / "config.json").exists() and (run / "learning_curve.png").exists()
    assert (run / "checkpoint" / "model.safetensors").exists()
    assert len((run / "history.jsonl").read_text().splitlines()) >= 3
