"""Blackjack env (spec §8.5, §14): gymnasium API, seeding, the rules against gymnasium's own Blackjack-v1 on
the same cards, each rule by hand, and the paper's picture layout."""

from __future__ import annotations

import gymnasium.envs.toy_text.blackjack as gym_blackjack
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import make_env, resolve_task
from envs.blackjack import ACTION_NAMES, HIT, STAND, BlackjackEnv, hand_total, score
from envs.builtin import paper_parser
from envs.cards import TABLE_GREEN, Card
from envs.experts import blackjack_expert


def make(player: list[int], dealer: list[int], deck: list[int] = ()) -> BlackjackEnv:
    """An env whose hands hold these ranks and whose next cards come from `deck` (ranks, in order)."""
    env = BlackjackEnv()
    env.reset(seed=0)
    env.player = [Card(r, "S") for r in player]
    env.dealer = [Card(r, "H") for r in dealer]
    cards = iter(deck)
    env._draw_card = lambda: Card(next(cards), "C")
    return env


def test_check_env_passes():
    check_env(BlackjackEnv().unwrapped, skip_render_check=True)


def test_spaces_and_registry():
    env = BlackjackEnv()
    assert env.action_space.n == 2 and ACTION_NAMES == ("stand", "hit") and (STAND, HIT) == (0, 1)
    assert env.observation_space.shape == (300, 300, 3)
    assert resolve_task("blackjack").action_names == ACTION_NAMES
    assert resolve_task("blackjack").parse is paper_parser
    assert isinstance(make_env("blackjack"), BlackjackEnv)


def test_same_seed_same_rollout(assert_same_seed_same_rollout):
    assert_same_seed_same_rollout(BlackjackEnv, 5, [HIT, HIT, STAND, HIT, STAND, STAND, HIT, HIT, HIT, STAND] * 3)
    hands = {str(BlackjackEnv().reset(seed=s)[1]["player_hand"]) for s in range(30)}
    assert len(hands) > 20


