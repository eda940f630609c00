"""Prompts (spec §3, §2.1) and the SFT experts that answer them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.experts import noisy_numberline_action, numberline_expert, numberline_response
from envs.parsing import parse_action
from envs.prompts import NUMBERLINE_ACTION_ONLY, NUMBERLINE_COT, chat_prompt, task_prompt

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

NL = ("-", "+")
PAIRS = [(c, t) for c in range(6) for t in range(6) if c != t]


def test_numberline_cot_prompt_matches_spec():
    assert NUMBERLINE_COT == SPEC_NUMBERLINE_COT
    assert task_prompt("numberline", {"current": 1, "target": 4}) == SPEC_NUMBERLINE_COT
    assert task_prompt("numberline", {"current": 1, "target": 4}, cot=True) == SPEC_NUMBERLINE_COT


def test_numberline_action_only_prompt_matches_spec():
    assert NUMBERLINE_ACTION_ONLY == SPEC_NUMBERLINE_ACTION_ONLY
    assert task_prompt("numberline", {"current": 0, "target": 2}, cot=False) == SPEC_NUMBERLINE_ACTION_ONLY


def test_prompt_spot_checks():
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
    with pytest.raises(KeyError):
        task_prompt("no-such-task", {})


def test_chat_prompt_is_llava_v1():
    q = "What is 2 + 2?"
    assert chat_prompt(q) == SPEC_SYSTEM + " USER: <image>\nWhat is 2 + 2? ASSISTANT:"
    full = chat_prompt(SPEC_NUMBERLINE_COT)
    assert full.startswith("A chat between a curious human")
    assert full.count("<image>") == 1
    assert "USER: <image>\nYou are playing a game called number line." in full
    assert full.endswith('"action": "-" or "+" \n} ASSISTANT:')


def test_expert_steps_toward_target():
    for c, t in PAIRS:
        expected = 1 if t > c else 0
        assert numberline_expert({"current": c, "target": t}) == expected


@pytest.mark.parametrize("cot", [True, False])
def test_response_parses_to_given_action(cot):
    rng = np.random.default_rng(0)
    for c, t in PAIRS:
        for a in (0, 1):
            text = numberline_response({"current": c, "target": t}, a, cot=cot)
            out = parse_action(text, NL, rng)
            assert (out.action, out.valid, out.reason) == (a, True, "ok"), text


def test_cot_response_is_json_with_correct_reading():
    text = numberline_response({"current": 2, "target": 5}, 1, cot=True)
    obj = json.loads(text)
    assert obj == {
        "current number": "2",
        "target number": "5",
        "thoughts": "The current number is 2 and the target number is 5. 2 is smaller than 5.",
        "action": "+",
    }
    obj = json.loads(numberline_response({"current": 4, "target": 0}, 1, cot=True))
    assert obj["thoughts"] == "The current number is 4 and the target number is 0. 4 is larger than 0."
    assert obj["action"] == "+"  # the action given, even if it is the wrong one


def test_action_only_response():
    assert numberline_response({"current": 3, "target": 1}, 0, cot=False) == ' {\n "action": "-" \n}'
    assert json.loads(numberline_response({"current": 3, "target": 1}, 1, cot=False)) == {"action": "+"}


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.5])
def test_noisy_action_flip_rate(noise):
    rng = np.random.default_rng(123)
    info = {"current": 1, "target": 4}  # expert says "+"
    draws = np.array([noisy_numberline_action(info, noise, rng) for _ in range(5000)])
    flip_rate = float((draws == 0).mean())
    assert abs(flip_rate - noise) < 0.03
    assert set(draws.tolist()) == {0, 1}


def test_noisy_action_extremes_and_direction():
    rng = np.random.default_rng(0)
    down = {"current": 4, "target": 2}  # expert says "-"
    assert all(noisy_numberline_action(down, 0.0, rng) == 0 for _ in range(200))
    assert all(noisy_numberline_action(down, 1.0, rng) == 1 for _ in range(200))
    a = [noisy_numberline_action(down, 0.3, np.random.default_rng(5)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw


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
