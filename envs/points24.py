"""Points24: write a formula over four cards that equals 24 (RL4VLM gym_cards, spec §8.4).

## Description
Four playing cards lie on a green table; the agent appends one token per step to a formula and ends with
"=". J, Q and K count 10. Not every deal has a solution: about 73 % of deals (566 of the 715 value
multisets) have one, with exact arithmetic. Step rules
are shared with EZPoints and listed in envs/formula_env.py (length cap first, invalid card, "=" scoring).

## Action Space
Discrete(17): 0-9 = "1".."10", 10-16 = "+", "-", "*", "/", "(", ")", "=".

## Observation Space
Box(0, 255, (300, 300, 3), uint8): the #35654d table with the four cards (67x93, the paper's layout),
"Formula:" at y = 0.70 * 300 and the tokens joined with spaces at y = 0.80 * 300, DejaVu Sans 16 pt, white.

## Starting State
Four cards, each uniform over A..K with a random suit. The formula starts empty.

## Rewards
+10 for "=" on a formula equal to 24 that uses all four cards; -1 for "=" otherwise, for an invalid card
and for a step on a formula longer than 20 tokens; 0 for any other step.

## Episode End
Terminated by "="; truncated by a step taken when the formula is longer than 20 tokens (that step leaves
the formula unchanged). Success (the paper's metric) is an episode return > 0.

## Information
`info` has "cards" ((rank, suit) pairs), "card_values", "formula" (the token list, invalid-card markers
" " included), "target" (24) and "solvable" (whether any formula over the four values reaches 24,
from envs/solvers.py; exact arithmetic, so 8/(3-8/3) counts).

## Deviations from the paper
Randomness comes from `self.np_random` (seeded by `reset`), not the global `random`; formulas are scored
exactly and adjacent numbers are invalid (envs/arithmetic.py); cards are drawn, not loaded from PNGs.
"""

from __future__ import annotations

from envs.cards import Card
from envs.formula_env import FormulaCardEnv
from envs.render import draw_text
from envs.solvers import is_solvable

ACTION_NAMES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "-", "*", "/", "(", ")", "=")
TARGET = 24
MAX_LEN = 20


class Points24Env(FormulaCardEnv):
    action_names = ACTION_NAMES
    n_cards = 4
    target = TARGET
    max_len = MAX_LEN

    def _deal(self) -> list[Card]:
        return [self._random_card() for _ in range(self.n_cards)]

    def _solvable(self) -> bool:
        return is_solvable(self.card_values, TARGET)

    def _draw_formula(self, img, text: str) -> None:
        white = (255, 255, 255)
        draw_text(img, (10, int(300 * 0.70)), "Formula:", size=16, fill=white)
        draw_text(img, (10, int(300 * 0.80)), text, size=16, fill=white)
