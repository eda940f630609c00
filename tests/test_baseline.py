"""envs/baseline.py: the noiseless expert on held-out seeds, the reference beside each trained policy."""

from __future__ import annotations

import dataclasses

import numpy as np

from contracts.seeds import EVAL_SEED_BASE
from envs.baseline import expert_available, expert_episode, expert_success
from envs.blackjack import STAND, BlackjackEnv
from envs.builtin import BLACKJACK, NUMBERLINE, POINTS24


def test_numberline_expert_wins_every_held_out_episode():
    assert expert_success(NUMBERLINE, EVAL_SEED_BASE, 50) == 1.0


def test_points24_solver_wins_exactly_the_solvable_deals():
    seeds = range(EVAL_SEED_BASE, EVAL_SEED_BASE + 60)
    solvable = [POINTS24.make_env().reset(seed=s)[1]["solvable"] for s in seeds]
    won = [expert_episode(POINTS24, s, 1000) for s in seeds]
    assert won == solvable
    assert 0 < sum(won) < len(won)  # the sample has both kinds of deal


def test_basic_strategy_beats_always_standing_on_the_same_deals():
    """Basic strategy wins ~43 % of hit/stand deals; standing on every hand wins ~38 % (the dealer busts)."""
    n = 1500
    basic = expert_success(BLACKJACK, EVAL_SEED_BASE, n)
    stand = dataclasses.replace(BLACKJACK, expert=dataclasses.replace(BLACKJACK.expert, act=lambda i, n, r: STAND))
    always_stand = expert_success(stand, EVAL_SEED_BASE, n)
    assert 0.40 < basic < 0.47
    assert basic - always_stand > 0.02
    env = BlackjackEnv()
    wins = [env.reset(seed=EVAL_SEED_BASE + k) and env.step(STAND)[1] > 0 for k in range(n)]
    assert np.mean(wins) == always_stand  # the same deals, played by hand


def test_only_tasks_with_a_cheap_expert():
    assert expert_available(BLACKJACK)
    assert not expert_available(dataclasses.replace(BLACKJACK, expert=None))
    assert not expert_available(dataclasses.replace(BLACKJACK, slow_reset=True))
