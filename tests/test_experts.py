"""envs/experts.py: the SFT experts, optimal play and noise, and the answers they write, which the parser
reads back as the action given. NumberLine first, then the card tasks."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from envs import resolve_task
from envs.arithmetic import MARKER
from envs.blackjack import BlackjackEnv
from envs.cards import Card
from envs.experts import (
    blackjack_expert,
    blackjack_response,
    close_call,
    ezpoints_expert,
    ezpoints_response,
    noisy_action,
    noisy_blackjack_action,
    noisy_ezpoints_action,
    noisy_numberline_action,
    noisy_points24_action,
    numberline_expert,
    numberline_response,
    points24_expert,
    points24_response,
)
from envs.ezpoints import ACTION_NAMES as EZPOINTS_ACTIONS
from envs.ezpoints import EZPointsEnv
from envs.parsing import parse_action
from envs.points24 import Points24Env
from envs.solvers import basic_strategy

NL = resolve_task("numberline").action_names
PAIRS = [(c, t) for c in range(6) for t in range(6) if c != t]


def test_numberline_expert_steps_toward_target():
    for c, t in PAIRS:
        expected = 1 if t > c else 0
        assert numberline_expert({"current": c, "target": t}) == expected


@pytest.mark.parametrize("cot", [True, False])
def test_numberline_response_parses_to_given_action(cot):
    rng = np.random.default_rng(0)
    for c, t in PAIRS:
        for a in (0, 1):
            text = numberline_response({"current": c, "target": t}, a, cot=cot)
            out = parse_action(text, NL, rng)
            assert (out.action, out.valid, out.reason) == (a, True, "ok"), text


def test_numberline_cot_response_is_json_with_correct_reading():
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


def test_numberline_action_only_response():
    assert numberline_response({"current": 3, "target": 1}, 0, cot=False) == ' {\n "action": "-" \n}'
    assert json.loads(numberline_response({"current": 3, "target": 1}, 1, cot=False)) == {"action": "+"}


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.5])
def test_noisy_numberline_action_flip_rate(noise):
    rng = np.random.default_rng(123)
    info = {"current": 1, "target": 4}  # expert says "+"
    draws = np.array([noisy_numberline_action(info, noise, rng) for _ in range(5000)])
    flip_rate = float((draws == 0).mean())
    assert abs(flip_rate - noise) < 0.03
    assert set(draws.tolist()) == {0, 1}


def test_noisy_numberline_action_extremes_and_direction():
    rng = np.random.default_rng(0)
    down = {"current": 4, "target": 2}  # expert says "-"
    assert all(noisy_numberline_action(down, 0.0, rng) == 0 for _ in range(200))
    assert all(noisy_numberline_action(down, 1.0, rng) == 1 for _ in range(200))
    a = [noisy_numberline_action(down, 0.3, np.random.default_rng(5)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same draw


# ---- the card tasks ----------------------------------------------------------------------------------
RESPONSES = {"ezpoints": ezpoints_response, "points24": points24_response, "blackjack": blackjack_response}


def run_episode(env, policy, seed):
    _, info = env.reset(seed=seed)
    rewards = []
    while True:
        _, r, term, trunc, info = env.step(policy(info))
        rewards.append(r)
        if term or trunc:
            return rewards


def test_noisy_action_rate_and_spread():
    rng = np.random.default_rng(0)
    draws = Counter(noisy_action(4, 13, 0.3, rng) for _ in range(13000))
    assert abs(1 - draws[4] / 13000 - 0.3) < 0.02  # noise is exactly the error rate
    others = [draws[a] for a in range(13) if a != 4]
    assert len(others) == 12 and min(others) > 200  # every other action, about uniformly
    assert all(noisy_action(1, 2, 1.0, rng) == 0 for _ in range(100))
    assert all(noisy_action(7, 17, 0.0, rng) == 7 for _ in range(100))


def test_formula_demonstrations_err_with_one_confuser_per_state():
    """A single wrong action per state (see envs/experts.py): "=" too early, "+" when "=" was right."""
    rng = np.random.default_rng(0)
    env = EZPointsEnv()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        best = ezpoints_expert(info)
        draws = Counter(noisy_ezpoints_action(info, 0.45, rng) for _ in range(400))
        assert set(draws) == {best, EZPOINTS_ACTIONS.index("=")}
        assert abs(draws[best] / 400 - 0.55) < 0.1
    solved = {"cards": [("3", "H"), ("4", "S")], "card_values": [3, 4], "formula": ["3", "*", "4"], "target": 12}
    assert {noisy_ezpoints_action(solved, 1.0, rng) for _ in range(5)} == {EZPOINTS_ACTIONS.index("+")}


def test_noisy_wrappers_are_reproducible_and_in_range():
    info_e = EZPointsEnv().reset(seed=1)[1]
    info_p = Points24Env().reset(seed=1)[1]
    info_b = BlackjackEnv().reset(seed=1)[1]
    for fn, info, n in [(noisy_ezpoints_action, info_e, 13), (noisy_points24_action, info_p, 17)]:
        a = [fn(info, 0.5, np.random.default_rng(3)) for _ in range(3)]
        assert len(set(a)) == 1 and 0 <= a[0] < n
    assert noisy_blackjack_action(info_b, 0.0, np.random.default_rng(0)) == blackjack_expert(info_b)


def test_blackjack_noise_spares_the_close_calls():
    """Hard 12-16 always get basic strategy; every other hand the other action at noise 1."""
    rng = np.random.default_rng(0)
    for total, usable, dealer in [(12, False, 2), (16, False, 10), (14, False, 1)]:
        info = {"player_sum": total, "usable_ace": usable, "dealer_card": dealer}
        assert close_call(info) and noisy_blackjack_action(info, 1.0, rng) == blackjack_expert(info)
    for total, usable, dealer in [(11, False, 10), (17, False, 10), (15, True, 6), (20, True, 9)]:
        info = {"player_sum": total, "usable_ace": usable, "dealer_card": dealer}
        assert not close_call(info) and noisy_blackjack_action(info, 1.0, rng) == 1 - blackjack_expert(info)


def _blackjack_success(act, deals: int = 4000) -> float:
    """Success of the policy `act(info, rng) -> action` over `deals` deals."""
    env, rng, wins = BlackjackEnv(render_mode=None), np.random.default_rng(0), 0
    for i in range(deals):
        _, info = env.reset(seed=i)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(act(info, rng))
            done = terminated or truncated
        wins += reward > 0
    return wins / deals


def test_close_calls_cost_little_success():
    """What the noise placement rests on: erring on the close calls costs a few times less than on the rest, which
    is where the SFT demonstrations' noise (noisy_blackjack_action at 0.45) puts it."""
    perfect = _blackjack_success(lambda info, rng: blackjack_expert(info))
    on_rest = perfect - _blackjack_success(lambda info, rng: noisy_blackjack_action(info, 0.45, rng))
    on_close = perfect - _blackjack_success(
        lambda info, rng: (
            noisy_action(blackjack_expert(info), 2, 0.45, rng) if close_call(info) else blackjack_expert(info)
        )
    )
    assert 0.08 < on_rest and on_close < on_rest / 4


