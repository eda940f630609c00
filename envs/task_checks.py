"""A task's hooks called with their results checked: what the rollout actor (actors/task_calls.py) and the
driver's start-up smoke test (envs/registry.py: check_task) rely on. A hook's own exception passes through; a
result of the wrong kind raises TaskError saying what was expected, so a broken task fails where it broke."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.parsing import ParsedAction
from envs.task import Task, TaskError


def check_image(obs: Any, where: str) -> np.ndarray:
    """The observation as an (H, W, 3) uint8 array (what the engine and the replay store take)."""
    image = np.asarray(obs)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TaskError(f"{where} returned an observation of shape {image.shape} {image.dtype}; need (H, W, 3) uint8")
    return image


def checked_reset(env, seed: int) -> tuple[np.ndarray, dict]:
    out = env.reset(seed=seed)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TaskError(f"env.reset returned {type(out).__name__}; need (obs, info)")
    obs, info = out
    if not isinstance(info, dict):
        raise TaskError(f"env.reset returned info of type {type(info).__name__}; need a dict")
    return check_image(obs, "env.reset"), info


def checked_step(env, action) -> tuple[np.ndarray, float, bool, bool, dict]:
    out = env.step(action)
    if not (isinstance(out, tuple) and len(out) == 5):
        raise TaskError(f"env.step returned {type(out).__name__}; need (obs, reward, terminated, truncated, info)")
    obs, reward, terminated, truncated, info = out
    if not isinstance(info, dict):
        raise TaskError(f"env.step returned info of type {type(info).__name__}; need a dict")
    try:
        reward = float(reward)
    except (TypeError, ValueError):
        raise TaskError(f"env.step returned reward {reward!r}; need a number") from None
    if not math.isfinite(reward):
        raise TaskError(f"env.step returned reward {reward}; need a finite number")
    return check_image(obs, "env.step"), reward, bool(terminated), bool(truncated), info


def checked_prompt(task: Task, info: dict, cot: bool) -> str:
    prompt = task.prompt(info, cot)
    if not isinstance(prompt, str):
        raise TaskError(f"prompt returned a {type(prompt).__name__}; need a str")
    return prompt


def in_action_space(space: spaces.Space, action: Any) -> bool:
    """Whether `env.step` may be given `action`. A Text space takes any string: the raw-text fallback of a
    text-action parser (ALFWorld's) is sent as it is and the env answers it."""
    if isinstance(space, spaces.Text):
        return isinstance(action, str)
    try:
        return bool(space.contains(action))
    except Exception:  # noqa: BLE001 - an action of a type the space cannot even compare
        return False


def checked_parse(task: Task, text: str, info: dict, rng: np.random.Generator, env) -> ParsedAction:
    """The parser's answer for `text`, an action of the step's list and of the env's action space."""
    actions = task.actions(info)
    parsed = task.parse(text, actions, rng)
    if not isinstance(parsed, ParsedAction):
        raise TaskError(f"parse returned a {type(parsed).__name__}; need an envs.parsing.ParsedAction")
    index = parsed.action
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not -1 <= index < max(len(actions), 1):
        raise TaskError(f"parse returned action {index!r}; need an index into the step's {len(actions)} actions")
    space = getattr(env, "action_space", None)
    if space is not None and not in_action_space(space, parsed.to_env()):
        raise TaskError(f"parse returned env action {parsed.to_env()!r}, outside the env's action space {space}")
    return parsed
