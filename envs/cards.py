"""Playing cards drawn with PIL for the card tasks (EZPoints, Points24, Blackjack); no downloaded assets.

The paper pastes 52 PNG card faces and a card back (`img/{S}{R}.png`, `card.png`). We draw our own
instead: a white rounded card with the rank and suit in the top-left corner and a large rank and suit in
the middle, so a VLM can read the rank at the small Points24 size (67x93) as well as at the EZPoints size
(135x189). Hearts and diamonds are red. Suit symbols come from DejaVu Sans (which has U+2660-2667); if
a font ever lacks a glyph, a suit shape is drawn with polygons instead. Everything is a pure function of
(card, size), cached, so rendering is deterministic.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from PIL import Image, ImageDraw

from envs.render import font

SUITS = ("S", "H", "D", "C")
SUIT_SYMBOLS = {"S": "\u2660", "H": "\u2665", "D": "\u2666", "C": "\u2663"}
RANK_LABELS = {1: "A", 11: "J", 12: "Q", 13: "K"}
RED = (200, 16, 32)
BLACK = (20, 20, 20)
TABLE_GREEN = (0x35, 0x65, 0x4D)
"""The paper's table colour #35654d, the background of every card task."""
CARD_SIZE = (70, 98)
"""The paper's Blackjack card size (width, height); EZPoints and Points24 size cards to the canvas."""


class Card(NamedTuple):
    rank: int
    """1 (ace) .. 13 (king)."""
    suit: str
    """One of SUITS."""

    @property
    def label(self) -> str:
        return RANK_LABELS.get(self.rank, str(self.rank))

    @property
    def value(self) -> int:
        """Face cards count 10 in every task; the ace is 1 (Blackjack decides when it is 11)."""
        return min(self.rank, 10)

    @property
    def is_red(self) -> bool:
        return self.suit in ("H", "D")

    def to_info(self) -> tuple[str, str]:
        """(rank label, suit letter), the form the envs put into `info`."""
        return (self.label, self.suit)


# ---- drawing --------------------------------------------------------------------------------------------


@functools.cache
def _notdef_mask(size: int) -> bytes:
    return _glyph_mask("\U0010fffd", size)


def _glyph_mask(ch: str, size: int) -> bytes:
    img = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(img).text((0, 0), ch, font=font(size), fill=255)
    return img.tobytes()


@functools.cache
def has_glyph(ch: str, size: int = 20) -> bool:
    """Whether the font draws `ch` as itself rather than its "missing glyph" box."""
    return _glyph_mask(ch, size) != _notdef_mask(size)


