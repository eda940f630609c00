"""Points24 env (spec §8.4, §14): gymnasium API, seeding, the deal, every reward rule and the picture."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env, resolve_task
from envs.arithmetic import MARKER
from envs.builtin import ten_rule_parser
from envs.cards import TABLE_GREEN, Card
from envs.points24 import ACTION_NAMES, MAX_LEN, Points24Env
from envs.solvers import solve_points24

A = {name: i for i, name in enumerate(ACTION_NAMES)}


def make(*ranks: int, formula=()) -> Points24Env:
    """An env reset once, then forced to hold cards of these ranks (all spades) and `formula`."""
    env = Points24Env()
    env.reset(seed=0)
    env.cards = [Card(rank, "S") for rank in ranks]
    env.formula = list(formula)
    return env


def play(env: Points24Env, *names: str):
    return [env.step(A[name])[1:] for name in names]


def test_check_env_passes():
    check_env(Points24Env().unwrapped, skip_render_check=True)


def test_spaces_and_registry():
    env = Points24Env()
    assert env.action_space.n == 17
    assert ACTION_NAMES[:10] == tuple(str(n) for n in range(1, 11))
    assert ACTION_NAMES[10:] == ("+", "-", "*", "/", "(", ")", "=")
    assert resolve_task("points24").action_names == ACTION_NAMES
    assert resolve_task("points24").parse is ten_rule_parser
    assert isinstance(make_env("points24"), Points24Env)


def test_same_seed_same_rollout(assert_same_seed_same_rollout):
    actions = np.random.default_rng(0).integers(0, 17, size=60).tolist()
    assert_same_seed_same_rollout(Points24Env, 11, actions)


def test_deal_over_many_seeds():
    env = Points24Env()
    ranks, solvable = Counter(), 0
    for seed in range(400):
        _, info = env.reset(seed=seed)
        assert len(info["cards"]) == 4 and info["target"] == 24 and info["formula"] == []
        assert info["card_values"] == [min(c.rank, 10) for c in env.cards]
        if seed < 30:  # the full formula search is the slow one
            assert info["solvable"] == (solve_points24(info["card_values"]) is not None)
        ranks.update(c.rank for c in env.cards)
        solvable += info["solvable"]
    assert set(ranks) == set(range(1, 14))  # aces and face cards are dealt
    assert 0.6 < solvable / 400 < 0.85  # about 73 % of deals have a solution


@pytest.mark.parametrize(
    "ranks, tokens",
    [
        ((8, 3, 8, 3), ["8", "/", "(", "3", "-", "8", "/", "3", ")"]),  # exact: the paper's float eval said no
        ((13, 12, 4, 4), ["(", "10", "*", "10", "-", "4", ")", "/", "4"]),  # K and Q count 10
        ((1, 2, 3, 4), ["1", "*", "2", "*", "3", "*", "4"]),
        ((6, 6, 6, 6), ["6", "+", "6", "+", "6", "+", "6"]),
        ((5, 5, 5, 1), ["5", "*", "(", "5", "-", "1", "/", "5", ")"]),
    ],
)
def test_correct_formula_scores_ten(ranks, tokens):
    env = make(*ranks)
    steps = play(env, *tokens, "=")
    assert [s[:3] for s in steps[:-1]] == [(0.0, False, False)] * len(tokens)
    assert steps[-1][:3] == (10.0, True, False)


@pytest.mark.parametrize(
    "tokens",
    [
        ["8", "*", "3"],  # 24 but not all cards used
        ["8", "*", "3", "*", "1"],
        ["8", "*", "3", "+", "1", "+", "1"],  # all cards, 26
        ["(", "8", "*", "3", "*", "1", "*", "1"],  # unbalanced
        ["8", "*", "3", "*", "1", "/", "(", "1", "-", "1"],  # uses the 1 a third time: invalid card, then unbalanced
        [],
    ],
)
def test_wrong_or_incomplete_formula_scores_minus_one(tokens):
    env = make(8, 3, 1, 1)
    assert play(env, *tokens, "=")[-1][:3] == (-1.0, True, False)


def test_all_cards_rule_counts_number_tokens():
    env = make(8, 3, 1, 1)
    assert play(env, "8", "*", "3", "*", "1", "*", "1", "=")[-1][:2] == (10.0, True)


def test_division_by_zero_scores_minus_one():
    env = make(1, 1, 2, 2)
    assert play(env, "2", "/", "(", "1", "-", "1", ")", "*", "2", "=")[-1][:3] == (-1.0, True, False)


def test_invalid_card_appends_marker_and_continues():
    env = make(8, 3, 1, 1)
    r, term, trunc, info = play(env, "9")[0]
    assert (r, term, trunc, info["formula"]) == (-1.0, False, False, [MARKER])
    rewards = [s[0] for s in play(env, "1", "+", "1", "+", "1")]
    assert rewards == [0.0, 0.0, 0.0, 0.0, -1.0]
    assert env.formula == [MARKER, "1", "+", "1", "+", MARKER]
    assert play(env, "(")[0][0] == 0.0  # operators and brackets are never invalid


def test_length_cap_checked_first_and_leaves_formula_unchanged():
    formula = ["8", "*", "3", "*", "1", "*", "1"] + [MARKER] * 14  # 21 tokens > MAX_LEN
    env = make(8, 3, 1, 1, formula=formula)
    for name in ("=", "9", ")", "8"):
        r, term, trunc, info = play(env, name)[0]
        assert (r, term, trunc) == (-1.0, False, True), name
        assert info["formula"] == formula


def test_equals_is_still_scored_at_the_cap():
    formula = ["8", "*", "3", "*", "1", "*", "1"] + [MARKER] * 13
    env = make(8, 3, 1, 1, formula=formula)
    assert len(env.formula) == MAX_LEN == 20
    assert play(env, "=")[0][:3] == (10.0, True, False)


def test_long_valid_formula_truncates_on_the_22nd_step():
    env = make(8, 3, 1, 1)
    steps = play(env, *(["("] * 21), ")")
    assert all(s[:3] == (0.0, False, False) for s in steps[:21])
    assert steps[21][:3] == (-1.0, False, True) and len(env.formula) == 21


def test_render_table_cards_and_two_formula_lines():
    env = make(8, 3, 1, 12)
    blank = env.render()
    assert blank.shape == (300, 300, 3) and blank[0, 0].tolist() == list(TABLE_GREEN)
    # four 67x93 cards at x = 5, 78, 152, 226, vertically centred (y 103..195)
    for x in (6, 79, 153, 227):
        assert (blank[110, x] == 255).all()
    assert blank[100, 6].tolist() == list(TABLE_GREEN)
    assert (blank[205:235] != TABLE_GREEN).any()  # the "Formula:" label at y = 210
    obs = env.step(A["("])[0]
    changed = np.argwhere((obs != blank).any(-1))
    assert changed[:, 0].min() >= 235  # the formula itself is drawn on the line at y = 240
    assert not np.array_equal(make(8, 3, 1, 13).render(), blank)  # Q and K look different
