"""gym_cards-style tasks for RL4VLM. `TASKS` names each task's env, action strings and parser rule."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym


@dataclass(frozen=True)
class TaskSpec:
    name: str
    entry_point: str
    action_names: tuple[str, ...]
    ten_rule: bool = False
    """EZPoints/Points24 parse "10" before single digits (spec §4)."""


TASKS = {
    "numberline": TaskSpec("numberline", "envs.numberline:NumberLineEnv", ("-", "+")),
}

for _spec in TASKS.values():
    gym.register(id=f"rl4vlm/{_spec.name}-v0", entry_point=_spec.entry_point)


def make_env(task: str) -> gym.Env:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return gym.make(f"rl4vlm/{task}-v0").unwrapped