def _draw_suit_shape(draw: ImageDraw.ImageDraw, suit: str, box: tuple[int, int, int, int], fill) -> None:
    """A polygon suit symbol inside `box`, used only when the font lacks the glyph."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, r = x0 + w / 2, w / 4
    if suit == "D":
        draw.polygon([(cx, y0), (x1, y0 + h / 2), (cx, y1), (x0, y0 + h / 2)], fill=fill)
    elif suit == "H":
        draw.ellipse([x0, y0, cx, y0 + 2 * r], fill=fill)
        draw.ellipse([cx, y0, x1, y0 + 2 * r], fill=fill)
        draw.polygon([(x0, y0 + r), (x1, y0 + r), (cx, y1)], fill=fill)
    elif suit == "S":
        draw.polygon([(cx, y0), (x1, y0 + 0.6 * h), (x0, y0 + 0.6 * h)], fill=fill)
        draw.ellipse([x0, y0 + 0.35 * h, cx, y0 + 0.35 * h + 2 * r], fill=fill)
        draw.ellipse([cx, y0 + 0.35 * h, x1, y0 + 0.35 * h + 2 * r], fill=fill)
        draw.polygon([(cx, y0 + 0.5 * h), (cx + r, y1), (cx - r, y1)], fill=fill)
    else:  # clubs
        draw.ellipse([cx - r, y0, cx + r, y0 + 2 * r], fill=fill)
        draw.ellipse([x0, y0 + 0.3 * h, x0 + 2 * r, y0 + 0.3 * h + 2 * r], fill=fill)
        draw.ellipse([x1 - 2 * r, y0 + 0.3 * h, x1, y0 + 0.3 * h + 2 * r], fill=fill)
        draw.polygon([(cx, y0 + 0.4 * h), (cx + r, y1), (cx - r, y1)], fill=fill)


def _draw_suit(draw: ImageDraw.ImageDraw, suit: str, xy: tuple[int, int], size: int, fill) -> None:
    symbol = SUIT_SYMBOLS[suit]
    if has_glyph(symbol, size):
        draw.text(xy, symbol, font=font(size), fill=fill)
    else:
        x, y = xy
        _draw_suit_shape(draw, suit, (x, y + size // 5, x + size * 4 // 5, y + size), fill)


def _text_width(text: str, size: int, bold: bool) -> int:
    left, _, right, _ = font(size, bold).getbbox(text)
    return right - left


def _draw_corner(draw: ImageDraw.ImageDraw, card: Card, xy: tuple[int, int], size: int, fill) -> None:
    x, y = xy
    draw.text((x, y), card.label, font=font(size, True), fill=fill)
    _draw_suit(draw, card.suit, (x, y + size), size, fill)


@functools.cache
def _card_face(card: Card, size: tuple[int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(2, w // 12), outline=(90, 90, 90), width=1)
    fill = RED if card.is_red else BLACK
    corner = max(8, w // 6)
    # one corner index only: a real card's upside-down second index turns a 9 into a 6 for a model
    _draw_corner(draw, card, (max(2, w // 18), max(2, h // 30)), corner, fill)
    # the big centre rank is what a model has to read, so it gets most of the card
    big = max(10, int(w * (0.36 if len(card.label) > 1 else 0.45)))
    big_xy = ((w - _text_width(card.label, big, True)) // 2, int(h * 0.22))
    draw.text(big_xy, card.label, font=font(big, True), fill=fill)
    suit_size = max(10, int(w * 0.34))
    _draw_suit(draw, card.suit, ((w - suit_size * 4 // 5) // 2, int(h * 0.55)), suit_size, fill)
    return img


def render_card(card: Card, size: tuple[int, int] = CARD_SIZE) -> Image.Image:
    """The card's face, `size` = (width, height). A fresh copy, so callers may draw on it."""
    if card.suit not in SUITS or not 1 <= card.rank <= 13:
        raise ValueError(f"not a card: {card!r}")
    return _card_face(card, tuple(size)).copy()


@functools.cache
def _card_back(size: tuple[int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(2, w // 12), outline=(90, 90, 90), width=1)
    m = max(3, w // 14)
    draw.rectangle([m, m, w - 1 - m, h - 1 - m], fill=(150, 24, 36))
    # a diagonal lattice: clearly a card back, never mistaken for a face
    step = max(4, w // 8)
    for k in range(-h, w + h, step):
        draw.line([(k, m), (k + h, m + h)], fill=(230, 200, 200), width=1)
        draw.line([(k, h - 1 - m), (k + h, h - 1 - m - h)], fill=(230, 200, 200), width=1)
    draw.rectangle([0, 0, w - 1, m - 1], fill=(255, 255, 255))
    draw.rectangle([0, h - m, w - 1, h - 1], fill=(255, 255, 255))
    draw.rectangle([0, 0, m - 1, h - 1], fill=(255, 255, 255))
    draw.rectangle([w - m, 0, w - 1, h - 1], fill=(255, 255, 255))
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(2, w // 12), outline=(90, 90, 90), width=1)
    return img


def render_back(size: tuple[int, int] = CARD_SIZE) -> Image.Image:
    """The face-down card (the dealer's hole card in Blackjack)."""
    return _card_back(tuple(size)).copy()
