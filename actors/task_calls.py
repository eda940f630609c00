"""A task's hooks as the rollout actor calls them: user code that may raise, contained one episode at a time.

Each call runs a hook with its result checked (envs/task_checks.py). Whatever goes wrong (the hook raises, or
returns something unusable: an observation that is no image, a parse outside the action space, a prompt that
is no string) becomes `EpisodeFailed(hook)`: the rollout actor drops that episode only (its steps never reach
the store), recreates the env and goes on. `failed` counts it per hook, logs it with the task's name and the
traceback the first time each hook fails with each error type, and raises TaskFailedError once an actor's
episodes have failed `max_in_a_row` times in a row without one finishing: a task that fails every episode
stops the run with that message instead of spinning.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np

from envs.parsing import ParsedAction
from envs.task import Task, TaskFailedError
from envs.task_checks import checked_parse, checked_prompt, checked_reset, checked_step

log = logging.getLogger(__name__)

HOOKS = ("make_env", "reset", "step", "prompt", "parse", "success", "episode_type", "solvable")


class EpisodeFailed(Exception):
    """A task hook failed for one episode; the hook's own exception is the cause."""

    def __init__(self, hook: str, error: BaseException):
        super().__init__(f"{hook}: {type(error).__name__}: {error}")
        self.hook, self.error = hook, error


class TaskCalls:
    def __init__(self, task: Task, cot: bool, max_in_a_row: int, actor_id: int = 0):
        self.task, self.cot, self.max_in_a_row, self.actor_id = task, cot, max_in_a_row, actor_id
        self.failures = dict.fromkeys(HOOKS, 0)
        """Failures per hook over the actor's life (the rollout actor reports the ones of each call)."""
        self.in_a_row = 0
        self._logged: set[tuple[str, str]] = set()

    def _run(self, hook: str, fn, *args):
        try:
            return fn(*args)
        except Exception as error:  # noqa: BLE001 - a task's hook is user code: anything may come out of it
            raise EpisodeFailed(hook, error) from error

    # ---- the hooks ---------------------------------------------------------------------------------------------
    def make_env(self):
        return self._run("make_env", self.task.make_env)

    def reset(self, env, seed: int) -> tuple[np.ndarray, dict]:
        return self._run("reset", checked_reset, env, seed)

    def step(self, env, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self._run("step", checked_step, env, action)

    def prompt(self, info: dict) -> str:
        return self._run("prompt", checked_prompt, self.task, info, self.cot)

    def parse(self, text: str, info: dict, rng: np.random.Generator, env) -> ParsedAction:
        return self._run("parse", checked_parse, self.task, text, info, rng, env)

    def success(self, rewards: list[float], terminated: bool, info: dict) -> bool:
        return bool(self._run("success", self.task.success, rewards, terminated, info))

    def episode_type(self, info: dict) -> str | None:
        """The episode's label for per-type success; None when the task has none or the hook fails (reported,
        not fatal: it only labels a finished episode)."""
        if self.task.episode_type is None:
            return None
        try:
            label = self._run("episode_type", self.task.episode_type, info)
        except EpisodeFailed as failure:
            self._count(failure)
            return None
        return None if label is None else str(label)

    def solvable(self, info: dict) -> bool:
        """Whether the episode can be won (True without the hook, or when it fails: reported, not fatal)."""
        if self.task.solvable is None:
            return True
        try:
            return bool(self._run("solvable", self.task.solvable, info))
        except EpisodeFailed as failure:
            self._count(failure)
            return True

    # ---- failures ----------------------------------------------------------------------------------------------
    def _count(self, failure: EpisodeFailed, env_index: int | None = None) -> None:
        self.failures[failure.hook] += 1
        key = (failure.hook, type(failure.error).__name__)
        where = f"rollout actor {self.actor_id}" + (f" env {env_index}" if env_index is not None else "")
        if key in self._logged:
            log.debug("task %s: %s failed again in %s: %s", self.task.name, failure.hook, where, failure)
            return
        self._logged.add(key)
        trace = "".join(traceback.format_exception(failure.error))
        log.error(
            "task %s: %s failed in %s; the episode is dropped and counted (rollout/failures/%s); this traceback "
            "is logged once per hook and error type:\n%s",
            self.task.name,
            failure.hook,
            where,
            failure.hook,
            trace,
        )

    def failed(self, failure: EpisodeFailed, env_index: int | None = None) -> None:
        """Count and log one failed episode; TaskFailedError when too many failed in a row."""
        self._count(failure, env_index)
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise TaskFailedError(
                f"task {self.task.name}: {self.in_a_row} episodes in a row failed in rollout actor {self.actor_id} "
                f"and none finished (last: {failure}); the traceback is in the actor's log. Fix the task, or raise "
                "--env.max-consecutive-failures"
            )

    def finished(self) -> None:
        """An episode ended normally: the failures so far were not every episode."""
        self.in_a_row = 0

    def remake(self, env):
        """A fresh env after a failure; the old one when even that fails (counted; its next reset may mend it)."""
        try:
            return self.make_env()
        except EpisodeFailed as failure:
            self.failed(failure)
            return env