@pytest.mark.parametrize("seed", range(40))
def test_same_cards_same_outcome_as_gymnasium(seed, monkeypatch):
    """Feed both envs the same card sequence and the same random actions; every step must agree."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, 14, size=40).tolist()
    values = iter(min(r, 10) for r in ranks)
    monkeypatch.setattr(gym_blackjack, "draw_card", lambda np_random: next(values))
    theirs = gym_blackjack.BlackjackEnv(natural=False, sab=False)
    ours = BlackjackEnv()
    ours_cards = iter(ranks)
    ours._draw_card = lambda: Card(next(ours_cards), "S")
    (p, d, ace), _ = theirs.reset(seed=seed)
    _, info = ours.reset(seed=seed)
    assert (info["player_sum"], info["dealer_card"], info["usable_ace"]) == (p, d, bool(ace))
    hit_prob = rng.uniform(0.2, 0.9)
    for _ in range(20):
        action = HIT if rng.random() < hit_prob else STAND
        (p, d, ace), r_theirs, t_theirs, _, _ = theirs.step(action)
        _, r_ours, t_ours, trunc, info = ours.step(action)
        assert (r_ours, t_ours, trunc) == (r_theirs, t_theirs, False)
        assert (info["player_sum"], info["dealer_card"], info["usable_ace"]) == (p, d, bool(ace))
        assert [min(c.rank, 10) for c in ours.dealer] == theirs.dealer
        if t_ours:
            break


def test_hand_total_and_score():
    assert hand_total([1, 6]) == (17, True)  # soft 17
    assert hand_total([1, 6, 10]) == (17, False)
    assert hand_total([1, 1, 9]) == (21, True)  # only one ace counts 11
    assert hand_total([10, 10, 2]) == (22, False)
    assert score([10, 10, 2]) == 0 and score([10, 9]) == 19


def test_reaching_21_after_a_hit_does_not_end_the_episode():
    env = make(player=[10, 5], dealer=[10, 7], deck=[6, 3])
    _, r, term, trunc, info = env.step(HIT)
    assert (r, term, trunc, info["player_sum"]) == (0.0, False, False, 21)
    _, r, term, _, info = env.step(HIT)  # 24: bust
    assert (r, term, info["player_sum"]) == (-1.0, True, 24)


def test_bust_loses_at_once_and_dealer_does_not_draw():
    env = make(player=[10, 6], dealer=[10, 2], deck=[9])
    _, r, term, _, info = env.step(HIT)
    assert (r, term) == (-1.0, True)
    assert len(info["dealer_hand"]) == 2


def test_dealer_stands_on_soft_17():
    env = make(player=[10, 8], dealer=[1, 6], deck=[])  # any draw would raise StopIteration
    _, r, term, _, info = env.step(STAND)
    assert (r, term, len(info["dealer_hand"])) == (1.0, True, 2)


def test_dealer_draws_to_17_and_can_bust():
    env = make(player=[10, 8], dealer=[10, 6], deck=[10])
    assert env.step(STAND)[1:3] == (1.0, True)  # dealer 26: bust
    env = make(player=[10, 8], dealer=[2, 3], deck=[2, 3, 10])  # 5 -> 7 -> 10 -> 20
    _, r, _, _, info = env.step(STAND)
    assert r == -1.0 and len(info["dealer_hand"]) == 5


@pytest.mark.parametrize(
    "player, dealer, deck, reward",
    [
        ([10, 8], [10, 8], [], 0.0),  # tie
        ([10, 7], [10, 8], [], -1.0),
        ([1, 13], [10, 7], [], 1.0),  # a natural wins 1, no 1.5 bonus (natural=False)
        ([1, 13], [10, 6], [5], 0.0),  # a natural against a drawn 21 is a tie
        ([10, 2], [10, 6], [10], 1.0),  # a low total wins when the dealer busts
    ],
)
def test_stand_outcomes(player, dealer, deck, reward):
    env = make(player, dealer, deck)
    assert env.step(STAND)[1:4] == (reward, True, False)


def test_info_uses_values_and_hands():
    env = make(player=[1, 12], dealer=[13, 5])
    env.player[1] = Card(12, "D")
    info = env._info()
    assert info == {
        "player_sum": 21,
        "dealer_card": 10,
        "usable_ace": True,
        "player_hand": [("A", "S"), ("Q", "D")],
        "dealer_hand": [("K", "H"), ("5", "H")],
    }


def test_basic_strategy_beats_always_stand():
    def win_rate(policy, episodes=1500):
        env, wins = BlackjackEnv(), 0
        env.render = lambda: np.zeros((300, 300, 3), np.uint8)  # speed: the picture is not needed here
        for seed in range(episodes):
            _, info = env.reset(seed=seed)
            while True:
                _, r, term, _, info = env.step(policy(info))
                if term:
                    break
            wins += r > 0
        return wins / episodes

    expert = win_rate(blackjack_expert)
    assert 0.39 < expert < 0.47  # about 43 % with hit/stand basic strategy
    assert expert > win_rate(lambda info: STAND) + 0.02


def test_render_layout():
    env = make(player=[10, 5, 2, 1, 3], dealer=[13, 5])
    img = env.render()
    assert img.shape == (300, 300, 3) and img[299, 299].tolist() == list(TABLE_GREEN)
    assert (img[60, 10] == 255).all()  # dealer up-card at (5, 25), white face
    back = img[30:118, 85:140]
    assert (back[..., 0] > 120).mean() > 0.4 and (back[..., 2] < 100).mean() > 0.4  # red card back at (78, 25)
    for x in (6, 80, 154, 228):  # player cards at x = 5 + 74 i from y = 150
        assert (img[200, x] == 255).all()
    assert (img[130:150, 5:60] == 255).all(-1).any() and (img[5:22, 5:60] == 255).all(-1).any()  # labels
    assert (img[125:149, 150:300] == TABLE_GREEN).all()  # nothing else between the rows
    # the fifth card starts at x = 301, off the canvas, exactly as in the paper
    env4 = make(player=[10, 5, 2, 1], dealer=[13, 5])
    np.testing.assert_array_equal(env4.render(), img)


def test_hole_card_is_never_shown():
    a = make(player=[10, 5], dealer=[13, 5]).render()
    b = make(player=[10, 5], dealer=[13, 9]).render()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make(player=[10, 5], dealer=[12, 5]).render())  # the up-card is
    assert not np.array_equal(a, make(player=[10, 6], dealer=[13, 5]).render())
