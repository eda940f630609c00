"""envs/prompts.py: the paper's prompts (spec §3, §2.1), CoT and action-only, for every task, exactly as the paper's.

NumberLine, ALFWorld and the llava_v1 chat template first, then the card tasks for every formula state.
"""

from __future__ import annotations

import pytest

from envs.arithmetic import MARKER
from envs.prompts import (
    BLACKJACK_ACTION_ONLY,
    BLACKJACK_COT,
    NUMBERLINE_ACTION_ONLY,
    NUMBERLINE_COT,
    chat_prompt,
    formula_text,
    task_prompt,
)
from envs.task import TaskError

# Copied verbatim from spec §3; there `\n` stands for a newline, so it is replaced below.
SPEC_NUMBERLINE_COT = r"""You are playing a game called number line. You will see a target number and a current number in the image. And your goal is to move the current number closer to the target by choosing either adding or subtracting one to the current number. Your response should be a valid json file in the following format: \n{\n "current number": "x", \n"target number": "x", \n"thoughts": "{first read out the current and target number, then think carefully about which action to choose}", \n"action": "-" or "+" \n}""".replace(
    r"\n", "\n"
)
SPEC_FORMAT_PREFIX = SPEC_NUMBERLINE_COT[: SPEC_NUMBERLINE_COT.index("format: ") + len("format: ")]
SPEC_NUMBERLINE_ACTION_ONLY = SPEC_FORMAT_PREFIX + r"""\n{\n "action": "-" or "+" \n}""".replace(r"\n", "\n")

# spec §2.1, llava_v1 template
SPEC_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

PAIRS = [(c, t) for c in range(6) for t in range(6) if c != t]


def test_numberline_cot_prompt_matches_spec():
    assert NUMBERLINE_COT == SPEC_NUMBERLINE_COT
    assert task_prompt("numberline", {"current": 1, "target": 4}) == SPEC_NUMBERLINE_COT
    assert task_prompt("numberline", {"current": 1, "target": 4}, cot=True) == SPEC_NUMBERLINE_COT
    assert task_prompt("numberline", {"current": 1, "target": 3}) == NUMBERLINE_COT


def test_numberline_action_only_prompt_matches_spec():
    assert NUMBERLINE_ACTION_ONLY == SPEC_NUMBERLINE_ACTION_ONLY
    assert task_prompt("numberline", {"current": 0, "target": 2}, cot=False) == SPEC_NUMBERLINE_ACTION_ONLY
    assert task_prompt("numberline", {}, cot=False) == NUMBERLINE_ACTION_ONLY  # no state needed either


def test_numberline_prompt_spot_checks():
    # a few hand-checked features, so the test fails even if the spec copy above were edited the same way
    assert SPEC_NUMBERLINE_COT.count("\n") == 6
    assert SPEC_NUMBERLINE_ACTION_ONLY.endswith('format: \n{\n "action": "-" or "+" \n}')
    assert "\\" not in SPEC_NUMBERLINE_COT
    assert len(SPEC_NUMBERLINE_COT) == len(NUMBERLINE_COT)


def test_prompt_does_not_leak_state():
    # the policy must read the numbers from the image: the prompt is the same for every state
    prompts = {task_prompt("numberline", {"current": c, "target": t}) for c, t in PAIRS}
    assert prompts == {SPEC_NUMBERLINE_COT}


def test_unknown_task_raises():
    with pytest.raises(TaskError, match="unknown task 'no-such-task'"):
        task_prompt("no-such-task", {})


def test_chat_prompt_is_llava_v1():
    q = "What is 2 + 2?"
    assert chat_prompt(q) == SPEC_SYSTEM + " USER: <image>\nWhat is 2 + 2? ASSISTANT:"
    full = chat_prompt(SPEC_NUMBERLINE_COT)
    assert full.startswith("A chat between a curious human")
    assert full.count("<image>") == 1
    assert "USER: <image>\nYou are playing a game called number line." in full
    assert full.endswith('"action": "-" or "+" \n} ASSISTANT:')


def test_alfworld_prompt_matches_spec():
    info = {
        "feedback": "You arrive at cabinet 1. The cabinet 1 is closed.",
        "task": "put a clean mug in desk",
        "admissible_commands": ["go to cabinet 2", "open cabinet 1"],
    }
    expected = (
        "Your are an expert in the ALFRED Embodied Environment. You are also given the following text description "
        "of the current scene: You arrive at cabinet 1. The cabinet 1 is closed.. Your task is to put a clean mug in "
        "desk. Your admissible actions of the current situation are: ['go to cabinet 2'\n 'open cabinet 1']. Your "
        'response should be a valid json file in the following format: \n\\{\n"thoughts": "{first describe what do '
        "you see in the image using the text description, then carefully think about which action to complete the "
        'task. }", \n"action": "{an admissible action}"\n\\}'
    )
    assert task_prompt("alfworld", info, cot=True) == expected
    action_only = task_prompt("alfworld", info, cot=False)
    assert '"thoughts"' not in action_only and action_only.endswith('\\{\n"action": "{an admissible action}"\n\\}')


