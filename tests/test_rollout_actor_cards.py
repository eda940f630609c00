"""actors/rollout_actor.py on the card tasks with a scripted engine: prompts follow the current formula.

The paper's SB3 auto-reset showed a new episode's first prompt with the previous episode's last formula; we
deliberately do not, so every prompt must show the formula of the state its image shows.
"""

from __future__ import annotations

import numpy as np
import pytest

from actors import rollout_actor
from actors.engines import Generation
from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from contracts.config import EnvConfig, ReplayConfig, RolloutConfig
from contracts.schema import decode_png, from_table
from envs import make_env
from envs.prompts import chat_prompt, task_prompt


class ScriptedEngine:
    """Answers "+" on an empty formula and "=" otherwise, so each episode is exactly two steps."""

    def __init__(self):
        self.calls: list[list[str]] = []

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
