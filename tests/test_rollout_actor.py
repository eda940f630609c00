"""actors/rollout_actor.py in-process (no Ray): HF engine on the tiny random VLM, real envs, in-process store.

NumberLine first (records, seeds, env failures, weight loads), then the card tasks with a scripted engine (each
prompt shows the formula of its own state) and ALFWorld (text actions, resets off the batch's path).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import threading

import numpy as np
import pytest
import torch
from rollout_checks import ENVS, STEPS, assert_whole, by_episode, make_actor

from actors import rollout_actor
from actors.engines import Generation
from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from contracts.config import EnvConfig, ReplayConfig, RolloutConfig
from contracts.schema import StepRecord, decode_png, from_table
from envs import make_env
from envs.parsing import parse_action
from envs.prompts import chat_prompt, task_prompt
from models.families import FAMILIES
from models.weight_sync import WeightsPayload

STATUSES = {"ok", "no_match", "ambiguous", "not_text"}

vllm_key = FAMILIES["llava"].vllm_key


def drain(store: ReplayStore) -> list[StepRecord]:
    """Every step in the store (all versions are fresh for learner_version 0 with the default lag)."""
    if store.num_steps == 0:
        return []
    return from_table(store.take(store.num_steps, learner_version=0)[0])


def in_progress(actor: RolloutActor) -> list[StepRecord]:
    return [s for slot in actor.slots for s in slot.steps]


def test_collect_ships_whole_episodes_with_complete_records(tiny_model_path, store):
    actor = make_actor(tiny_model_path, store)
    m = actor.collect()
    assert m["rollout/env_steps"] == ENVS * STEPS
    assert m["rollout/tokens"] > 0 and m["rollout/policy_version"] == 0
    m2 = actor.collect(steps_per_env=10)  # an episode lasts at most 10 steps: every env finishes one
    shipped = drain(store)
    episodes = by_episode(shipped)
    assert len(episodes) == m["rollout/episodes"] + m2["rollout/episodes"] >= ENVS
    assert_whole(episodes)
    everything = shipped + in_progress(actor)
    assert len(everything) == ENVS * (STEPS + 10)
    assert m["rollout/tokens"] + m2["rollout/tokens"] == sum(len(r.response_ids) for r in everything)

    config = json.loads((pathlib.Path(tiny_model_path) / "config.json").read_text())
    image_id, image_len = config["image_token_index"], config["image_seq_length"]
    tokenizer = actor.engine.tokenizer
    for r in everything:
        assert r.prompt_ids.count(image_id) == image_len
        first = r.prompt_ids.index(image_id)
        assert r.prompt_ids[first : first + image_len] == [image_id] * image_len  # one contiguous block
        assert 0 < len(r.response_ids) == len(r.behaviour_logprobs) <= 24
        assert all(np.isfinite(lp) and lp <= 0 for lp in r.behaviour_logprobs)
        assert r.response_text == tokenizer.decode(r.response_ids, skip_special_tokens=True)
        assert r.policy_version == 0 and r.actor_id == 0 and r.env_index in range(ENVS)
        assert r.episode_id.startswith(f"0-{r.env_index}-")
        assert np.asarray(decode_png(r.image_png)).shape == (300, 300, 3)
        assert r.parse_status in STATUSES and r.action_valid == (r.parse_status == "ok")
        assert parse_action(r.response_text, ("-", "+"), np.random.default_rng(0)).reason == r.parse_status


def test_random_text_is_mostly_invalid_and_counted(tiny_model_path, store):
    actor = make_actor(tiny_model_path, store)
    m = actor.collect(steps_per_env=6)
    steps = drain(store) + in_progress(actor)
    assert len(steps) == m["rollout/env_steps"] == ENVS * 6
    invalid = [s for s in steps if not s.action_valid]
    assert m["rollout/invalid"] == len(invalid) >= 0.5 * len(steps)
    assert {s.action for s in invalid} == {0, 1}  # a uniformly random fallback, not a constant


def test_training_seeds_distinct_and_eval_uses_held_out_seeds(tiny_model_path, store, monkeypatch):
    actor = make_actor(tiny_model_path, store)
    actor.collect(steps_per_env=12)
    train_seeds = {eid: steps[0].seed for eid, steps in by_episode(drain(store) + in_progress(actor)).items()}
    assert len(train_seeds) > ENVS
    assert len(set(train_seeds.values())) == len(train_seeds)
    eval_seed = EnvConfig().eval_seed
    assert max(train_seeds.values()) < eval_seed

    seen, real_make_env = [], actor.task.make_env

    def recording_make_env():
        env = real_make_env()
        real_reset = env.reset

        def reset(*, seed=None, options=None):
            seen.append(seed)
            return real_reset(seed=seed, options=options)

        env.reset = reset
        return env

    monkeypatch.setattr(actor.calls, "task", dataclasses.replace(actor.task, make_env=recording_make_env))
    slots_before = [(s.seed, s.episodes, len(s.steps)) for s in actor.slots]
    stats_before = store.stats()
    out = actor.evaluate(5, seed_base=eval_seed)  # more episodes than envs: slots are refilled
    assert out["eval/episodes"] == 5
    assert sorted(set(seen)) == [eval_seed + i for i in range(5)]
    assert 0.0 <= out["eval/success"] <= 1.0 and -10.0 <= out["eval/return"] <= 1.0
    assert 0.0 <= out["eval/invalid_frac"] <= 1.0
    assert store.stats() == stats_before and store.num_steps == 0
    assert [(s.seed, s.episodes, len(s.steps)) for s in actor.slots] == slots_before


def test_training_seeds_stay_below_eval_seed_for_many_actors(tiny_model_path):
    actor = make_actor(tiny_model_path, actor_id=10, envs=1)
    assert actor.slots[0].seed < EnvConfig().eval_seed
    assert actor.slots[0].seed == 10 * 1000 * 100_000  # the seeds every reported run trained on


def test_env_failure_drops_only_that_episode(tiny_model_path, store):
    actor = make_actor(tiny_model_path, store)
    slot = actor.slots[0]
    assert abs(slot.info["current"] - slot.info["target"]) >= 2  # seed 0: the episode cannot end on step 1
    broken_env, real_step, calls, dropped = slot.env, slot.env.step, [], []

    def flaky_step(action):
        calls.append(action)
        if len(calls) == 2:
            dropped.append((f"0-0-{slot.episodes}", len(slot.steps)))
            raise RuntimeError("simulated env crash")
        return real_step(action)

    broken_env.step = flaky_step
    m = actor.collect(steps_per_env=10)
    assert m["rollout/env_failures"] == 1
    assert m["rollout/env_steps"] == ENVS * 10 - 1
    assert dropped == [("0-0-1", 1)]  # one step of the broken episode existed when it failed
    assert slot.env is not broken_env
    shipped = drain(store)
    records = shipped + in_progress(actor)
    assert all(r.episode_id != "0-0-1" for r in records)
    assert any(r.episode_id == "0-0-2" and r.seed == 1 for r in records)  # a fresh episode, next seed
    assert_whole(by_episode(shipped))


# ---- load_weights: checksum, in-place load, version tags on later samples ----


def perturbed(actor, version: int) -> tuple[WeightsPayload, dict[str, np.ndarray]]:
    """The engine's own weights plus noise, as a payload with vLLM names; also returns them by HF name."""
    gen = torch.Generator().manual_seed(version)
    hf = {
        n: (p.detach().cpu() + 0.01 * torch.randn(p.shape, generator=gen)).numpy().astype(np.float32)
        for n, p in actor.engine.vlm.named_parameters()
    }
    return WeightsPayload.build(version, [(vllm_key(n), a) for n, a in hf.items()]), hf


