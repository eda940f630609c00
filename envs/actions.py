"""The envs' check of an action: an exception with a clear message, never an `assert` (`python -O` strips it)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class InvalidActionError(gym.error.InvalidAction, ValueError):
    """An action outside the env's action space: gymnasium's InvalidAction, and a ValueError."""


def check_action(env: gym.Env, action: Any) -> None:
    """Raise InvalidActionError unless `action` is in `env.action_space` (valid actions pass unchanged)."""
    if env.action_space.contains(action):
        return
    names = getattr(env, "action_names", ())
    meaning = f" ({', '.join(f'{i} = {n!r}' for i, n in enumerate(names))})" if names else ""
    raise InvalidActionError(
        f"{type(env).__name__}.step: invalid action {action!r}; the action space is {env.action_space}{meaning}"
    )
