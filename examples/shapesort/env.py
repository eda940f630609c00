"""The ShapeSort env: sort four coloured shapes, one per step, into the bin their colour belongs to (gymnasium).

Observation: a 300x300 RGB image: the item to sort (a red, green or blue circle, square or triangle) at the top,
grey dots for the items still waiting, and three bins (left, middle, right) holding small copies of the items
sorted so far. Colours and shapes are only in the image. The rule, stated in the prompt: red items go in the
left bin, green in the middle, blue in the right; the shape does not matter. Actions: Discrete(3), 0 left,
1 middle, 2 right. Reward +1 for the right bin, -1 for a wrong one; the episode ends (terminated) when all four
items are sorted. `info` holds the ground truth: "color", "shape" (of the item to sort), "left" (items after
it), "sorted" (how many went into the right bin so far).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from PIL import Image, ImageDraw

ITEMS = 4
COLORS = ("red", "green", "blue")
SHAPES = ("circle", "square", "triangle")
BINS = ("left", "middle", "right")
BIN_OF = {"red": 0, "green": 1, "blue": 2}
RGB = {"red": (220, 30, 30), "green": (20, 160, 40), "blue": (30, 70, 220)}
CANVAS = 300


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, color: str, cx: int, cy: int, r: int) -> None:
    fill = RGB[color]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


class ShapeSortEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    action_names = BINS

    def __init__(self, render_mode: str | None = "rgb_array"):
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(BINS))
        self.observation_space = spaces.Box(0, 255, (CANVAS, CANVAS, 3), dtype=np.uint8)
        self.items: list[tuple[str, str]] = []
        self.index = 0
        self.bins: list[list[tuple[str, str]]] = [[], [], []]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        colors = self.np_random.integers(len(COLORS), size=ITEMS)
        shapes = self.np_random.integers(len(SHAPES), size=ITEMS)
        self.items = [(COLORS[int(c)], SHAPES[int(s)]) for c, s in zip(colors, shapes)]
        self.index, self.bins, self.right = 0, [[], [], []], 0
        return self.render(), self._info()

    def step(self, action):
        if not self.action_space.contains(action) or self.index >= ITEMS:
            raise ValueError(f"ShapeSortEnv.step: invalid action {action!r} (actions {BINS}) or the game is over")
        color, shape = self.items[self.index]
        correct = int(action) == BIN_OF[color]
        self.bins[int(action)].append((color, shape))
        self.index += 1
        self.right += int(correct)
        terminated = self.index == ITEMS
        return self.render(), 1.0 if correct else -1.0, terminated, False, self._info()

    def render(self) -> np.ndarray:
        img = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        if self.index < ITEMS:
            color, shape = self.items[self.index]
            draw_shape(draw, shape, color, 150, 80, 45)
        for k in range(ITEMS - self.index - 1):  # the items still waiting after this one
            draw.ellipse((12 + 22 * k, 12, 28 + 22 * k, 28), fill=(150, 150, 150))
        for b in range(len(BINS)):
            x0 = 10 + 100 * b
            draw.rectangle((x0, 170, x0 + 80, 290), outline=(90, 90, 90), width=4)
            for k, (color, shape) in enumerate(self.bins[b]):
                draw_shape(draw, shape, color, x0 + 22 + 36 * (k % 2), 200 + 36 * (k // 2), 12)
        return np.asarray(img, dtype=np.uint8).copy()

    def _info(self) -> dict:
        color, shape = self.items[self.index] if self.index < ITEMS else ("", "")
        return {"color": color, "shape": shape, "left": max(ITEMS - self.index - 1, 0), "sorted": self.right}