def weights(actor) -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().copy() for n, p in actor.engine.vlm.named_parameters()}


def test_load_weights_sets_version_and_tags_later_samples(tiny_model_path, store):
    actor = make_actor(tiny_model_path, store)
    actor.collect(steps_per_env=2)
    drain(store)
    open_eps = {s.index: (f"0-{s.index}-{s.episodes}", len(s.steps)) for s in actor.slots}
    payload, expected = perturbed(actor, version=7)
    out = actor.load_weights(payload)
    assert actor.version == actor.policy_version() == 7 and out["rollout/policy_version"] == 7.0
    loaded = weights(actor)
    assert loaded.keys() == expected.keys()
    for name, arr in expected.items():
        np.testing.assert_array_equal(loaded[name], arr)
    m = actor.collect(steps_per_env=10)
    assert m["rollout/policy_version"] == 7
    records = drain(store) + in_progress(actor)
    assert len(records) == ENVS * 10 + sum(n for _, n in open_eps.values())
    for r in records:  # steps taken before the load keep version 0, everything after carries 7
        eid, n_before = open_eps[r.env_index]
        assert r.policy_version == (0 if r.episode_id == eid and r.step < n_before else 7), (r.episode_id, r.step)


def test_load_weights_rejects_tampered_payload(tiny_model_path):
    actor = make_actor(tiny_model_path)
    before = weights(actor)
    good, _ = perturbed(actor, version=3)
    corrupted = WeightsPayload(3, good.names, [a.copy() for a in good.arrays], good.checksum)
    corrupted.arrays[-1].flat[0] += 1.0
    wrong_sum = WeightsPayload(4, good.names, good.arrays, "0" * 32)
    for payload in (corrupted, wrong_sum):
        with pytest.raises(ValueError, match="checksum"):
            actor.load_weights(payload)
        assert actor.version == 0
    after = weights(actor)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_load_weights_with_unknown_name_changes_nothing(tiny_model_path):
    actor = make_actor(tiny_model_path)
    before = weights(actor)
    good, _ = perturbed(actor, version=5)
    names, arrays = [*good.names, "bogus.weight"], [*good.arrays, np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="unexpected"):
        actor.load_weights(WeightsPayload.build(5, list(zip(names, arrays))))
    assert actor.version == 0
    after = weights(actor)
    assert all(np.array_equal(before[n], after[n]) for n in before)


