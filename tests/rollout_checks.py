"""A rollout actor on the tiny model and the checks on what it ships, for tests/test_rollout_actor.py (in
process, CPU) and tests/test_gpu.py (vLLM on CUDA): whole episodes that a fresh env replays exactly."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from actors.rollout_actor import RolloutActor
from contracts.config import EnvConfig, RolloutConfig
from contracts.schema import StepRecord, decode_png
from envs import make_env

ENVS, STEPS = 3, 3


def make_actor(model_path, store=None, actor_id=0, envs=ENVS) -> RolloutActor:
    cfg = RolloutConfig(backend="hf", max_new_tokens=24, steps_per_call=STEPS)
    return RolloutActor(actor_id, EnvConfig(envs_per_actor=envs), cfg, model_path, store)


def by_episode(records: list[StepRecord]) -> dict[str, list[StepRecord]]:
    out = defaultdict(list)
    for r in records:
        out[r.episode_id].append(r)
    return {k: sorted(v, key=lambda s: s.step) for k, v in out.items()}


def assert_whole(episodes: dict[str, list[StepRecord]]) -> None:
    """Steps 0..n-1, only the last one ends the episode, and a fresh env replays it exactly."""
    assert episodes, "expected at least one finished episode"
    env = make_env("numberline")
    for eid, steps in episodes.items():
        assert [s.step for s in steps] == list(range(len(steps))), eid
        assert not any(s.terminated or s.truncated for s in steps[:-1]), eid
        assert steps[-1].terminated or steps[-1].truncated, eid
        assert len({s.seed for s in steps}) == 1
        obs, _ = env.reset(seed=steps[0].seed)
        for s in steps:  # the stored image is the observation the action was chosen on
            np.testing.assert_array_equal(np.asarray(decode_png(s.image_png)), obs)
            obs, reward, terminated, truncated, _ = env.step(s.action)
            assert (reward, terminated, truncated) == (s.reward, s.terminated, s.truncated)