# ---- the card tasks ----------------------------------------------------------------------------------
# Copied verbatim from spec §3. There `\n` stands for a newline (replaced below), `\{` and `\}` are a real
# backslash and brace (kept), and `{F}` is the formula ''.join(tokens).
_BLACKJACK_RAW = r"""You are a blackjack player. You are observing the current game state, you can choose between ['stand', 'hit']. Your response should be a valid json file in the following format: \n{\n "thoughts": "{first describe your total points and the dealer's total points then think about which action to choose}", \n"action": "stand" or "hit" \n}"""
_EZPOINTS_RAW = r"""You are an expert card game player. You are observing two cards in the image. You are observing the current formula: {F}. You can choose between ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '*', '=']. The number or operator you choose will be appended to the current formula. Note that 'J', 'Q', and 'K' count as '10'. Your goal is to output a formula that evaluates to 12, and each number can only be used once. Your response should be a valid json file in the following format: \{\n "cards": [x, y], \n"current formula": {F}, \n"thoughts": {First check whether the current formula 'z' is complete. If the current formula 'z' is complete, output '='. Otherwise consider which number or operator should be appended to the current formula to make it equal 12.} \n"action": "{number}" or "{operator}" \n \}"""
_POINTS24_RAW = r"""You are an expert 24 points card game player. You are observing thee four cards in the image. You are observing the current formula: {F}. You can choose between ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '-', '*', '/', '(', ')', '=']. The number or operator you choose will be appended to the current formula. Note that 'J', 'Q', and 'K' count as '10'. Your goal is to output a formula that evaluates to 24, and each number can only be used once. Your response should be a valid json file in the following format: \{\n "cards": [x, y, z, w], \n"current formula": {F}, \n"thoughts": {First check whether the current formula equals 24. If the current formula equals 24, output '='. Otherwise consider which number or operator should be appended to the current formula to make it equal 24.} \n"action": "{number}" or "{operator}" \n \}"""
SPEC_BLACKJACK_COT = _BLACKJACK_RAW.replace(r"\n", "\n")
SPEC_EZPOINTS_COT = _EZPOINTS_RAW.replace(r"\n", "\n")
SPEC_POINTS24_COT = _POINTS24_RAW.replace(r"\n", "\n")
# The action-only tails, spec §3 "Action-only variants".
SPEC_BLACKJACK_TAIL = r"""... format: \n{\n "action": "stand" or "hit" \n}""".replace(r"\n", "\n")
SPEC_FORMULA_TAIL = r"""... format: \{\n"action": "{number}" or "{operator}" \n \}""".replace(r"\n", "\n")

FORMULAS = [
    [],
    ["2"],
    ["10", "+", "2"],
    [MARKER, "10", "*"],  # an invalid card's marker shows as a space
    ["8", "/", "(", "3", "-", "8", "/", "3", ")"],
    ["(", "(", "10", "-", "4", ")", "*", "4", MARKER, ")"],
]


def spec_prompt(spec_cot: str, tail: str, formula: list[str], cot: bool) -> str:
    text = spec_cot.replace("{F}", "".join(formula))
    if cot:
        return text
    cut = text.index("format: ") + len("format: ")
    return text[:cut] + tail[len("... format: ") :]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("cot", [True, False])
def test_ezpoints_prompt_matches_spec(formula, cot):
    expected = spec_prompt(SPEC_EZPOINTS_COT, SPEC_FORMULA_TAIL, formula, cot)
    assert task_prompt("ezpoints", {"formula": formula}, cot=cot) == expected


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("cot", [True, False])
def test_points24_prompt_matches_spec(formula, cot):
    expected = spec_prompt(SPEC_POINTS24_COT, SPEC_FORMULA_TAIL, formula, cot)
    assert task_prompt("points24", {"formula": formula}, cot=cot) == expected


@pytest.mark.parametrize("cot", [True, False])
def test_blackjack_prompt_matches_spec_and_is_static(cot):
    expected = SPEC_BLACKJACK_COT if cot else spec_prompt(SPEC_BLACKJACK_COT, SPEC_BLACKJACK_TAIL, [], False)
    assert (BLACKJACK_COT if cot else BLACKJACK_ACTION_ONLY) == expected
    infos = [{}, {"player_sum": 15, "dealer_card": 10, "usable_ace": False}, {"player_sum": 20, "usable_ace": True}]
    assert {task_prompt("blackjack", info, cot=cot) for info in infos} == {expected}


def test_card_prompt_spot_checks():
    # hand-checked features, so the tests fail even if the spec copies above were edited the same way
    ezp = task_prompt("ezpoints", {"formula": ["2", "*"]})
    assert ezp.count("\\") == 2 and "format: \\{\n" in ezp and ezp.endswith('"{operator}" \n \\}')
    assert ezp.count("current formula: 2*.") == 1 and '"current formula": 2*, \n' in ezp
    p24 = task_prompt("points24", {"formula": []}, cot=False)
    assert "observing thee four cards" in p24 and "current formula: ." in p24 and p24.count("\\") == 2
    assert p24.endswith('format: \\{\n"action": "{number}" or "{operator}" \n \\}')
    assert "\\" not in BLACKJACK_COT and BLACKJACK_COT.count("\n") == 4
    assert BLACKJACK_ACTION_ONLY.endswith('format: \n{\n "action": "stand" or "hit" \n}')


def test_missing_formula_is_empty():
    # before a deal the paper's try/except gave ''
    expected = spec_prompt(SPEC_EZPOINTS_COT, SPEC_FORMULA_TAIL, [], True)
    assert task_prompt("ezpoints", {}) == task_prompt("ezpoints", None) == expected
    assert formula_text(None) == formula_text({}) == ""
    assert formula_text({"formula": ["10", MARKER, "+"]}) == "10 +"


def test_chat_wrapper_for_card_prompts():
    full = chat_prompt(task_prompt("points24", {"formula": ["8"]}))
    assert full.count("<image>") == 1 and "USER: <image>\nYou are an expert 24 points" in full
    assert full.endswith('"{operator}" \n \\} ASSISTANT:')