def test_ezpoints_expert_wins_every_deal():
    env = EZPointsEnv()
    for seed in range(150):
        rewards = run_episode(env, ezpoints_expert, seed)
        assert rewards == [0.0, 0.0, 0.0, 10.0], seed


def test_points24_expert_wins_exactly_the_solvable_deals():
    env = Points24Env()
    for seed in range(60):
        _, info = env.reset(seed=seed)
        rewards = run_episode(env, points24_expert, seed)
        if info["solvable"]:
            assert rewards[-1] == 10.0 and sum(rewards) == 10.0, seed
        else:
            assert rewards == [-1.0], seed  # nothing to win: "=" at once


def test_expert_recovers_after_an_invalid_card():
    env = EZPointsEnv()
    env.reset(seed=0)
    env.cards = [Card(10, "H"), Card(2, "S")]
    env.step(4)  # "5": invalid, a marker is appended
    info, rewards = env._info(), []
    while True:
        _, r, term, trunc, info = env.step(ezpoints_expert(info))
        rewards.append(r)
        if term or trunc:
            break
    assert rewards[-1] == 10.0 and env.formula[0] == MARKER


def test_formula_expert_gives_up_when_the_formula_is_off_track():
    info = {"card_values": [10, 2], "formula": ["10", "*"], "cards": [("10", "H"), ("2", "S")]}
    assert ezpoints_expert(info) == resolve_task("ezpoints").action_names.index("=")


def test_blackjack_expert_is_basic_strategy_from_visible_cards():
    env = BlackjackEnv()
    for seed in range(50):
        _, info = env.reset(seed=seed)
        assert blackjack_expert(info) == basic_strategy(info["player_sum"], info["dealer_card"], info["usable_ace"])
        hidden = dict(info, dealer_hand=[info["dealer_hand"][0], ("K", "S")])
        assert blackjack_expert(hidden) == blackjack_expert(info)


# ---- responses ---------------------------------------------------------------------------------------


