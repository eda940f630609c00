"""RolloutActor on ALFWorld (in-process, HF engine): text actions, whole episodes, resets off the batch path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("alfworld")

from actors.replay_store import ReplayStore  # noqa: E402
from actors.rollout_actor import RolloutActor  # noqa: E402
from contracts.config import EnvConfig, ReplayConfig, RolloutConfig  # noqa: E402
from contracts.schema import decode_png, from_table  # noqa: E402
from envs import make_env  # noqa: E402


def make_actor(model_path, store=None, envs=3) -> RolloutActor:
    cfg = RolloutConfig(backend="hf", max_new_tokens=16, steps_per_call=2)
    actor = RolloutActor(0, EnvConfig(task="alfworld", envs_per_actor=envs), cfg, model_path, store)
    for slot in actor.slots:
        slot.env.max_steps = 2  # short episodes so a collect ships some
    return actor


def test_collect_ships_whole_alfworld_episodes(alfworld_cache, tiny_model_path):
    store = ReplayStore(ReplayConfig(capacity_steps=1000))
    actor = make_actor(tiny_model_path, store)
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


def test_a_slow_reset_does_not_stall_the_batch(alfworld_cache, tiny_model_path):
    actor = make_actor(tiny_model_path, envs=3)
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


def test_evaluate_reports_success_per_task_type(alfworld_cache, tiny_model_path):
    actor = make_actor(tiny_model_path, envs=3)
    out = actor.evaluate(num_episodes=6, seed_base=EnvConfig().eval_seed)
    assert out["eval/episodes"] == 6
    types = {k[len("eval/n/") :] for k in out if k.startswith("eval/n/")}
    assert len(types) == 6 and all(out[f"eval/n/{t}"] == 1 for t in types)
    assert all(out[f"eval/won/{t}"] in (0.0, 1.0) for t in types)
