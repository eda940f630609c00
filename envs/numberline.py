"""NumberLine: move the current number to the target by adding or subtracting one (RL4VLM gym_cards).

## Description
A white 300x300 image shows "Target: g" and "Current: c" with g, c in [0, 5]. The agent sees only the image.
Rules follow the paper's code (spec §8.2), with the later fix that a start equal to the target is redrawn in
`reset` (the paper-time code moved the goal after the first step instead).

## Action Space
Discrete(2): 0 = "-" (c - 1, blocked at 0), 1 = "+" (c + 1, blocked at 5).

## Observation Space
Box(0, 255, (300, 300, 3), uint8): the rendered image.

## Rewards
+1 on reaching the target (terminates); -1 if the distance did not decrease (a blocked move included); else 0.

## Episode End
Terminated on reaching the target; truncated when step 10 (= 2 * max_position) ends elsewhere.

## Information
`info` has "target" and "current" (ground truth, for SFT data and tests; never shown to the policy).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.actions import check_action
from envs.render import blank_canvas, draw_text, to_array

MAX_POSITION = 5


class NumberLineEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_names = ("-", "+")

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0, 255, (300, 300, 3), dtype=np.uint8)
        self.target = 0
        self.current = 0
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.current = int(self.np_random.integers(0, MAX_POSITION + 1))
        self.target = int(self.np_random.integers(0, MAX_POSITION + 1))
        if self.target == self.current:
            self.target = (self.target + 1) % MAX_POSITION
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action):
        check_action(self, action)
        before = abs(self.current - self.target)
        if action == 0:
            self.current = max(self.current - 1, 0)
        else:
            self.current = min(self.current + 1, MAX_POSITION)
        self.steps += 1
        after = abs(self.current - self.target)
        terminated = after == 0
        reward = 1.0 if terminated else (-1.0 if after >= before else 0.0)
        truncated = not terminated and self.steps >= 2 * MAX_POSITION
        return self._obs(), reward, terminated, truncated, self._info()

    def render(self):
        img = blank_canvas((255, 255, 255))
        draw_text(img, (30, 60), f"Target: {self.target}", size=36, bold=True)
        draw_text(img, (30, 180), f"Current: {self.current}", size=36, bold=True)
        return to_array(img)

    def _obs(self) -> np.ndarray:
        return self.render()

    def _info(self) -> dict:
        return {"target": self.target, "current": self.current}
