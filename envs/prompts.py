"""The paper's prompts (spec §3), exactly as its code renders them, and the llava_v1 chat wrapper.

Each task has a chain-of-thought prompt and an action-only variant (the "w/o CoT" ablation). The prompt is a
pure function of the env's info, so the rollout actor can store the exact prompt of every step. Each built-in
Task (envs/builtin.py, envs/alfworld/task.py) takes its `prompt` hook from here.
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


BLACKJACK_INTRO = (
    "You are a blackjack player. You are observing the current game state, you can choose between "
    "['stand', 'hit']. Your response should be a valid json file in the following format: "
)
BLACKJACK_COT = (
    BLACKJACK_INTRO + '\n{\n "thoughts": "{first describe your total points and the dealer\'s total points then '
    'think about which action to choose}", \n"action": "stand" or "hit" \n}'
)
BLACKJACK_ACTION_ONLY = BLACKJACK_INTRO + '\n{\n "action": "stand" or "hit" \n}'

# EZPoints and Points24 show the formula F = ''.join(tokens) twice. Their format block opens with "\{" and
# closes with "\}": the paper's Python source wrote "\{", which keeps the backslash (spec §3).
EZPOINTS_INTRO = "You are an expert card game player. You are observing two cards in the image. "
EZPOINTS_CHOICES = "['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '*', '=']"
EZPOINTS_COT_FIELDS = (
    ' "cards": [x, y], \n"current formula": {F}, \n"thoughts": {First check whether the current formula \'z\' '
    "is complete. If the current formula 'z' is complete, output '='. Otherwise consider which number or "
    "operator should be appended to the current formula to make it equal 12.} \n"
)
POINTS24_INTRO = "You are an expert 24 points card game player. You are observing thee four cards in the image. "
POINTS24_CHOICES = "['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '-', '*', '/', '(', ')', '=']"
POINTS24_COT_FIELDS = (
    ' "cards": [x, y, z, w], \n"current formula": {F}, \n"thoughts": {First check whether the current formula '
    "equals 24. If the current formula equals 24, output '='. Otherwise consider which number or operator "
    "should be appended to the current formula to make it equal 24.} \n"
)
FORMULA_ACTION = '"action": "{number}" or "{operator}" \n \\}'


def formula_prompt(intro: str, choices: str, target: int, cot_fields: str, formula: str, cot: bool) -> str:
    """EZPoints/Points24 prompt for the current formula text; `{F}` in `cot_fields` becomes the formula."""
    qs = (
        f"{intro}You are observing the current formula: {formula}. You can choose between {choices}. "
        "The number or operator you choose will be appended to the current formula. "
        "Note that 'J', 'Q', and 'K' count as '10'. "
        f"Your goal is to output a formula that evaluates to {target}, and each number can only be used once. "
        "Your response should be a valid json file in the following format: \\{\n"
    )
    if cot:
        # split/join rather than str.format: the fields contain literal braces
        qs += formula.join(cot_fields.split("{F}"))
    return qs + FORMULA_ACTION


# ALFWorld (spec §3): the scene text, the task and the admissible commands, each single-quoted and joined
# with "\n " as the paper's code printed its numpy array of commands. The format block opens with "\{" and
# closes with "\}" as written in the paper's source (the backslash is kept, as for EZPoints/Points24).
ALFWORLD_INTRO = (
    "Your are an expert in the ALFRED Embodied Environment. You are also given the following text description of "
    "the current scene: {obs}. Your task is to {task}. Your admissible actions of the current situation are: "
    "[{commands}]. Your response should be a valid json file in the following format: \n\\{{\n"
)
ALFWORLD_COT = (
    '"thoughts": "{{first describe what do you see in the image using the text description, then carefully think '
    'about which action to complete the task. }}", \n'
)
ALFWORLD_ACTION = '"action": "{{an admissible action}}"\n\\}}'


def alfworld_prompt(info: dict, cot: bool = True) -> str:
    """The paper's ALFWorld question for the env's latest info (feedback, task, admissible commands)."""
    commands = "\n ".join(f"'{c}'" for c in info.get("admissible_commands", ()))
    head = ALFWORLD_INTRO.format(obs=info.get("feedback", ""), task=info.get("task", ""), commands=commands)
    return head + (ALFWORLD_COT.format() if cot else "") + ALFWORLD_ACTION.format()


def formula_text(info: dict | None) -> str:
    """The paper's F: the tokens joined with nothing (invalid-card markers show as spaces); '' before a deal."""
    return "".join(str(token) for token in (info or {}).get("formula", ()))


def numberline_prompt(info: dict, cot: bool = True) -> str:
    return NUMBERLINE_COT if cot else NUMBERLINE_ACTION_ONLY


def blackjack_prompt(info: dict, cot: bool = True) -> str:
    return BLACKJACK_COT if cot else BLACKJACK_ACTION_ONLY


def ezpoints_prompt(info: dict, cot: bool = True) -> str:
    return formula_prompt(EZPOINTS_INTRO, EZPOINTS_CHOICES, 12, EZPOINTS_COT_FIELDS, formula_text(info), cot)


def points24_prompt(info: dict, cot: bool = True) -> str:
    return formula_prompt(POINTS24_INTRO, POINTS24_CHOICES, 24, POINTS24_COT_FIELDS, formula_text(info), cot)


def task_prompt(task, info: dict, cot: bool = True) -> str:
    """The question text `qs` of `task` (a Task, or a name/reference envs/registry.py resolves) for `info`."""
    from envs.registry import resolve_task

    return resolve_task(task).prompt(info, cot)


def chat_prompt(question: str) -> str:
    """llava_v1 conversation template with the image placeholder first (spec §2.1)."""
    return f"{SYSTEM} USER: {IMAGE_PLACEHOLDER}\n{question} ASSISTANT:"
