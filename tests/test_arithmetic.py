"""The safe formula evaluator (envs/arithmetic.py): exact values, every invalid form, and never raising."""

from __future__ import annotations

import ast
import builtins
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import arithmetic
from envs.arithmetic import BRACKETS, MARKER, NUMBERS, OPERATORS, count_numbers, evaluate, tokenize


def toks(text: str) -> list[str]:
    """'10 * ( 2 + 1 )' -> ['10', '*', '(', '2', '+', '1', ')'] (tests write token lists space-separated)."""
    return text.split()


@pytest.mark.parametrize(
    "formula, value",
    [
        ("8 / ( 3 - 8 / 3 )", Fraction(24)),  # 23.999999999999996 with the paper's float eval
        ("2 * 6", Fraction(12)),
        ("10 + 2", Fraction(12)),
        ("1 + 2 * 3", Fraction(7)),  # precedence
        ("( 1 + 2 ) * 3", Fraction(9)),
        ("10 - 4 - 3", Fraction(3)),  # left associative
        ("8 / 4 / 2", Fraction(1)),
        ("1 / 3", Fraction(1, 3)),
        ("1 / 3 * 3", Fraction(1)),
        ("10 * 2 + 4", Fraction(24)),
        ("( ( ( 7 ) ) )", Fraction(7)),
        ("6 / ( 1 - 3 / 4 )", Fraction(24)),
        ("3 * ( 8 - 10 / 2 ) * 8 / 3", Fraction(24)),
    ],
)
def test_values_are_exact_fractions(formula, value):
    result = evaluate(toks(formula))
    assert isinstance(result, Fraction) and result == value
    assert evaluate(formula.replace(" ", "")) == value  # the string form agrees


def test_exactness_is_a_deliberate_deviation_from_float_eval():
    assert 8 / (3 - 8 / 3) != 24  # what the paper's eval computed
    assert evaluate(["8", "/", "(", "3", "-", "8", "/", "3", ")"]) == 24


@pytest.mark.parametrize(
    "formula, value",
    [
        ("- 3 + 9", Fraction(6)),
        ("2 * - 3", Fraction(-6)),
        ("- - 4", Fraction(4)),
        ("+ 5", Fraction(5)),
        ("- ( 2 )", -2),
    ],
)
def test_unary_signs_as_python_eval(formula, value):
    assert evaluate(toks(formula)) == value


def test_division_by_zero_is_invalid():
    assert evaluate(toks("1 / ( 2 - 2 )")) is None
    assert evaluate(toks("5 / ( 3 - 3 ) + 24")) is None
    assert evaluate(toks("( 2 - 2 ) / 5")) == 0  # zero on top is fine


@pytest.mark.parametrize("formula", ["( 1 + 2", "1 + 2 )", ") 1 (", "( ( 3 )", "( )", "3 ( ) ", "( 1 ) ( 2 )"])
def test_unbalanced_or_misplaced_brackets(formula):
    assert evaluate(toks(formula)) is None


@pytest.mark.parametrize("formula", [[], [MARKER], [MARKER, MARKER], ""])
def test_empty_formula_is_invalid(formula):
    assert evaluate(formula) is None


@pytest.mark.parametrize("formula", [["2", "4"], ["1", "2"], ["10", "1"], ["3", "(", "4", ")"], ["2", MARKER, "4"]])
def test_adjacent_numbers_are_invalid(formula):
    # the paper's eval joined "2","4" into 24; our formula is a token list, so this is two numbers in a row
    assert evaluate(formula) is None


@pytest.mark.parametrize("formula", ["2 * * 3", "8 / / 2", "2 + * 3", "1 +", "* 2", "2 * ", "- -"])
def test_operator_misuse_is_invalid(formula):
    # "**" and "//" are two operators in a row here, not Python's power and floor division
    assert evaluate(toks(formula)) is None


@pytest.mark.parametrize("bad", ["0", "11", "24", "x", "**", "//", "2.5", "1e3", "__import__", " 1", 3, None])
def test_unknown_tokens_are_invalid(bad):
    assert evaluate(["1", "+", bad]) is None


def test_marker_is_whitespace():
    # the invalid-card marker separates tokens like a space in the paper's joined string
    assert evaluate(["2", MARKER, "*", MARKER, "6"]) == 12
    assert evaluate([MARKER, "10", "+", "2", MARKER]) == 12


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("8/(3-8/3)", ["8", "/", "(", "3", "-", "8", "/", "3", ")"]),
        (" 10 * 2 + 4 ", ["10", "*", "2", "+", "4"]),
        ("2 4", ["2", "4"]),  # tokenizes, but evaluates to None
        ("", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


@pytest.mark.parametrize("text", ["24", "0", "010", "2.5", "2^3", "abs(2)", "1,2", "٣"])
def test_tokenize_rejects_outside_whitelist(text):
    assert tokenize(text) is None
    assert evaluate(text) is None


def test_string_adjacent_numbers_invalid():
    assert evaluate("2 4") is None and evaluate("24") is None
    assert evaluate("2**3") is None and evaluate("8//2") is None


def test_count_numbers():
    assert count_numbers(toks("( 10 + 2 ) * 3 - 1")) == 4
    assert count_numbers([MARKER, "+", "*"]) == 0
    assert count_numbers(["10", MARKER, "10"]) == 2


def test_never_calls_eval_or_exec(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must never be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert evaluate("8/(3-8/3)") == 24
    assert evaluate(["__import__('os')"]) is None
    tree = ast.parse(open(arithmetic.__file__).read())
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


def test_deep_nesting_is_bounded_not_a_crash():
    assert evaluate(["("] * 5000 + ["1"] + [")"] * 5000) is None  # over MAX_TOKENS
    assert evaluate(["-"] * 5000 + ["1"]) is None
    depth = (arithmetic.MAX_TOKENS - 1) // 2
    assert evaluate(["("] * depth + ["1"] + [")"] * depth) == 1


ALL_TOKENS = list(NUMBERS) + list(OPERATORS) + list(BRACKETS) + [MARKER]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(ALL_TOKENS), max_size=40))
def test_random_token_lists_never_raise(tokens):
    value = evaluate(tokens)
    assert value is None or isinstance(value, Fraction)
    if value is not None:
        # a valid formula has as many "(" as ")" and ends on a number or ")"
        real = [t for t in tokens if t != MARKER]
        assert real.count("(") == real.count(")")
        assert real[-1] in NUMBERS or real[-1] == ")"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_random_text_never_raises(text):
    value = evaluate(text)
    assert value is None or isinstance(value, Fraction)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALL_TOKENS), max_size=25))
def test_agrees_with_python_where_python_agrees(tokens):
    # Where the joined string has no adjacent numbers, "**" or "//", our value equals Python's exact value:
    # compute Python's with Fractions by wrapping every number (a test-only oracle: whitelisted tokens, no builtins).
    real = [t for t in tokens if t != MARKER]
    joined = "".join(real)
    adjacent = any(a in NUMBERS and b in NUMBERS for a, b in zip(real, real[1:]))
    if adjacent or "**" in joined or "//" in joined or not real:
        return
    source = "".join(f"F({t})" if t in NUMBERS else t for t in real)
    try:
        expected = builtins.eval(source, {"__builtins__": {}, "F": Fraction})
    except (SyntaxError, ZeroDivisionError, TypeError):
        expected = None
    if not isinstance(expected, Fraction):
        expected = None
    assert evaluate(tokens) == expected
