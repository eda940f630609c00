"""Ground-truth solvers for the card tasks: formulas for EZPoints/Points24, basic strategy for Blackjack.

They feed the SFT experts (envs/experts.py), the Points24 "solvable" flag and the tests. Formula search is
exact (`fractions.Fraction`, like envs/arithmetic.py), so a solution such as 8/(3-8/3) is found and scored
as the envs score it. Every returned formula is a token list that `arithmetic.evaluate` maps to the target
and that uses each dealt value exactly once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

from envs.arithmetic import MARKER, count_numbers, evaluate

EZPOINTS_OPS = "+*"
POINTS24_OPS = "+-*/"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


class _Expr(NamedTuple):
    value: Fraction
    tokens: tuple[str, ...]
    precedence: int
    """Of the top-level operator (_ATOM for a number), to decide where brackets are needed."""


def _combine(left: _Expr, op: str, right: _Expr) -> _Expr | None:
    """left op right with only the brackets precedence needs (fewer tokens, closer to how people write)."""
    if op == "/" and right.value == 0:
        return None
    values = {"+": left.value + right.value, "-": left.value - right.value, "*": left.value * right.value}
    value = values[op] if op in values else left.value / right.value
    prec = _PRECEDENCE[op]
    lt = ("(", *left.tokens, ")") if left.precedence < prec else left.tokens
    # a - (b + c) and a / (b * c) need brackets; a + (b - c) and a * (b / c) do not change without them
    needs = right.precedence < prec or (right.precedence == prec and op in "-/")
    rt = ("(", *right.tokens, ")") if needs else right.tokens
    return _Expr(value, (*lt, op, *rt), prec)


def _search(exprs: tuple[_Expr, ...], target: Fraction, ops: str, out: set) -> None:
    """Every way to combine two of the expressions (ordered pair, any op) until one remains."""
    if len(exprs) == 1:
        if exprs[0].value == target:
            out.add(exprs[0].tokens)
        return
    for i, left in enumerate(exprs):
        for j, right in enumerate(exprs):
            if i == j:
                continue
            rest = tuple(e for k, e in enumerate(exprs) if k not in (i, j))
            for op in ops:
                combined = _combine(left, op, right)
                if combined is not None:
                    _search((*rest, combined), target, ops, out)


@functools.lru_cache(maxsize=4096)
def _solutions_sorted(values: tuple[int, ...], target: int, ops: str) -> tuple[tuple[str, ...], ...]:
    leaves = tuple(_Expr(Fraction(v), (str(v),), _ATOM) for v in values)
    found: set[tuple[str, ...]] = set()
    _search(leaves, Fraction(target), ops, found)
    # shortest first (no brackets before brackets), then a fixed order, so results never depend on set order
    return tuple(sorted(found, key=lambda tokens: (len(tokens), tokens)))


def all_solutions(values: Sequence[int], target: int, ops: str) -> tuple[tuple[str, ...], ...]:
    """Every formula (minimal brackets, binary operators from `ops`) over all of `values` that equals target."""
    return _solutions_sorted(tuple(sorted(int(v) for v in values)), int(target), ops)


def solve_ezpoints(values: Sequence[int], target: int = 12) -> list[str] | None:
    """A formula with + and * over both cards that equals 12 (the deal guarantees one), e.g. ["2", "*", "6"]."""
    found = all_solutions(values, target, EZPOINTS_OPS)
    return list(found[0]) if found else None


def solve_points24(values: Sequence[int], target: int = 24) -> list[str] | None:
    """A formula over all four values that equals 24 exactly, or None if the deal has none."""
    found = all_solutions(values, target, POINTS24_OPS)
    return list(found[0]) if found else None


@functools.lru_cache(maxsize=65536)
def _reaches(values: tuple[Fraction, ...], target: Fraction) -> bool:
    if len(values) == 1:
        return values[0] == target
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            a, b = values[i], values[j]
            rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
            results = {a + b, a - b, b - a, a * b}
            results.update(x / y for x, y in ((a, b), (b, a)) if y != 0)
            if any(_reaches(tuple(sorted((*rest, r))), target) for r in results):
                return True
    return False


def is_solvable(values: Sequence[int], target: int = 24, ops: str = POINTS24_OPS) -> bool:
    """Whether some formula reaches the target: a value-only search that stops at the first hit.

    The same answer as `bool(all_solutions(...))` (tested), but without building every formula, so a
    Points24 reset stays cheap (under a millisecond instead of tens). Other operator sets use the full search.
    """
    if ops != POINTS24_OPS:
        return bool(all_solutions(values, target, ops))
    return _reaches(tuple(sorted(Fraction(int(v)) for v in values)), Fraction(target))


def is_solved(values: Sequence[int], formula: Sequence[str], target: int) -> bool:
    """The env's success test for "=": the formula equals the target and uses every card."""
    return count_numbers(formula) == len(values) and evaluate(formula) == target


def continuation(
    values: Sequence[int], formula: Sequence[str], target: int, ops: str, max_len: int
) -> tuple[str, ...] | None:
    """A solution that starts with the current formula (invalid-card markers ignored) and still fits.

    `max_len` is the longest formula on which "=" is still scored (5 for EZPoints, 20 for Points24): the
    remaining tokens plus the formula's current length, markers included, must not exceed it.
    """
    prefix = tuple(t for t in formula if t != MARKER)
    room = max_len - len(formula)
    for solution in all_solutions(values, target, ops):
        if solution[: len(prefix)] == prefix and len(solution) - len(prefix) <= room:
            return solution
    return None


def next_formula_token(values: Sequence[int], formula: Sequence[str], target: int, ops: str, max_len: int) -> str:
    """The expert's next token: "=" once solved, the next token of a fitting solution, else "=".

    With no way left to win (an unsolvable deal, or a formula that no solution extends) "=" ends the episode
    at once: that loss costs -1, the same as any other ending, and no further invalid-card penalties.
    """
    if is_solved(values, formula, target):
        return "="
    solution = continuation(values, formula, target, ops, max_len)
    if solution is None:
        return "="
    return solution[len([t for t in formula if t != MARKER])]


# ---- Blackjack -----------------------------------------------------------------------------------------

STAND, HIT = 0, 1


def basic_strategy(player_sum: int, dealer_card: int, usable_ace: bool) -> int:
    """Hit/stand basic strategy for an infinite deck, dealer standing on soft 17 (no double or split).

    `dealer_card` is the up-card's value, 1 for an ace. Returns 0 (stand) or 1 (hit).
    Hard: hit up to 11; 12 stands against 4-6; 13-16 stand against 2-6; 17+ stands.
    Soft: hit up to soft 17; soft 18 stands against 2-8 and hits against 9, 10, ace; soft 19+ stands.
    """
    strong_dealer = dealer_card == 1 or dealer_card >= 7
    if usable_ace:
        if player_sum <= 17:
            return HIT
        if player_sum == 18:
            return HIT if dealer_card == 1 or dealer_card >= 9 else STAND
        return STAND
    if player_sum <= 11:
        return HIT
    if player_sum == 12:
        return STAND if 4 <= dealer_card <= 6 else HIT
    if player_sum <= 16:
        return HIT if strong_dealer else STAND
    return STAND
