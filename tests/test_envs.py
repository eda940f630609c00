"""envs/__init__.py: the task registry (`TASKS`) matches the envs, and its action lists are the paper's."""

from __future__ import annotations

import pytest

from envs import TASKS, make_env


@pytest.mark.parametrize("task", ["numberline", "ezpoints", "points24", "blackjack"])
def test_registry_matches_the_envs(task):
    env = make_env(task)
    assert TASKS[task].name == task
    assert tuple(env.action_names) == TASKS[task].action_names
    assert env.action_space.n == len(TASKS[task].action_names)
    assert TASKS[task].ten_rule == (task in ("ezpoints", "points24"))


def test_action_lists_are_the_papers():
    numbers = tuple(str(n) for n in range(1, 11))
    assert TASKS["ezpoints"].action_names == (*numbers, "+", "*", "=")
    assert TASKS["points24"].action_names == (*numbers, "+", "-", "*", "/", "(", ")", "=")
    assert TASKS["blackjack"].action_names == ("stand", "hit")
