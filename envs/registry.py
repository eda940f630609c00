"""Tasks by reference: `--env.task NAME` or `--env.task package.module:attr`, resolved to a Task (envs/task.py).

A reference is, in this order: a built-in task's name (`BUILTIN_TASKS`); the name of a task an installed
package registers in the entry-point group `rl4vlm.tasks` (pyproject: `[project.entry-points."rl4vlm.tasks"]
mytask = "mypkg.task:TASK"`); or `package.module:attr` for any importable module (on sys.path / PYTHONPATH).
`attr` is a Task, or a function of no arguments that returns one. The driver resolves and smoke-tests the task
before Ray starts (`task_config`, `check_task`), so an unknown or broken task is one clear error, not a crashed
actor; each rollout actor then resolves the same reference itself.
"""

from __future__ import annotations

import importlib
import traceback
from importlib import metadata

import numpy as np

from contracts.config import Config
from contracts.presets import parse_cli
from contracts.validation import ConfigError, flag
from envs.parsing import ParsedAction
from envs.task import Expert, Perception, Task, TaskDefaults, TaskError
from envs.task_checks import checked_parse, checked_prompt, checked_reset, checked_step

BUILTIN_TASKS = {
    "numberline": "envs.builtin:NUMBERLINE",
    "ezpoints": "envs.builtin:EZPOINTS",
    "points24": "envs.builtin:POINTS24",
    "blackjack": "envs.builtin:BLACKJACK",
    "alfworld": "envs.alfworld.task:ALFWORLD",
}
ENTRY_POINT_GROUP = "rl4vlm.tasks"
REQUIRED_HOOKS = ("make_env", "prompt", "parse")
OPTIONAL_HOOKS = ("admissible", "success", "corpus", "episode_type", "solvable")


def installed_tasks() -> dict[str, str]:
    """Task names registered by installed packages (entry-point group `rl4vlm.tasks`) -> their `module:attr`."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve_task(ref: str | Task) -> Task:
    """The Task a reference names (see the module docstring); TaskError, one line, for anything else."""
    if isinstance(ref, Task):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise TaskError(f"a task reference must be a non-empty string, not {ref!r}")
    target = BUILTIN_TASKS.get(ref) or (ref if ":" in ref else installed_tasks().get(ref))
    if target is None:
        installed = ", ".join(sorted(installed_tasks())) or "none"
        raise TaskError(
            f"unknown task {ref!r}: built-in tasks are {', '.join(BUILTIN_TASKS)}; installed ({ENTRY_POINT_GROUP}): "
            f"{installed}; or give package.module:attr of a Task (docs/tasks.md)"
        )
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - whatever the user's module raises while importing
        raise TaskError(f"task {ref!r}: importing {module_name} failed: {_where(error)}") from error
    for part in attr.split(".") if attr else ():
        if not hasattr(obj, part):
            raise TaskError(f"task {ref!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, Task):
        try:
            obj = obj()
        except Exception as error:  # noqa: BLE001
            raise TaskError(f"task {ref!r}: calling {attr}() failed: {_where(error)}") from error
    if not isinstance(obj, Task):
        raise TaskError(f"task {ref!r}: {target} is a {type(obj).__name__}, not an envs.task.Task")
    _check_fields(obj, ref)
    return obj


def _check_fields(task: Task, ref: str) -> None:
    bad = [] if isinstance(task.name, str) and task.name.strip() else ["name must be a non-empty string"]
    bad += [f"{h} must be callable" for h in REQUIRED_HOOKS if not callable(getattr(task, h))]
    bad += [f"{h} must be callable or None" for h in OPTIONAL_HOOKS if not _optional_callable(getattr(task, h))]
    for name, kind in (("expert", Expert), ("perception", Perception)):
        if getattr(task, name) is not None and not isinstance(getattr(task, name), kind):
            bad.append(f"{name} must be an envs.task.{kind.__name__} or None")
    if not isinstance(task.defaults, TaskDefaults):
        bad.append("defaults must be an envs.task.TaskDefaults")
    if not all(isinstance(a, str) for a in task.action_names):
        bad.append("action_names must be strings")
    if task.action_names == () and task.admissible is None:
        bad.append("give action_names (a Discrete env's actions) or admissible (per-step actions)")
    if bad:
        raise TaskError(f"task {ref!r}: " + "; ".join(bad))


def _optional_callable(value) -> bool:
    return value is None or callable(value)


def _where(error: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame: where in the user's code it went wrong."""
    frames = traceback.extract_tb(error.__traceback__)
    at = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{at}"


def make_env(ref: str | Task):
    """A fresh env of the task `ref` names."""
    return resolve_task(ref).make_env()


def config_defaults(ref: str) -> dict:
    """The config defaults of the task `ref` names, by field path (contracts/task_defaults.py applies them)."""
    task = resolve_task(ref)
    d = task.defaults
    return {
        "model.path": f"checkpoints/{task.name}-sft",
        "rollout.max_new_tokens": d.max_new_tokens,
        "ppo.steps_per_update": d.steps_per_update,
        "ppo.cot_coef": d.cot_coef,
        **dict(d.config),
    }


def task_config(args: list[str] | None = None) -> tuple[Config, Task]:
    """The run's config from the command line (preset, the task's defaults, then the flags) and its Task,
    checked against each other. TaskError or ConfigError, one line per problem, for anything wrong."""
    cfg = parse_cli(args, task_defaults=config_defaults)
    task = resolve_task(cfg.env.task)
    problems = []
    if task.held_out_seeds is not None:
        lo, hi = task.held_out_seeds
        last = cfg.env.eval_seed + cfg.run.eval_episodes
        if not (lo <= cfg.env.eval_seed and last <= hi):
            problems.append(
                f"{flag('env.eval_seed')} {cfg.env.eval_seed}: must be >= {lo} (with run.eval_episodes, up to {hi}): "
                f"task {task.name} holds out seeds in [{lo}, {hi}) only"
            )
    if task.expert is None and cfg.model.build_if_missing and not cfg.model.base:
        problems.append(f"--model.path {cfg.model.path}: task {task.name} has no SFT expert; give a checkpoint")
    if task.expert is None and cfg.ppo.demo_coef > 0:
        problems.append(
            f"{flag('ppo.demo_coef')} {cfg.ppo.demo_coef:g}: task {task.name} has no expert to demonstrate; "
            "pass --ppo.demo-coef 0 (the numberline preset turns it on)"
        )
    if problems:
        raise ConfigError(problems)
    return cfg, task


def check_task(task: Task, seed: int, cot: bool = True) -> None:
    """Smoke-test a task's hooks once, in this process: make the env, reset it, build a prompt, parse an empty
    answer and step with the result. TaskError naming the hook and the user code's line when one fails."""
    env = _hook(task, "make_env", task.make_env)
    _, info = _hook(task, "reset", checked_reset, env, seed)
    _hook(task, "prompt", checked_prompt, task, info, cot)
    parsed: ParsedAction = _hook(task, "parse", checked_parse, task, "", info, np.random.default_rng(0), env)
    _hook(task, "step", checked_step, env, parsed.to_env())


def _hook(task: Task, hook: str, fn, *args):
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001 - a task's hook is user code
        raise TaskError(f"task {task.name}: {hook} failed: {_where(error)}") from error
