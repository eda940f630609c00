"""Model text -> env action, the paper's post-processing function f (spec §4).

f(text) = a if exactly one legal action string follows the first `"action":`, otherwise a uniformly random
action (exploration, no penalty in gym_cards). Every fallback is reported as invalid so it can be counted.
Model text is only ever searched as a string; it is never executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTION_MARKER = '"action":'


@dataclass(frozen=True)
class ParsedAction:
    action: int
    """Index into the task's action list (random when `valid` is False)."""
    valid: bool
    """True when the text named exactly one legal action."""
    reason: str
    """"ok", "not_text", "no_match" or "ambiguous"."""


def parse_action(text, action_names: tuple[str, ...], rng: np.random.Generator, ten_rule: bool = False):
    """The paper's gym_cards parser. `ten_rule` is the EZPoints/Points24 handling of "10"."""
    if not isinstance(text, str):
        return ParsedAction(int(rng.integers(len(action_names))), False, "not_text")
    s = text.lower()
    # str.find gives -1 without a marker, so only the last character is kept, exactly as the paper's code.
    s = s[s.find(ACTION_MARKER) :]
    found: set[str] = set()
    if ten_rule and "10" in s:
        found.add("10")
        s = s.replace("10", "")
    found.update(name for name in action_names if name in s)  # "10" is gone from s by now
    if len(found) == 1:
        return ParsedAction(action_names.index(found.pop()), True, "ok")
    reason = "no_match" if not found else "ambiguous"
    return ParsedAction(int(rng.integers(len(action_names))), False, reason)
