"""The card tasks' prompts (spec §3) for every formula state, CoT and action-only, exactly as the paper's."""

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

# Copied verbatim from spec §3. There `\n` stands for a newline (replaced below), `\{` and `\}` are a real
# backslash and brace (kept), and `{F}` is the formula ''.join(tokens).
_BLACKJACK_RAW = r"""You are a blackjack player. You are observing the current game state, you can choose between ['stand', 'hit']. Your response should be a valid json file in the following format: \n{\n "thoughts": "{first describe your total points and the dealer's total points then think about which action to choose}", \n"action": "stand" or "hit" \n}"""  # noqa: E501
_EZPOINTS_RAW = r"""You are an expert card game player. You are observing two cards in the image. You are observing the current formula: {F}. You can choose between ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '*', '=']. The number or operator you choose will be appended to the current formula. Note that 'J', 'Q', and 'K' count as '10'. Your goal is to output a formula that evaluates to 12, and each number can only be used once. Your response should be a valid json file in the following format: \{\n "cards": [x, y], \n"current formula": {F}, \n"thoughts": {First check whether the current formula 'z' is complete. If the current formula 'z' is complete, output '='. Otherwise consider which number or operator should be appended to the current formula to make it equal 12.} \n"action": "{number}" or "{operator}" \n \}"""  # noqa: E501
_POINTS24_RAW = r"""You are an expert 24 points card game player. You are observing thee four cards in the image. You are observing the current formula: {F}. You can choose between ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '+', '-', '*', '/', '(', ')', '=']. The number or operator you choose will be appended to the current formula. Note that 'J', 'Q', and 'K' count as '10'. Your goal is to output a formula that evaluates to 24, and each number can only be used once. Your response should be a valid json file in the following format: \{\n "cards": [x, y, z, w], \n"current formula": {F}, \n"thoughts": {First check whether the current formula equals 24. If the current formula equals 24, output '='. Otherwise consider which number or operator should be appended to the current formula to make it equal 24.} \n"action": "{number}" or "{operator}" \n \}"""  # noqa: E501
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


def test_prompt_spot_checks():
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


def test_numberline_prompt_is_unchanged():
    assert task_prompt("numberline", {"current": 1, "target": 3}) == NUMBERLINE_COT
    assert task_prompt("numberline", {}, cot=False) == NUMBERLINE_ACTION_ONLY


def test_unknown_task_still_raises():
    with pytest.raises(KeyError):
        task_prompt("no-such-task", {})


def test_chat_wrapper_for_card_prompts():
    full = chat_prompt(task_prompt("points24", {"formula": ["8"]}))
    assert full.count("<image>") == 1 and "USER: <image>\nYou are an expert 24 points" in full
    assert full.endswith('"{operator}" \n \\} ASSISTANT:')
