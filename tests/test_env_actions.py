"""envs/actions.py: an action outside an env's action space raises a clear error, also under `python -O`."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from envs import make_env
from envs.actions import InvalidActionError

CARD_TASKS = ["numberline", "ezpoints", "points24", "blackjack"]


@pytest.mark.parametrize("task", CARD_TASKS)
def test_invalid_actions_raise(task):
    env = make_env(task)
    env.reset(seed=0)
    n = env.action_space.n
    for bad in (n, -1, 0.5, "1", None, np.array([0])):
        with pytest.raises(InvalidActionError, match=rf"{type(env).__name__}\.step: invalid action") as err:
            env.step(bad)
        assert isinstance(err.value, ValueError) and isinstance(err.value, gym.error.InvalidAction)
    assert f"Discrete({n})" in str(err.value) and repr(env.action_names[0]) in str(err.value)


@pytest.mark.parametrize("task", CARD_TASKS)
def test_valid_actions_step_as_before(task):
    """Python ints, numpy ints and 0-d integer arrays all step the same episode."""
    results = []
    for action in (0, np.int64(0), np.array(0)):
        env = make_env(task)
        env.reset(seed=3)
        obs, reward, terminated, truncated, info = env.step(action)
        results.append((obs.tobytes(), reward, terminated, truncated, sorted(map(str, info.items()))))
    assert results[0] == results[1] == results[2]


def test_invalid_action_raises_under_python_O():
    """`assert` is stripped by -O; the check must not be."""
    code = (
        "from envs import make_env\n"
        "from envs.actions import InvalidActionError\n"
        "assert False, 'asserts are on'\n"  # proves -O is in effect: this line is stripped
        "env = make_env('numberline'); env.reset(seed=0)\n"
        "try:\n    env.step(7)\nexcept InvalidActionError as e:\n    print('raised:', e)\n"
    )
    root = pathlib.Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-O", "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("raised: NumberLineEnv.step: invalid action 7")