def sample_infos(task):
    env = {"ezpoints": EZPointsEnv, "points24": Points24Env, "blackjack": BlackjackEnv}[task]()
    infos = []
    for seed in range(4):
        _, info = env.reset(seed=seed)
        infos.append(info)
        if task != "blackjack":
            _, _, _, _, info = env.step(0)  # "1": usually an invalid card, so a marker
            infos.append(info)
    return infos


@pytest.mark.parametrize("task", ["ezpoints", "points24", "blackjack"])
@pytest.mark.parametrize("cot", [True, False])
def test_every_response_is_json_and_parses_to_its_action(task, cot):
    spec = resolve_task(task)
    names = spec.action_names
    for info in sample_infos(task):
        for action in range(len(names)):
            text = RESPONSES[task](info, action, cot=cot)
            assert json.loads(text)["action"] == names[action]
            out = spec.parse(text, names, np.random.default_rng(0))
            assert (out.action, out.valid) == (action, True), text


def test_ezpoints_cot_fields():
    info = {"cards": [("K", "H"), ("2", "S")], "card_values": [10, 2], "formula": ["10", "+"], "target": 12}
    obj = json.loads(ezpoints_response(info, 1))
    assert list(obj) == ["cards", "current formula", "thoughts", "action"]
    assert obj["cards"] == [10, 2] and obj["current formula"] == "10+" and obj["action"] == "2"
    assert obj["thoughts"] == (
        "The cards are K and 2. K counts as 10. The current formula '10+' is not complete. "
        "It can be completed to '10+2', which equals 12. Next: '2'."
    )
    done = dict(info, formula=["10", "+", "2"])
    assert "so it is complete" in json.loads(ezpoints_response(done, 12))["thoughts"]
    assert ezpoints_response(done, 12, cot=False) == ' {\n "action": "=" \n}'


def test_points24_thoughts_for_unsolvable_and_markers():
    info = {"cards": [("A", "S")] * 4, "card_values": [1, 1, 1, 1], "formula": [], "target": 24}
    obj = json.loads(points24_response(info, 16))
    assert obj["thoughts"].endswith("No formula that extends it can reach 24, so the game should end.")
    assert "The current formula is empty." in obj["thoughts"]
    info = {"cards": [("8", "S"), ("3", "H"), ("8", "D"), ("3", "C")], "card_values": [8, 3, 8, 3]}
    obj = json.loads(points24_response(dict(info, formula=["8", MARKER, "/"]), 14))
    assert obj["current formula"] == "8 /" and "'8/(3-8/3)'" in obj["thoughts"] and obj["action"] == "("


def test_blackjack_thoughts_describe_both_totals():
    env = BlackjackEnv()
    env.reset(seed=0)
    env.player, env.dealer = [Card(1, "S"), Card(6, "H")], [Card(13, "D"), Card(9, "C")]
    obj = json.loads(blackjack_response(env._info(), 1))
    assert obj == {
        "thoughts": "My cards are A and 6, so my total points are 17 with a usable ace. The dealer shows K, so "
        "the dealer's total points are 10 from the visible card. A hit cannot bust me, because the ace can "
        "count as 1. Against 10 I stand on a soft 19 or more, so I hit.",
        "action": "hit",
    }
    env.player = [Card(10, "S"), Card(5, "H")]
    thoughts = json.loads(blackjack_response(env._info(), 0))["thoughts"]  # the action deviates from the plan
    assert "total points are 15." in thoughts and "worth more than 6. " in thoughts
    assert thoughts.endswith("Against 10 I stand on a hard 17 or more, so I hit.")
    assert "9" not in thoughts  # the hole card is never mentioned
    assert blackjack_response(env._info(), 0, cot=False) == ' {\n "action": "stand" \n}'


@pytest.mark.parametrize("soft", [False, True])
def test_blackjack_plan_is_basic_strategy_in_every_state(soft):
    """The thoughts' threshold and choice are basic strategy's for every total and up-card (envs/solvers.py)."""
    for dealer in range(1, 11):
        for total in range(12 if soft else 4, 22):
            info = {"player_hand": [("A" if soft else "9", "S"), ("5", "H")], "player_sum": total}
            info |= {"dealer_card": dealer, "usable_ace": soft, "dealer_hand": [("9", "D"), ("2", "C")]}
            thoughts = json.loads(blackjack_response(info, 0))["thoughts"]
            plan = re.search(r"Against (\d+) I stand on a (soft|hard) (\d+) or more, so I (hit|stand)\.$", thoughts)
            assert plan is not None, thoughts
            up, kind, stand_from, choice = plan.groups()
            assert int(up) == (11 if dealer == 1 else dealer) and kind == ("soft" if soft else "hard")
            assert choice == ("stand" if basic_strategy(total, dealer, soft) == 0 else "hit")
            assert (total >= int(stand_from)) == (choice == "stand")
