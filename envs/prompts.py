"""The paper's prompts (spec §3), exactly as its code renders them, and the llava_v1 chat wrapper.

Each task has a chain-of-thought prompt and an action-only variant (the "w/o CoT" ablation). The prompt is a
pure function of the env's info, so the rollout actor can store the exact prompt of every step.
"""

from __future__ import annotations

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
IMAGE_PLACEHOLDER = "<image>"

NUMBERLINE_INTRO = (
    "You are playing a game called number line. You will see a target number and a current number in the image. "
    "And your goal is to move the current number closer to the target by choosing either adding or subtracting "
    "one to the current number. Your response should be a valid json file in the following format: "
)
NUMBERLINE_COT = (
    NUMBERLINE_INTRO + '\n{\n "current number": "x", \n"target number": "x", \n"thoughts": "{first read out the '
    'current and target number, then think carefully about which action to choose}", \n"action": "-" or "+" \n}'
)
NUMBERLINE_ACTION_ONLY = NUMBERLINE_INTRO + '\n{\n "action": "-" or "+" \n}'


def task_prompt(task: str, info: dict, cot: bool = True) -> str:
    """The paper's question text `qs` for `task` given the env's latest info."""
    if task == "numberline":
        return NUMBERLINE_COT if cot else NUMBERLINE_ACTION_ONLY
    raise KeyError(f"no prompt for task {task!r}")


def chat_prompt(question: str) -> str:
    """llava_v1 conversation template with the image placeholder first (spec §2.1)."""
    return f"{SYSTEM} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:"
