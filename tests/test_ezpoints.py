"""EZPoints env (spec §8.3, §14): gymnasium API, seeding, the deal, every reward rule and the picture."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env, resolve_task
from envs.arithmetic import MARKER
from envs.builtin import ten_rule_parser
from envs.cards import TABLE_GREEN, Card
from envs.ezpoints import ACTION_NAMES, MAX_LEN, EZPointsEnv

A = {name: i for i, name in enumerate(ACTION_NAMES)}


def make(*cards: tuple[int, str], formula=()) -> EZPointsEnv:
    """An env reset once, then forced to hold `cards` ((rank, suit) pairs) and `formula`."""
    env = EZPointsEnv()
    env.reset(seed=0)
    env.cards = [Card(rank, suit) for rank, suit in cards]
    env.formula = list(formula)
    return env


def play(env: EZPointsEnv, *names: str):
    """Step through action names; returns the list of (reward, terminated, truncated, info)."""
    out = []
    for name in names:
        _, r, term, trunc, info = env.step(A[name])
        out.append((r, term, trunc, info))
    return out


def test_check_env_passes():
    check_env(EZPointsEnv().unwrapped, skip_render_check=True)


def test_spaces_and_registry():
    env = EZPointsEnv()
    assert env.action_space.n == 13 and ACTION_NAMES[9] == "10" and ACTION_NAMES[10:] == ("+", "*", "=")
    assert env.observation_space.shape == (300, 300, 3) and env.observation_space.dtype == np.uint8
    assert resolve_task("ezpoints").action_names == ACTION_NAMES
    assert resolve_task("ezpoints").parse is ten_rule_parser
    assert isinstance(make_env("ezpoints"), EZPointsEnv)


def test_same_seed_same_rollout(assert_same_seed_same_rollout):
    assert_same_seed_same_rollout(EZPointsEnv, 7, [9, 10, 1, 12, 3, 3, 3, 3, 3, 3, 3, 12, 0, 11])
    deals = {tuple(EZPointsEnv().reset(seed=s)[1]["cards"]) for s in range(40)}
    assert len(deals) > 20


def test_deal_rule_over_many_seeds():
    env = EZPointsEnv()
    kinds, orders, ranks = Counter(), Counter(), Counter()
    for seed in range(1500):
        _, info = env.reset(seed=seed)
        a, b = info["card_values"]
        ra, rb = (env.cards[0].rank, env.cards[1].rank)
        assert info["card_values"] == [min(ra, 10), min(rb, 10)]
        assert a + b == 12 or a * b == 12
        assert info["solvable"] is True and info["formula"] == [] and info["target"] == 12
        # the dealt second card is never a face card and never an ace
        assert min(ra, rb) <= 10 and 1 not in (ra, rb)
        kinds["product" if a * b == 12 and a + b != 12 else "sum"] += 1
        orders[a <= b] += 1
        ranks.update([ra, rb])
    assert kinds["product"] > 100 and kinds["sum"] > 700
    assert 0.4 < orders[True] / 1500 < 0.6  # swapped with probability 0.5
    assert {11, 12, 13} <= set(ranks)  # face cards appear (and count 10)


@pytest.mark.parametrize(
    "cards, tokens",
    [
        ([(10, "H"), (2, "S")], ["10", "+", "2"]),
        ([(13, "C"), (2, "D")], ["2", "+", "10"]),  # K counts 10
        ([(2, "S"), (6, "H")], ["6", "*", "2"]),
        ([(6, "S"), (6, "H")], ["6", "+", "6"]),  # a repeated value can be used twice
    ],
)
def test_correct_formula_scores_ten_and_terminates(cards, tokens):
    env = make(*cards)
    steps = play(env, *tokens, "=")
    assert [s[:3] for s in steps[:-1]] == [(0.0, False, False)] * len(tokens)
    assert steps[-1][:3] == (10.0, True, False)
    assert steps[-1][3]["formula"] == tokens  # "=" is not appended


@pytest.mark.parametrize(
    "tokens",
    [[], ["10"], ["10", "+"], ["2", "*", "10"], ["10", "*"], ["+", "10", "*", "2"], ["10", "2"], ["2", "+", "+"]],
)
def test_wrong_or_incomplete_formula_scores_minus_one(tokens):
    env = make((10, "H"), (2, "S"))
    steps = play(env, *tokens, "=")
    assert steps[-1][:3] == (-1.0, True, False)


def test_adjacent_numbers_do_not_join():
    # the paper's eval read "1","2" as 12 (+10); here two numbers in a row are no formula. EZPoints never
    # deals an ace, so the state is forced.
    env = make((1, "H"), (2, "S"))
    assert play(env, "1", "2", "=")[-1][:3] == (-1.0, True, False)


def test_invalid_card_appends_marker_and_continues():
    env = make((10, "H"), (2, "S"))
    r, term, trunc, info = play(env, "5")[0]
    assert (r, term, trunc, info["formula"]) == (-1.0, False, False, [MARKER])
    # a card used twice is invalid too
    steps = play(env, "2", "+", "2")
    assert [s[0] for s in steps] == [0.0, 0.0, -1.0]
    assert steps[-1][3]["formula"] == [MARKER, "2", "+", MARKER]


def test_win_after_an_invalid_card_still_succeeds():
    env = make((10, "H"), (2, "S"))
    rewards = [s[0] for s in play(env, "7", "10", "+", "2", "=")]
    assert rewards == [-1.0, 0.0, 0.0, 0.0, 10.0] and sum(rewards) > 0  # success = return > 0


def test_face_card_number_is_ten():
    env = make((12, "D"), (2, "S"))
    assert play(env, "10")[0][:3] == (0.0, False, False)
    assert play(env, "10")[0][0] == -1.0  # only one ten-valued card


def test_length_cap_checked_first_and_leaves_formula_unchanged():
    env = make((10, "H"), (2, "S"), formula=["10", "+", "2", MARKER, MARKER, MARKER])  # 6 > MAX_LEN
    for name in ("=", "5", "+", "10"):
        r, term, trunc, info = play(env, name)[0]
        assert (r, term, trunc) == (-1.0, False, True), name
        assert info["formula"] == ["10", "+", "2", MARKER, MARKER, MARKER]


def test_equals_is_still_scored_at_the_cap():
    env = make((10, "H"), (2, "S"), formula=["10", MARKER, "+", MARKER, "2"])  # exactly MAX_LEN tokens
    assert len(env.formula) == MAX_LEN
    assert play(env, "=")[0][:3] == (10.0, True, False)


def test_repeated_invalid_cards_reach_the_cap():
    env = make((10, "H"), (2, "S"))
    steps = play(env, *["5"] * 7)
    assert [s[:3] for s in steps[:6]] == [(-1.0, False, False)] * 6
    assert steps[6][:3] == (-1.0, False, True)
    assert steps[6][3]["formula"] == [MARKER] * 6


def test_info_is_a_snapshot():
    env = make((10, "H"), (2, "S"))
    _, info = env.reset(seed=3)
    info["formula"].append("9")
    assert env.formula == []
    _, _, _, _, info = env.step(A["+"])
    assert info["cards"] == [c.to_info() for c in env.cards] and info["formula"] == ["+"]


def test_numpy_integer_actions_are_accepted():
    env = make((10, "H"), (2, "S"))
    _, r, *_ = env.step(np.int64(9))
    assert r == 0.0 and env.formula == ["10"]


def test_render_table_cards_and_formula():
    env = make((10, "H"), (2, "S"))
    blank = env.render()
    assert blank.shape == (300, 300, 3) and blank.dtype == np.uint8
    assert blank[0, 0].tolist() == list(TABLE_GREEN) and blank[299, 299].tolist() == list(TABLE_GREEN)
    assert (blank[150, 20] == 255).all()  # the first card (x 5..140, y 55..244) is white
    obs, *_ = env.step(A["10"])
    np.testing.assert_array_equal(obs, env.render())
    changed = np.argwhere((obs != blank).any(-1))
    assert changed[:, 0].min() >= 250  # only the formula line below the cards changes
    np.testing.assert_array_equal(make((10, "H"), (2, "S")).render(), blank)  # deterministic
    assert not np.array_equal(make((10, "H"), (2, "D")).render(), blank)  # the suit is visible
