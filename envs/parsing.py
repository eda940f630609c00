"""Model text -> env action, the paper's post-processing function f (spec §4).

f(text) = a if exactly one legal action string follows the first `"action":`, otherwise a uniformly random
action (exploration, no penalty in gym_cards). Every fallback is reported as invalid so it can be counted.
Model text is only ever searched as a string; it is never executed. `action_start_index` finds the same
marker in a response's tokens for the learner's CoT/action split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    """"ok", "not_text", "no_match", "ambiguous" or "empty"."""
    command: str = ""
    """ALFWorld: the command sent to the env (an admissible one, or the raw text when nothing matched)."""
    env_action: object = None
    """What `env.step` receives; None means `action` itself (an index into a Discrete env's action list)."""

    def to_env(self):
        """The env action: `env_action` when the parser set one, else the index `action`."""
        return self.action if self.env_action is None else self.env_action


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


def parse_command(text, admissible: list[str], rng: np.random.Generator) -> ParsedAction:
    """The paper's ALFWorld parser (spec §4) with one fix: an exact admissible command wins.

    Lower-case the text; empty -> a random admissible command. Otherwise look after the first `"action":` (or
    at the last 30 characters without it). If the quoted value there is an admissible command, that command.
    Else the first admissible command (in list order) found as a whole phrase: "go to cabinet 1" no longer
    matches inside "go to cabinet 10" as the paper's plain substring test did. Nothing found -> the raw text
    goes to the env (it answers "Nothing happens." and the step costs -1). `action` is the command's index in
    `admissible`, -1 for raw text.
    """
    if not isinstance(text, str):
        text = ""
    s = text.lower().strip()
    if not s:
        i = int(rng.integers(len(admissible))) if admissible else -1
        command = admissible[i] if i >= 0 else ""
        return ParsedAction(i, False, "empty", command, command)
    at = s.find(ACTION_MARKER)
    tail = s[at + len(ACTION_MARKER) :] if at >= 0 else s[-30:]
    quoted = re.match(r'\s*"([^"]*)"', tail)
    lowered = [c.lower() for c in admissible]
    if quoted and quoted.group(1).strip() in lowered:
        i = lowered.index(quoted.group(1).strip())
        return ParsedAction(i, True, "ok", admissible[i], admissible[i])
    for i, c in enumerate(lowered):
        if re.search(rf"(?<![a-z0-9]){re.escape(c)}(?![a-z0-9])", tail):
            return ParsedAction(i, True, "ok", admissible[i], admissible[i])
    raw = tail.strip().strip('"{} ').strip() or s
    return ParsedAction(-1, False, "no_match", raw, raw)


def action_start_index(token_texts: Sequence[str]) -> int:
    """Index of the response token where the last `"action":` begins; len(token_texts) if there is none.

    The learner's CoT/action split (learner/ppo.py scales the tokens before it by λ). Found from the decoded
    token strings (never from fixed ids, the original code's bug #17), so it works for any tokenizer, including
    markers split across tokens or glued to neighbouring characters. Case-sensitive and the LAST marker (spec §5),
    while `parse_action` lower-cases the text and reads after the first.
    """
    text = "".join(token_texts)
    pos = text.rfind(ACTION_MARKER)
    if pos < 0:
        return len(token_texts)
    end = 0
    for i, piece in enumerate(token_texts):
        end += len(piece)
        if end > pos:
            return i
    return len(token_texts)
