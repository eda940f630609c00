"""NumberLine env: gymnasium API, determinism, reward/termination rules (spec §8.2, §14) and rendering."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.numberline import MAX_POSITION, NumberLineEnv

MINUS, PLUS = 0, 1


def make(current: int, target: int, steps: int = 0) -> NumberLineEnv:
    """An env reset once, then forced into the given state."""
    env = NumberLineEnv()
    env.reset(seed=0)
    env.current, env.target, env.steps = current, target, steps
    return env


class ConstantRng:
    """Stands in for env.np_random: every integers() call returns `value`."""

    def __init__(self, value: int):
        self.value = value

    def integers(self, low, high=None, *args, **kwargs):
        return self.value


def test_check_env_passes():
    env = NumberLineEnv()
    check_env(env.unwrapped, skip_render_check=True)


def test_spaces():
    env = NumberLineEnv()
    assert env.action_space.n == 2
    assert env.observation_space.shape == (300, 300, 3)
    assert env.observation_space.dtype == np.uint8
    assert NumberLineEnv.action_names == ("-", "+")


def test_same_seed_gives_identical_rollouts(assert_same_seed_same_rollout):
    actions = [PLUS, MINUS, PLUS, PLUS, MINUS, MINUS, PLUS, PLUS, PLUS, MINUS, PLUS, PLUS]
    assert_same_seed_same_rollout(NumberLineEnv, 1234, actions)
    # different seeds should not all give the same start (sanity that the seed is used)
    starts = {tuple(NumberLineEnv().reset(seed=s)[1].values()) for s in range(30)}
    assert len(starts) > 5


def test_reaching_goal_gives_plus_one_and_terminates():
    env = make(current=2, target=4)
    _, r, term, trunc, info = env.step(PLUS)
    assert (r, term, trunc, info) == (0.0, False, False, {"target": 4, "current": 3})
    _, r, term, trunc, info = env.step(PLUS)
    assert (r, term, trunc, info) == (1.0, True, False, {"target": 4, "current": 4})


def test_goal_reached_downwards():
    env = make(current=1, target=0)
    _, r, term, trunc, info = env.step(MINUS)
    assert (r, term, trunc, info["current"]) == (1.0, True, False, 0)


def test_moving_away_gives_minus_one():
    env = make(current=2, target=4)
    _, r, term, trunc, info = env.step(MINUS)
    assert (r, term, trunc, info["current"]) == (-1.0, False, False, 1)


def test_blocked_move_at_zero_gives_minus_one():
    env = make(current=0, target=3)
    _, r, term, trunc, info = env.step(MINUS)
    assert (r, term, trunc, info["current"]) == (-1.0, False, False, 0)


def test_blocked_move_at_five_gives_minus_one():
    env = make(current=5, target=2)
    _, r, term, trunc, info = env.step(PLUS)
    assert (r, term, trunc, info["current"]) == (-1.0, False, False, 5)


STATES = [(c, t) for c in range(MAX_POSITION + 1) for t in range(MAX_POSITION + 1) if c != t]


@pytest.mark.parametrize("current, target", STATES)
@pytest.mark.parametrize("action", [MINUS, PLUS])
def test_reward_table(current, target, action):
    env = make(current, target)
    _, r, term, trunc, info = env.step(action)
    new = max(current - 1, 0) if action == MINUS else min(current + 1, MAX_POSITION)
    if new == target:
        expected = 1.0
    elif abs(new - target) < abs(current - target):
        expected = 0.0
    else:
        expected = -1.0
    assert info == {"target": target, "current": new}
    assert (r, term, trunc) == (expected, new == target, False)


def test_truncates_exactly_at_step_ten():
    env = make(current=0, target=3)
    for step in range(1, 11):
        _, r, term, trunc, _ = env.step(MINUS)  # blocked at 0 every time
        assert r == -1.0 and term is False
        assert trunc is (step == 10), f"step {step}"


def test_reaching_goal_on_step_ten_terminates_not_truncates():
    env = make(current=0, target=1)
    for _ in range(9):
        _, _, term, trunc, _ = env.step(MINUS)
        assert not term and not trunc
    _, r, term, trunc, info = env.step(PLUS)
    assert (r, term, trunc, info["current"]) == (1.0, True, False, 1)


def test_reset_never_starts_on_target():
    env = NumberLineEnv()
    seen_targets, seen_currents = set(), set()
    for seed in range(600):
        _, info = env.reset(seed=seed)
        assert info["current"] != info["target"]
        assert 0 <= info["current"] <= 5 and 0 <= info["target"] <= 5
        seen_targets.add(info["target"])
        seen_currents.add(info["current"])
    assert seen_targets == set(range(6)) and seen_currents == set(range(6))
    assert env.steps == 0


@pytest.mark.parametrize("value, redrawn", [(0, 1), (2, 3), (4, 0), (5, 1)])
def test_equal_draw_redraws_goal_plus_one_mod_five(value, redrawn):
    env = NumberLineEnv()
    env.reset(seed=0)
    env.np_random = ConstantRng(value)
    _, info = env.reset()  # no seed: keeps our stub generator
    assert info == {"current": value, "target": redrawn}


def test_observation_shape_dtype_and_matches_render():
    env = NumberLineEnv()
    obs, _ = env.reset(seed=3)
    assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, env.render())
    obs2, *_ = env.step(PLUS)
    assert obs2.shape == (300, 300, 3) and obs2.dtype == np.uint8


def test_each_state_renders_a_different_image():
    env = NumberLineEnv()
    images = {}
    for t in range(6):
        for c in range(6):
            env.target, env.current = t, c
            images[(t, c)] = env.render().tobytes()
    assert len(set(images.values())) == 36


def test_white_background_with_black_text_in_two_lines():
    env = make(current=1, target=4)
    img = env.render()
    white = (img == 255).all(-1)
    assert white.mean() > 0.85  # mostly white background
    for y, x in [(0, 0), (0, 299), (299, 0), (299, 299), (150, 150)]:
        assert img[y, x].tolist() == [255, 255, 255]
    assert white[:55].all() and white[240:].all()  # nothing drawn above "Target" or below "Current"
    dark = (img < 128).all(-1)
    assert dark[55:120].any() and dark[170:240].any()  # the two text lines
    assert not dark[:, :25].any()  # text starts at x=30
