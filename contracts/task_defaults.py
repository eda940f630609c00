"""A task's config defaults applied to a preset: what `parse_cli(args, task_defaults)` does before the flags.

Order of precedence, lowest first: the generic defaults (`Config()`), the task's defaults, the preset's own
values, the command line's flags. A preset field still at its generic value is the task's to set (the `tiny`
preset keeps its 48 new tokens for any task, and takes the task's λ and checkpoint path); a flag always wins.
Without a preset name (`python -m cluster.train --env.task mypkg.task:TASK ...`, or the reference in its place:
`python -m cluster.train mypkg.task:TASK`) the run starts from the task's own preset if it has one (the
built-ins), else from the generic `embedded` one: the built-in tasks' shared settings without NumberLine's
demonstration loss, which needs an expert.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

GENERIC_PRESET = "embedded"
TASK_FLAG = "--env.task"


def task_flag(args: Sequence[str]) -> str | None:
    """The value of the last `--env.task` flag in `args` (either spelling: `--env.task X`, `--env.task=X`)."""
    value = None
    for i, arg in enumerate(args):
        if arg == TASK_FLAG and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(TASK_FLAG + "="):
            value = arg.split("=", 1)[1]
    return value


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _has(obj: Any, path: str) -> bool:
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return False
        obj = getattr(obj, part)
    return True


def with_task_defaults(cfg: Any, generic: Any, defaults: Mapping[str, Any], task: str) -> Any:
    """A copy of `cfg` with `defaults` (field path -> value) set wherever `cfg` still has `generic`'s value."""
    from contracts.validation import ConfigError

    unknown = [path for path in defaults if not _has(generic, path)]
    if unknown:
        raise ConfigError([f"--env.task {task}: its defaults name {path!r}, not a config field" for path in unknown])
    out = copy.deepcopy(cfg)
    for path, value in defaults.items():
        if _get(out, path) == _get(generic, path):
            *parents, name = path.split(".")
            setattr(_get(out, ".".join(parents)) if parents else out, name, copy.deepcopy(value))
    out.env.task = task
    return out


def presets_for(
    presets: Mapping[str, tuple[str, Any]],
    args: Sequence[str] | None,
    task_defaults: Callable[[str], Mapping[str, Any]] | None,
    generic: Any,
) -> tuple[list[str], Mapping[str, tuple[str, Any]]]:
    """The argument list (with a preset name first) and the presets to parse it against, the chosen one with
    its task's defaults in (`task_defaults(task)` -> {field path: value}; envs/registry.py: config_defaults)."""
    args = list(sys.argv[1:] if args is None else args)
    if args and ":" in args[0] and not args[0].startswith("-"):  # `cluster.train mypkg.task:TASK ...` (make train)
        args = [TASK_FLAG, args[0], *args[1:]]
    task = task_flag(args)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        task = task or generic.env.task  # no --env.task: the default task (its own preset)
        own = task in presets and presets[task][1].env.task == task
        args = [task if own else GENERIC_PRESET, *args]
    if task_defaults is None or args[0] not in presets:
        return args, presets
    description, preset = presets[args[0]]
    task = task or preset.env.task
    resolved = with_task_defaults(preset, generic, task_defaults(task), task)
    return args, {**presets, args[0]: (description, resolved)}
