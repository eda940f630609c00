"""A safe, exact evaluator for the EZPoints/Points24 formulas (a token list over 1..10 + - * / ( )).

The paper scores a formula with Python's `eval(''.join(tokens))` (spec §14). We never run `eval`/`exec` on
anything a model wrote; instead a tokenizer and a recursive-descent parser compute the value. Two of
`eval`'s semantics are deliberately NOT kept; both are documented deviations from the paper:

- **Exact arithmetic.** Values are `fractions.Fraction`, so 8/(3-8/3) is exactly 24. The paper's float
  division gives 23.999999999999996 there and scored a correct solution as wrong.
- **Adjacent numbers are invalid.** The formula is a list of tokens, so "2","4" is two numbers with no
  operator between them (a syntax error), not the number 24 as string joining made it in the paper.
  Likewise "*","*" and "/","/" are two operators in a row (invalid), not Python's power / floor division.

What `eval` did accept and we keep: unary plus and minus ("-3+9", "2*-3", "--4"), brackets, the usual
precedence and left associativity. The invalid-card marker " " is whitespace, exactly as in the joined
string the paper evaluated. Anything else (an unknown token, an empty formula, unbalanced brackets,
a division by zero, a dangling operator) gives None, which the envs score as a failed formula (-1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

NUMBERS = tuple(str(n) for n in range(1, 11))
OPERATORS = ("+", "-", "*", "/")
BRACKETS = ("(", ")")
MARKER = " "
"""Appended by the envs for an invalid card; whitespace to the evaluator."""
MAX_TOKENS = 100
"""No env formula exceeds 21 tokens; the cap bounds the parser's recursion on arbitrary input."""

_TOKEN_RE = re.compile(r"\s*(?:(\d+)|([-+*/()]))")


class _Invalid(Exception):
    """Raised inside the parser for any malformed formula; never escapes `evaluate`."""


def tokenize(text: str) -> list[str] | None:
    """Split a formula string into tokens; None if it has characters or numbers outside the whitelist.

    A run of digits is one number, so "24" is the number 24 (not in 1..10, hence None) and "2 4" is two
    adjacent numbers (which `evaluate` rejects).
    """
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            return None
        number, symbol = match.groups()
        if number is not None and number not in NUMBERS:
            return None
        tokens.append(number if number is not None else symbol)
        pos = match.end()
    return tokens


def evaluate(formula: Sequence[str] | str) -> Fraction | None:
    """The exact value of a formula (token list or string), or None if it is not a valid formula."""
    if isinstance(formula, str):
        tokens = tokenize(formula)
        if tokens is None:
            return None
    else:
        tokens = [t for t in formula if t != MARKER]
    if not tokens or len(tokens) > MAX_TOKENS:
        return None
    if not all(isinstance(t, str) and (t in NUMBERS or t in OPERATORS or t in BRACKETS) for t in tokens):
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expression()
        if parser.pos != len(tokens):
            raise _Invalid("tokens left over")
    except _Invalid:
        return None
    return value


def count_numbers(formula: Sequence[str]) -> int:
    """How many cards a token list uses (each number token is one card)."""
    return sum(1 for t in formula if t in NUMBERS)


class _Parser:
    """expression := term (("+"|"-") term)*; term := factor (("*"|"/") factor)*;
    factor := ("+"|"-") factor | number | "(" expression ")"."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise _Invalid("formula ends early")
        self.pos += 1
        return token

    def expression(self) -> Fraction:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self._take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self._peek() in ("*", "/"):
            if self._take() == "*":
                value = value * self.factor()
                continue
            divisor = self.factor()
            if divisor == 0:
                raise _Invalid("division by zero")
            value = value / divisor
        return value

    def factor(self) -> Fraction:
        token = self._take()
        if token == "+":
            return self.factor()
        if token == "-":
            return -self.factor()
        if token in NUMBERS:
            return Fraction(int(token))
        if token == "(":
            value = self.expression()
            if self._take() != ")":
                raise _Invalid("unbalanced brackets")
            return value
        raise _Invalid(f"unexpected {token!r}")
