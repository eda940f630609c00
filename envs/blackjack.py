"""Blackjack against a dealer, seen as a picture (RL4VLM gym_cards, spec §8.5).

## Description
The rules of gymnasium's Blackjack-v1 with natural=False, sab=False: an infinite deck, the player hits
until they stand or bust, then the dealer draws until their total is 17 or more (standing on soft 17).
Reaching 21 after a hit does not end the episode. Face cards count 10; an ace counts 11 unless that
would bust the hand (a "usable" ace).

## Action Space
Discrete(2): 0 = "stand" (gymnasium's stick), 1 = "hit".

## Observation Space
Box(0, 255, (300, 300, 3), uint8), the paper's layout: a #35654d table, "Dealer" at (5, 5) with the
dealer's up-card at (5, 25) and a card back at (78, 25); "Player" at (5, 130) with the player's cards
(70x98) from (5, 150), 74 px apart, a second row (at y = 252, mostly off the canvas) after the fifth card.
DejaVu Sans Bold 16 pt, white. The hole card stays face down even after the episode ends, as in the paper.
Kept from the paper although it hides information: only four cards fit in a 300 px row, so the fifth
player card starts at x = 301 and is never visible.

## Starting State
Dealer and player get two cards each (dealer first), every card uniform over A..K with a random suit.

## Rewards
Hit: -1 if the player busts (over 21), else 0. Stand: +1 if the player's total beats the dealer's
(or the dealer busts), 0 for a tie, -1 otherwise. No bonus for a natural.

## Episode End
Terminated on a bust or on stand. Success (the paper's metric) is an episode return > 0, i.e. a win.

## Information
`info` has "player_sum", "dealer_card" (the up-card's value, 1 for an ace), "usable_ace" (bool),
"player_hand" and "dealer_hand" ((rank, suit) pairs; the dealer's second card is the hidden one, for
tests and analysis only; experts use the up-card alone).

## Deviations from the paper
A card is drawn as a rank A..K (value 10 with probability 4/13, as gymnasium's deck) and a suit. The
paper drew a value and then showed every 10 as J, Q or K, so its pictures never contain a ten; ours do.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import check_action
from envs.cards import CARD_SIZE, SUITS, TABLE_GREEN, Card, render_back, render_card
from envs.render import SIZE, blank_canvas, draw_text, to_array

STAND, HIT = 0, 1
ACTION_NAMES = ("stand", "hit")
DEALER_STANDS_AT = 17
CARD_GAP = 4
CARDS_PER_ROW = 5


def hand_total(values: Sequence[int]) -> tuple[int, bool]:
    """(total, usable ace): one ace counts 11 when that keeps the hand at 21 or below."""
    total = sum(values)
    usable = 1 in values and total + 10 <= 21
    return (total + 10 if usable else total), usable


def score(values: Sequence[int]) -> int:
    """The total that is compared at the end; 0 for a bust, so any standing hand beats a busted dealer."""
    total, _ = hand_total(values)
    return 0 if total > 21 else total


class BlackjackEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_names = ACTION_NAMES

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        self.player: list[Card] = []
        self.dealer: list[Card] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.dealer = [self._draw_card(), self._draw_card()]
        self.player = [self._draw_card(), self._draw_card()]
        return self._obs(), self._info()

    def step(self, action):
        check_action(self, action)
        if int(action) == HIT:
            self.player.append(self._draw_card())
            bust = hand_total(self._values(self.player))[0] > 21
            return self._obs(), -1.0 if bust else 0.0, bust, False, self._info()
        while hand_total(self._values(self.dealer))[0] < DEALER_STANDS_AT:
            self.dealer.append(self._draw_card())
        player, dealer = score(self._values(self.player)), score(self._values(self.dealer))
        reward = float(player > dealer) - float(player < dealer)
        return self._obs(), reward, True, False, self._info()

    def render(self):
        img = blank_canvas(TABLE_GREEN)
        white = (255, 255, 255)
        draw_text(img, (5, 5), "Dealer", size=16, bold=True, fill=white)
        img.paste(render_card(self.dealer[0], CARD_SIZE), (5, 25))
        img.paste(render_back(CARD_SIZE), (78, 25))
        draw_text(img, (5, 130), "Player", size=16, bold=True, fill=white)
        for i, card in enumerate(self.player):
            row, col = divmod(i, CARDS_PER_ROW)
            xy = (5 + col * (CARD_SIZE[0] + CARD_GAP), 150 + row * (CARD_SIZE[1] + CARD_GAP))
            img.paste(render_card(card, CARD_SIZE), xy)  # a second row runs off the canvas, as in the paper
        return to_array(img)

    def _draw_card(self) -> Card:
        rank = int(self.np_random.integers(1, 14))
        return Card(rank, SUITS[int(self.np_random.integers(len(SUITS)))])

    @staticmethod
    def _values(hand: list[Card]) -> list[int]:
        return [card.value for card in hand]

    def _obs(self) -> np.ndarray:
        return self.render()

    def _info(self) -> dict:
        total, usable = hand_total(self._values(self.player))
        return {
            "player_sum": total,
            "dealer_card": self.dealer[0].value,
            "usable_ace": usable,
            "player_hand": [card.to_info() for card in self.player],
            "dealer_hand": [card.to_info() for card in self.dealer],
        }
