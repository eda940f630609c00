"""Solvers (envs/solvers.py): every formula is checked with the evaluator; Points24 solvability against an
independent brute force; the expert's next token; Blackjack basic strategy as a literal table."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from envs.arithmetic import MARKER, NUMBERS, evaluate
from envs.solvers import (
    EZPOINTS_OPS,
    POINTS24_OPS,
    all_solutions,
    basic_strategy,
    continuation,
    is_solvable,
    is_solved,
    next_formula_token,
    solve_ezpoints,
    solve_points24,
)


def uses_exactly(formula, values) -> bool:
    return Counter(int(t) for t in formula if t in NUMBERS) == Counter(values)


@functools.cache
def reachable(values: tuple[int, ...]) -> frozenset:
    """All values of +-*/ formulas over `values` (split into two groups, combine): a second algorithm."""
    if len(values) == 1:
        return frozenset({Fraction(values[0])})
    out = set()
    n = len(values)
    for mask in range(1, 2**n - 1):
        left = tuple(v for i, v in enumerate(values) if mask >> i & 1)
        right = tuple(v for i, v in enumerate(values) if not mask >> i & 1)
        for a in reachable(tuple(sorted(left))):
            for b in reachable(tuple(sorted(right))):
                out.update({a + b, a - b, a * b})
                if b != 0:
                    out.add(a / b)
    return frozenset(out)


# ---- EZPoints ---------------------------------------------------------------------------------------------


def ezpoints_deals():
    """Every (first, second) value pair the EZPoints deal can produce."""
    for first in range(2, 14):
        v = min(first, 10)
        seconds = {12 - v} | ({12 // v} if v in (1, 2, 3, 4, 6) else set())
        for second in seconds:
            yield (v, second)
            yield (second, v)


@pytest.mark.parametrize("values", sorted(set(ezpoints_deals())))
def test_ezpoints_every_deal_is_solved(values):
    formula = solve_ezpoints(list(values))
    assert formula is not None and len(formula) == 3
    assert evaluate(formula) == 12 and uses_exactly(formula, values)
    assert set(formula) - set(NUMBERS) <= set(EZPOINTS_OPS)
    assert is_solved(list(values), formula, 12)


def test_ezpoints_examples_and_no_solution():
    assert solve_ezpoints([2, 6]) == ["2", "*", "6"]
    assert solve_ezpoints([10, 2]) == ["10", "+", "2"]
    assert sorted(map(tuple, all_solutions([3, 4], 12, EZPOINTS_OPS))) == [("3", "*", "4"), ("4", "*", "3")]
    assert solve_ezpoints([5, 5]) is None


# ---- Points24 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [(8, 3, 8, 3), (1, 5, 5, 5), (1, 4, 5, 6), (3, 3, 7, 7), (1, 2, 3, 4), (10, 10, 4, 4)]
)
def test_points24_known_solvable(values):
    formula = solve_points24(list(values))
    assert formula is not None
    assert evaluate(formula) == 24 and uses_exactly(formula, values)
    assert all(t in NUMBERS or t in "+-*/()" for t in formula)


def test_points24_needs_exact_fractions():
    assert solve_points24([8, 3, 8, 3]) == ["8", "/", "(", "3", "-", "8", "/", "3", ")"]
    # only fraction-based solutions exist here, and a float check would reject this one
    assert all("/" in sol for sol in all_solutions([8, 3, 8, 3], 24, POINTS24_OPS))


@pytest.mark.parametrize(
    "values", [(1, 1, 1, 1), (1, 1, 1, 2), (1, 1, 1, 3), (10, 10, 10, 10), (1, 1, 2, 2), (1, 7, 7, 7)]
)
def test_points24_known_unsolvable(values):
    assert solve_points24(list(values)) is None
    assert Fraction(24) not in reachable(tuple(sorted(values)))


def test_points24_solvability_matches_brute_force_on_a_sample():
    multisets = list(itertools.combinations_with_replacement(range(1, 11), 4))
    rng = np.random.default_rng(0)
    sample = [multisets[i] for i in rng.choice(len(multisets), size=80, replace=False)]
    for values in sample:
        expected = Fraction(24) in reachable(values)
        assert (solve_points24(list(values)) is not None) == expected, values
        assert is_solvable(list(values)) == expected, values


def test_fast_solvability_count_over_all_deals():
    # 566 of the 715 four-card multisets over 1..10 reach 24 (the commonly quoted count for this game)
    multisets = list(itertools.combinations_with_replacement(range(1, 11), 4))
    assert sum(is_solvable(list(v)) for v in multisets) == 566
    assert is_solvable([3, 4], 12, EZPOINTS_OPS) and not is_solvable([5, 5], 12, EZPOINTS_OPS)


@pytest.mark.parametrize("values", [(8, 3, 8, 3), (4, 6, 1, 1), (2, 3, 10, 10)])
def test_every_listed_solution_is_valid_and_fits(values):
    solutions = all_solutions(list(values), 24, POINTS24_OPS)
    assert solutions and len(set(solutions)) == len(solutions)
    for formula in solutions:
        assert evaluate(list(formula)) == 24 and uses_exactly(formula, values)
        assert len(formula) <= 20  # fits under the Points24 length cap
    assert [len(s) for s in solutions] == sorted(len(s) for s in solutions)  # shortest first


def test_solutions_do_not_depend_on_card_order():
    assert all_solutions([8, 3, 8, 3], 24, POINTS24_OPS) == all_solutions([3, 3, 8, 8], 24, POINTS24_OPS)
    assert solve_points24([4, 6, 1, 1]) == solve_points24([1, 1, 6, 4])


# ---- expert continuation -----------------------------------------------------------------------------


def test_next_token_walks_a_solution_to_equals():
    values, formula = [6, 2], []
    while (token := next_formula_token(values, formula, 12, EZPOINTS_OPS, 5)) != "=":
        formula.append(token)
    assert is_solved(values, formula, 12) and len(formula) == 3


def test_next_token_continues_the_players_own_prefix():
    # the formula started with the other card: the expert finishes that order
    assert next_formula_token([2, 6], ["6"], 12, EZPOINTS_OPS, 5) == "*"
    assert next_formula_token([2, 6], ["6", "*"], 12, EZPOINTS_OPS, 5) == "2"


def test_next_token_ignores_invalid_card_markers():
    assert next_formula_token([2, 6], ["2", MARKER], 12, EZPOINTS_OPS, 5) == "*"
    assert next_formula_token([2, 6], ["2", MARKER, "*", "6"], 12, EZPOINTS_OPS, 5) == "="


def test_next_token_respects_the_length_cap():
    # 4 tokens already (2 markers): a 3-token solution after "2" would need 6 > 5 tokens
    assert continuation([2, 6], ["2", MARKER, MARKER, "*"], 12, EZPOINTS_OPS, 5) == ("2", "*", "6")
    assert continuation([2, 6], [MARKER, MARKER, MARKER, "2"], 12, EZPOINTS_OPS, 5) is None
    assert next_formula_token([2, 6], [MARKER, MARKER, MARKER, "2"], 12, EZPOINTS_OPS, 5) == "="


def test_next_token_gives_up_with_equals():
    assert next_formula_token([2, 6], ["2", "+"], 12, EZPOINTS_OPS, 5) == "="  # 2+6 is 8
    assert next_formula_token([1, 1, 1, 1], [], 24, POINTS24_OPS, 20) == "="  # unsolvable deal


# ---- Blackjack basic strategy ------------------------------------------------------------------------

# Rows: player total; columns: dealer up-card 2..10, A. H = hit, S = stand. Infinite deck, dealer stands on
# soft 17, hit/stand only (the standard chart with doubles read as hits and soft-18 doubles as stands).
HARD = {
    **{t: "HHHHHHHHHH" for t in range(4, 12)},
    12: "HHSSSHHHHH",
    **{t: "SSSSSHHHHH" for t in range(13, 17)},
    **{t: "SSSSSSSSSS" for t in range(17, 22)},
}
SOFT = {
    **{t: "HHHHHHHHHH" for t in range(12, 18)},
    18: "SSSSSSSHHH",
    **{t: "SSSSSSSSSS" for t in range(19, 22)},
}
DEALER = (2, 3, 4, 5, 6, 7, 8, 9, 10, 1)


@pytest.mark.parametrize("usable, table", [(False, HARD), (True, SOFT)])
def test_basic_strategy_table(usable, table):
    for total, row in table.items():
        for dealer, cell in zip(DEALER, row):
            assert basic_strategy(total, dealer, usable) == (1 if cell == "H" else 0), (total, dealer, usable)
