"""EZPoints: write a formula with + and * over two cards that equals 12 (RL4VLM gym_cards, spec §8.3).

## Description
Two playing cards lie on a green table; the agent appends one token per step to a formula and ends with
"=". J, Q and K count 10. The deal always has a solution. Step rules are shared with Points24 and listed
in envs/formula_env.py (length cap first, invalid card, "=" scoring).

## Action Space
Discrete(13): 0-9 = "1".."10", 10 = "+", 11 = "*", 12 = "=".

## Observation Space
Box(0, 255, (300, 300, 3), uint8): the #35654d table with the two cards (135x189, the paper's layout) and
"Formula: " followed by the tokens joined with spaces, in DejaVu Sans 20 pt, white.

## Starting State
The first card is uniform over 2..K with a random suit. If its value v is 2, 3, 4 or 6, then with
probability 0.5 the second value is 12 / v, otherwise it is 12 - v (so 10 / J / Q / K pair with a 2).
The second card is never a face card (a value of 10 is the ten), as in the paper. The two are swapped
with probability 0.5. The formula starts empty.

## Rewards
+10 for "=" on a formula equal to 12 that uses both cards; -1 for "=" otherwise, for an invalid card
and for a step on a formula longer than 5 tokens; 0 for any other step.

## Episode End
Terminated by "="; truncated by a step taken when the formula is longer than 5 tokens (that step leaves
the formula unchanged). Success (the paper's metric) is an episode return > 0.

## Information
`info` has "cards" ((rank, suit) pairs, e.g. ("K", "H")), "card_values", "formula" (the token list,
invalid-card markers " " included), "target" (12) and "solvable" (always True). The prompt shows
''.join(formula).

## Deviations from the paper
Randomness comes from `self.np_random` (seeded by `reset`), not the global `random`; formulas are scored
exactly and adjacent numbers are invalid (envs/arithmetic.py); cards are drawn, not loaded from PNGs.
"""

from __future__ import annotations

from envs.cards import SUITS, Card
from envs.formula_env import FormulaCardEnv
from envs.render import draw_text

ACTION_NAMES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "*", "=")
TARGET = 12
MAX_LEN = 5
DIVISORS = (1, 2, 3, 4, 6)
"""Values whose 12 / v is a card value; the paper's list includes 1, which the first card never is."""


class EZPointsEnv(FormulaCardEnv):
    action_names = ACTION_NAMES
    n_cards = 2
    target = TARGET
    max_len = MAX_LEN

    def _deal(self) -> list[Card]:
        first = self._random_card(low=2)
        v = first.value
        use_product = v in DIVISORS and self.np_random.random() < 0.5
        second_value = TARGET // v if use_product else TARGET - v
        second = Card(second_value, SUITS[int(self.np_random.integers(len(SUITS)))])
        if self.np_random.random() < 0.5:
            return [second, first]
        return [first, second]

    def _solvable(self) -> bool:
        return True  # the deal is built around 12 = a + b or a * b

    def _draw_formula(self, img, text: str) -> None:
        draw_text(img, (10, int(300 * 0.86)), "Formula: " + text, size=20, fill=(255, 255, 255))
