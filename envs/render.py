"""Drawing helpers shared by the gym_cards envs: 300x300 canvases and DejaVu text, no downloaded assets.

The paper's envs use DejaVuSans(-Bold); matplotlib ships the same fonts, so we load them from there.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 300


@functools.cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    return ImageFont.truetype(str(path), size)


def blank_canvas(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), color)


def draw_text(img: Image.Image, xy: tuple[int, int], text: str, size: int, bold: bool = False, fill=(0, 0, 0)):
    ImageDraw.Draw(img).text(xy, text, font=font(size, bold), fill=fill)


def to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8).copy()
