"""ShapeSort as a Task: `python -m cluster.train --env.task examples.shapesort.task:TASK` (docs/tasks.md).

Everything the framework needs is in `TASK` below: the env, the question, a JSON parser with its fallback,
the success rule (every item in its bin), a noisy expert for the SFT warm start, perception labels for the
embedded VLM's vision pre-training, and the task's config defaults.
"""

from __future__ import annotations

import json
import re

import numpy as np

from envs.parsing import ParsedAction
from envs.task import Expert, Perception, Task, TaskDefaults
from examples.shapesort.env import BIN_OF, BINS, COLORS, ITEMS, SHAPES, ShapeSortEnv

INTRO = (
    "You are playing a sorting game. The image shows the item to sort at the top and three bins below it: left, "
    "middle and right. Red items go in the left bin, green items in the middle bin and blue items in the right "
    "bin, whatever their shape. Put the item in its bin. Your response should be a valid json file in the "
    "following format: \n{\n"
)
COT_FIELDS = (
    ' "item": "colour shape", \n"thoughts": "{first describe the item, then say which bin its colour goes in}", \n'
)
ACTION_FIELD = '"action": "left" or "middle" or "right" \n}'


def prompt(info: dict, cot: bool) -> str:
    """The question: the same text every step (the item is only in the image)."""
    return INTRO + (COT_FIELDS if cot else "") + ACTION_FIELD


ACTION_RE = re.compile(r'"action"\s*:\s*"([a-z]+)"')


def parse(text: str, actions, rng: np.random.Generator) -> ParsedAction:
    """The last `"action": "<word>"` of the answer, if the word is an action; else a random action (invalid)."""
    found = ACTION_RE.findall(text.lower()) if isinstance(text, str) else []
    if found and found[-1] in actions:
        return ParsedAction(list(actions).index(found[-1]), True, "ok")
    return ParsedAction(int(rng.integers(len(actions))), False, "no_match" if not found else "not_an_action")


def all_sorted(rewards, terminated: bool, info: dict) -> bool:
    """Success: the game ended with every item in its bin (the return alone would count 3 of 4 as a win)."""
    return bool(terminated) and len(rewards) == ITEMS and min(rewards) > 0


def best_bin(info: dict) -> int:
    return BIN_OF[info["color"]]


def noisy_bin(info: dict, noise: float, rng: np.random.Generator) -> int:
    """The right bin, or with probability `noise` the one wrong bin of this colour (the next one over): one
    confuser per state, as the paper tasks' experts (noise spread over both wrong bins would vanish under the
    T = 0.2 sampling)."""
    best = best_bin(info)
    return (best + 1) % len(BINS) if rng.random() < noise else best


def response(info: dict, action: int, cot: bool) -> str:
    """The answer: the item read from the image and the rule in the thoughts, then `action` (maybe not the rule's)."""
    name = BINS[action]
    if not cot:
        return f' {{\n "action": "{name}" \n}}'
    item = f"{info['color']} {info['shape']}"
    thoughts = f"The item is a {item}. {info['color'].capitalize()} items go in the {BINS[best_bin(info)]} bin."
    return f' {{\n "item": "{item}", \n"thoughts": {json.dumps(thoughts)}, \n"action": "{name}" \n}}'


def labels(info: dict) -> list[int]:
    """What the image shows: the item's colour and shape, and how many items wait after it."""
    return [COLORS.index(info["color"]), SHAPES.index(info["shape"]), info["left"]]


TASK = Task(
    name="shapesort",
    make_env=ShapeSortEnv,
    prompt=prompt,
    parse=parse,
    action_names=BINS,
    success=all_sorted,
    expert=Expert(act=noisy_bin, response=response),
    perception=Perception(labels=labels, classes=(len(COLORS), len(SHAPES), ITEMS)),
    defaults=TaskDefaults(max_new_tokens=80, steps_per_update=256, cot_coef=0.5, config={"sft.samples": 3000}),
)
