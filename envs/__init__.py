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


_NUMBERS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
TASKS = {
    "numberline": TaskSpec("numberline", "envs.numberline:NumberLineEnv", ("-", "+")),
    "ezpoints": TaskSpec("ezpoints", "envs.ezpoints:EZPointsEnv", (*_NUMBERS, "+", "*", "="), ten_rule=True),
    "points24": TaskSpec(
        "points24", "envs.points24:Points24Env", (*_NUMBERS, "+", "-", "*", "/", "(", ")", "="), ten_rule=True
    ),
    "blackjack": TaskSpec("blackjack", "envs.blackjack:BlackjackEnv", ("stand", "hit")),
}

for _spec in TASKS.values():
    gym.register(id=f"rl4vlm/{_spec.name}-v0", entry_point=_spec.entry_point)


def make_env(task: str) -> gym.Env:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return gym.make(f"rl4vlm/{task}-v0").unwrapped
