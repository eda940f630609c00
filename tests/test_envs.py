"""envs/builtin.py, envs/alfworld/task.py: the built-in tasks are Task values that match their envs, with the
paper's action lists and parser rules; the framework's code has no task names or task branches left."""

from __future__ import annotations

import pathlib
import re

import pytest

from envs import BUILTIN_TASKS, Task, make_env, resolve_task
from envs.builtin import paper_parser, ten_rule_parser
from envs.task import return_positive

GYM = ["numberline", "ezpoints", "points24", "blackjack"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("task", GYM)
def test_builtins_match_their_envs(task):
    spec, env = resolve_task(task), make_env(task)
    assert isinstance(spec, Task) and spec.name == task
    assert tuple(env.action_names) == spec.action_names
    assert env.action_space.n == len(spec.action_names)
    assert spec.parse is (ten_rule_parser if task in ("ezpoints", "points24") else paper_parser)
    assert spec.success is return_positive and spec.admissible is None and not spec.slow_reset
    assert spec.expert is not None and spec.perception is not None and spec.corpus is not None


def test_action_lists_are_the_papers():
    numbers = tuple(str(n) for n in range(1, 11))
    assert resolve_task("ezpoints").action_names == (*numbers, "+", "*", "=")
    assert resolve_task("points24").action_names == (*numbers, "+", "-", "*", "/", "(", ")", "=")
    assert resolve_task("blackjack").action_names == ("stand", "hit")
    assert resolve_task("numberline").action_names == ("-", "+")


def test_builtins_by_name_and_by_reference_are_the_same_task():
    for name, ref in BUILTIN_TASKS.items():
        if name != "alfworld":
            assert resolve_task(ref) is resolve_task(name)


def test_task_defaults_are_the_measured_ones():
    defaults = {name: resolve_task(name).defaults for name in GYM}
    assert {n: (d.max_new_tokens, d.steps_per_update, d.cot_coef) for n, d in defaults.items()} == {
        "numberline": (96, 256, 0.5),
        "ezpoints": (128, 256, 0.5),
        "points24": (176, 256, 0.5),
        "blackjack": (128, 256, 0.5),
    }


# The framework's layers above envs/ know tasks only through the Task API.
FRAMEWORK = ("actors/rollout_actor.py", "actors/task_calls.py", "learner/sft.py", "cluster/train.py")
TASK_WORDS = re.compile(r"numberline|ezpoints|points24|blackjack|alfworld|gym_cards|task_type", re.IGNORECASE)


@pytest.mark.parametrize("path", FRAMEWORK)
def test_no_task_names_in_the_framework(path):
    """Usage lines in module docstrings may name a preset (`python -m cluster.train numberline`); code may not."""
    text = (ROOT / path).read_text()
    code = text.split('"""', 2)[2] if text.startswith('"""') else text  # past the module docstring
    lines = [line for line in code.splitlines() if TASK_WORDS.search(line)]
    assert not lines, f"{path} names tasks:\n" + "\n".join(lines)
