"""RL4VLM's tasks and the Task API they share (envs/task.py; docs/tasks.md).

The built-in tasks (NumberLine, EZPoints, Points24, Blackjack in envs/builtin.py; ALFWorld in
envs/alfworld/task.py) are Task values like any user task; envs/registry.py resolves `--env.task`.
"""

from __future__ import annotations

from envs.registry import BUILTIN_TASKS, make_env, resolve_task
from envs.task import Task

__all__ = ["BUILTIN_TASKS", "Task", "make_env", "resolve_task"]