# ---- card tasks (scripted engine): every prompt shows the formula of the state its image shows ----
# The paper's SB3 auto-reset showed a new episode's first prompt with the previous episode's last formula; we
# deliberately do not.


class ScriptedEngine:
    """Answers "+" on an empty formula and "=" otherwise, so each episode is exactly two steps."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.chat_prompt = chat_prompt  # the embedded model's template

    def generate(self, prompts, images):
        self.calls.append(list(prompts))
        empty = "You are observing the current formula: . "
        return [
            Generation([1], [2], [-0.1], ' {\n "action": "+" \n}' if empty in p else ' {\n "action": "=" \n}')
            for p in prompts
        ]


@pytest.mark.parametrize("task", ["ezpoints", "points24"])
@pytest.mark.parametrize("cot", [True, False])
def test_first_prompt_of_each_episode_shows_its_own_empty_formula(task, cot, monkeypatch):
    engine = ScriptedEngine()
    monkeypatch.setattr(rollout_actor, "make_engine", lambda *args, **kwargs: engine)
    store = ReplayStore(ReplayConfig(capacity_steps=1000))
    env_cfg = EnvConfig(task=task, cot=cot, envs_per_actor=2)
    actor = RolloutActor(0, env_cfg, RolloutConfig(backend="hf", steps_per_call=6), "unused", store)
    actor.collect()
    empty = chat_prompt(task_prompt(task, {"formula": []}, cot))
    plus = chat_prompt(task_prompt(task, {"formula": ["+"]}, cot))
    assert empty != plus
    # steps 0, 2, 4 start episodes (after "=" ended the previous one), steps 1, 3, 5 follow "+"
    assert [call[0] for call in engine.calls] == [empty, plus] * 3
    assert all(call[0] == call[1] for call in engine.calls)
    episodes = {}
    for record in from_table(store.take(store.num_steps, learner_version=0)[0]):
        episodes.setdefault(record.episode_id, []).append(record)
    episodes = {k: sorted(v, key=lambda s: s.step) for k, v in episodes.items()}
    assert len(episodes) == 6
    env = make_env(task)
    for steps in episodes.values():  # the stored image is the fresh deal with an empty formula
        obs, info = env.reset(seed=steps[0].seed)
        assert info["formula"] == []
        np.testing.assert_array_equal(np.asarray(decode_png(steps[0].image_png)), obs)
        assert [s.reward for s in steps] == [0.0, -1.0] and steps[-1].terminated


# ---- ALFWorld: text actions, whole episodes, resets off the batch's path ----
needs_alfworld = pytest.mark.skipif(importlib.util.find_spec("alfworld") is None, reason="alfworld not installed")


def make_alfworld_actor(model_path, store=None, envs=3) -> RolloutActor:
    cfg = RolloutConfig(backend="hf", max_new_tokens=16, steps_per_call=2)
    actor = RolloutActor(0, EnvConfig(task="alfworld", envs_per_actor=envs), cfg, model_path, store)
    for slot in actor.slots:
        slot.env.max_steps = 2  # short episodes so a collect ships some
    return actor


@needs_alfworld
def test_collect_ships_whole_alfworld_episodes(alfworld_cache, tiny_model_path):
    store = ReplayStore(ReplayConfig(capacity_steps=1000))
    actor = make_alfworld_actor(tiny_model_path, store)
    episodes = 0
    for _ in range(10):  # slots whose reset is still loading sit out a round, so the count per call varies
        episodes += actor.collect(steps_per_env=4)["rollout/episodes"]
        if episodes >= 3:
            break
    assert episodes >= 3
    records = from_table(store.take(store.num_steps, learner_version=0)[0])
    assert records and {r.parse_status for r in records} <= {"ok", "no_match", "empty"}
    env = make_env("alfworld")
    episodes: dict[str, list] = {}
    for r in records:
        episodes.setdefault(r.episode_id, []).append(r)
    for steps in episodes.values():
        steps.sort(key=lambda s: s.step)
        env.max_steps = 2
        obs, info = env.reset(seed=steps[0].seed)
        for s in steps:  # the stored image and reward replay on a fresh env from the stored action
            np.testing.assert_array_equal(np.asarray(decode_png(s.image_png)), obs)
            command = info["admissible_commands"][s.action] if s.action >= 0 else "not a command"
            obs, reward, terminated, truncated, info = env.step(command)
            assert (reward, terminated, truncated) == (s.reward, s.terminated, s.truncated)
        assert steps[-1].truncated or steps[-1].terminated


@needs_alfworld
def test_a_slow_reset_does_not_stall_the_batch(alfworld_cache, tiny_model_path):
    actor = make_alfworld_actor(tiny_model_path, envs=3)
    for slot in actor.slots:
        slot.env.max_steps = 50  # no episode ends (and resets) inside this test's collects
        if slot.pending is not None:
            slot.pending.result()  # the first games are loaded
    release = threading.Event()
    slow = actor.slots[0]
    original = slow.env.reset

    def blocked_reset(**kwargs):
        release.wait(timeout=60)
        return original(**kwargs)

    slow.env.reset = blocked_reset
    actor._reset(slow)  # its next episode starts loading and blocks
    try:
        metrics = actor.collect(steps_per_env=2)
        assert metrics["rollout/env_steps"] == 2 * 2  # the other two env copies stepped twice each
        assert slow.pending is not None and not slow.pending.done()
    finally:
        release.set()
    slow.pending.result()
    metrics = actor.collect(steps_per_env=1)
    assert metrics["rollout/env_steps"] == 3 and slow.pending is None  # it rejoined once its reset finished


@needs_alfworld
def test_evaluate_reports_success_per_task_type(alfworld_cache, tiny_model_path):
    actor = make_alfworld_actor(tiny_model_path, envs=3)
    out = actor.evaluate(num_episodes=6, seed_base=EnvConfig().eval_seed)
    assert out["eval/episodes"] == 6
    types = {k[len("eval/n/") :] for k in out if k.startswith("eval/n/")}
    assert len(types) == 6 and all(out[f"eval/n/{t}"] == 1 for t in types)
    assert all(out[f"eval/won/{t}"] in (0.0, 1.0) for t in types)
