"""Experts that write SFT demonstrations: a correct reading of the image, then an action from a noisy expert.

The SFT warm start must teach the response format and perception but leave room for RL (the paper's SFT
NumberLine start is 24.8 %). Our NumberLine demonstrations always read both numbers right and state the
comparison, but the action is the expert's only with probability 1 - `noise`; otherwise it is the other
action. Because the noise is independent of the state, the SFT model learns p(correct | state) ~ 1 - noise
and the paper's sampling temperature 0.2 sharpens that, so SFT success lands well below 1 and RL must
push the action distribution the rest of the way (numbers on issue 2 and in the README).
"""

from __future__ import annotations

import json

import numpy as np


def numberline_expert(info: dict) -> int:
    """0 = "-", 1 = "+": step toward the target."""
    return 1 if info["current"] < info["target"] else 0


def numberline_response(info: dict, action: int, cot: bool = True) -> str:
    """The JSON answer in the paper's format; `thoughts` reads the image and compares, the action follows."""
    symbol = "-+"[action]
    if not cot:
        return f' {{\n "action": "{symbol}" \n}}'
    c, t = info["current"], info["target"]
    relation = "smaller than" if c < t else "larger than"
    thoughts = f"The current number is {c} and the target number is {t}. {c} is {relation} {t}."
    return (
        f' {{\n "current number": "{c}", \n"target number": "{t}", \n"thoughts": {json.dumps(thoughts)}, '
        f'\n"action": "{symbol}" \n}}'
    )


def noisy_numberline_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    best = numberline_expert(info)
    return 1 - best if rng.random() < noise else best
