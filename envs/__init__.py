"""RL4VLM's tasks: gym_cards and ALFWorld. `TASKS` names each task's env, action strings and parser rule."""

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
    text_actions: bool = False
    """ALFWorld: the action is a command string chosen among the step's admissible commands
    (envs/parsing.py: parse_command), not an index into `action_names`."""
    success_is_won: bool = False
    """Success = the episode ended won (terminated), not the paper's gym_cards rule "return > 0": ALFWorld pays
    goal progress every step, so a lost episode's return can be positive."""
    slow_reset: bool = False
    """Resets may take seconds (loading/generating a game): rollout actors run them off the batch's path."""


_NUMBERS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
TASKS = {
    "numberline": TaskSpec("numberline", "envs.numberline:NumberLineEnv", ("-", "+")),
    "ezpoints": TaskSpec("ezpoints", "envs.ezpoints:EZPointsEnv", (*_NUMBERS, "+", "*", "="), ten_rule=True),
    "points24": TaskSpec(
        "points24", "envs.points24:Points24Env", (*_NUMBERS, "+", "-", "*", "/", "(", ")", "="), ten_rule=True
    ),
    "blackjack": TaskSpec("blackjack", "envs.blackjack:BlackjackEnv", ("stand", "hit")),
    "alfworld": TaskSpec(
        "alfworld", "envs.alfworld.env:AlfworldEnv", (), text_actions=True, success_is_won=True, slow_reset=True
    ),
}


def episode_success(task: str, rewards: list[float], terminated: bool) -> bool:
    """The task's success rule for one finished episode (see TaskSpec.success_is_won)."""
    return bool(terminated) if TASKS[task].success_is_won else sum(rewards) > 0


for _spec in TASKS.values():
    gym.register(id=f"rl4vlm/{_spec.name}-v0", entry_point=_spec.entry_point)


def make_env(task: str) -> gym.Env:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return gym.make(f"rl4vlm/{task}-v0").unwrapped
