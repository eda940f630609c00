"""The step rules EZPoints and Points24 share: build a formula token by token from the dealt cards.

Both paper envs (spec §8.3, §8.4, §14) have the same step logic and differ only in the deal, the action
list, the target, the length cap and the picture; this base class holds the shared part once.
Order of checks in `step` (as the paper's code, confirmed in spec §14):

1. Length cap first: a formula longer than `max_len` makes ANY action, "=" included, a truncated step
   with reward -1; the formula is left unchanged.
2. A number whose cards are all used already (or never dealt) is an invalid card: reward -1, the marker
   " " is appended (so the length grows towards the cap), and the episode goes on.
3. "=" scores the formula and terminates: +10 if it evaluates to the target and uses every card, else -1.
4. Anything else is appended with reward 0.

The formula is a list of string tokens (`arithmetic.evaluate` scores it exactly; see that module for the
two deliberate deviations from the paper's `eval`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import check_action
from envs.arithmetic import MARKER, NUMBERS
from envs.cards import SUITS, TABLE_GREEN, Card, render_card
from envs.render import SIZE, blank_canvas, to_array
from envs.solvers import is_solved

WIN_REWARD = 10.0
FAIL_REWARD = -1.0


class FormulaCardEnv(gym.Env):
    """Shared base; subclasses set the class attributes below and implement `_deal` and `_draw_formula`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_names: tuple[str, ...] = ()
    n_cards = 0
    target = 0
    max_len = 0
    """A step taken while the formula is longer than this truncates the episode."""

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(self.action_names))
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        self.cards: list[Card] = []
        self.formula: list[str] = []
        self.solvable = False

    # ---- gymnasium API ---------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cards = self._deal()
        self.solvable = self._solvable()  # once per deal, not on every step
        self.formula = []
        return self._obs(), self._info()

    def step(self, action):
        check_action(self, action)
        token = self.action_names[int(action)]
        if len(self.formula) > self.max_len:
            return self._result(FAIL_REWARD, truncated=True)
        if token in NUMBERS and not self._card_available(token):
            self.formula.append(MARKER)
            return self._result(FAIL_REWARD)
        if token == "=":
            solved = is_solved(self.card_values, self.formula, self.target)
            return self._result(WIN_REWARD if solved else FAIL_REWARD, terminated=True)
        self.formula.append(token)
        return self._result(0.0)

    def render(self):
        img = blank_canvas(TABLE_GREEN)
        width = int(SIZE / self.n_cards * 0.9)
        height = int(width * 7 / 5)  # the paper's 5:7 card
        for i, card in enumerate(self.cards):
            img.paste(render_card(card, (width, height)), (5 + int(i * width * 1.1), (SIZE - height) // 2))
        self._draw_formula(img, " ".join(self.formula))
        return to_array(img)

    # ---- state -------------------------------------------------------------------------------------------

    @property
    def card_values(self) -> list[int]:
        return [card.value for card in self.cards]

    def _card_available(self, token: str) -> bool:
        """Each card can be used once: this number appears fewer times in the formula than among the cards."""
        return self.formula.count(token) < self.card_values.count(int(token))

    def _random_card(self, low: int = 1) -> Card:
        rank = int(self.np_random.integers(low, 14))
        return Card(rank, SUITS[int(self.np_random.integers(len(SUITS)))])

    def _result(self, reward: float, terminated: bool = False, truncated: bool = False):
        return self._obs(), float(reward), terminated, truncated, self._info()

    def _obs(self) -> np.ndarray:
        return self.render()

    def _info(self) -> dict:
        return {
            "cards": [card.to_info() for card in self.cards],
            "card_values": self.card_values,
            "formula": list(self.formula),
            "target": self.target,
            "solvable": self.solvable,
        }

    # ---- per task ----------------------------------------------------------------------------------------

    def _deal(self) -> list[Card]:
        raise NotImplementedError

    def _solvable(self) -> bool:
        raise NotImplementedError

    def _draw_formula(self, img, text: str) -> None:
        raise NotImplementedError
