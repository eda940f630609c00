"""Card drawing (envs/cards.py): deterministic, every card distinct, red suits red, and the glyph fallback."""

from __future__ import annotations

import numpy as np
import pytest

from envs import cards
from envs.cards import CARD_SIZE, SUIT_SYMBOLS, SUITS, Card, has_glyph, render_back, render_card

DECK = [Card(rank, suit) for suit in SUITS for rank in range(1, 14)]
SIZES = [CARD_SIZE, (135, 189), (67, 93)]  # Blackjack, EZPoints, Points24


def pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def test_card_properties():
    assert [Card(r, "S").label for r in (1, 2, 10, 11, 12, 13)] == ["A", "2", "10", "J", "Q", "K"]
    assert [Card(r, "S").value for r in (1, 9, 10, 11, 12, 13)] == [1, 9, 10, 10, 10, 10]
    assert Card(5, "H").is_red and Card(5, "D").is_red and not Card(5, "S").is_red and not Card(5, "C").is_red
    assert Card(12, "D").to_info() == ("Q", "D")
    assert SUIT_SYMBOLS == {"S": "♠", "H": "♥", "D": "♦", "C": "♣"}


@pytest.mark.parametrize("size", SIZES)
def test_every_card_looks_different(size):
    images = {pixels(render_card(card, size)).tobytes() for card in DECK}
    assert len(images) == 52
    assert pixels(render_back(size)).tobytes() not in images


@pytest.mark.parametrize("size", SIZES)
def test_size_and_determinism(size):
    img = render_card(Card(12, "H"), size)
    assert img.size == size and img.mode == "RGB"
    np.testing.assert_array_equal(pixels(img), pixels(render_card(Card(12, "H"), size)))
    cards._card_face.cache_clear()  # drawn again from scratch: still the same pixels
    np.testing.assert_array_equal(pixels(img), pixels(render_card(Card(12, "H"), size)))


def test_returned_image_is_a_copy():
    img = render_card(Card(3, "C"))
    img.paste((0, 0, 0), (0, 0, 70, 98))
    assert (pixels(render_card(Card(3, "C")))[50, 5] == 255).all()


@pytest.mark.parametrize("suit, red", [("H", True), ("D", True), ("S", False), ("C", False)])
def test_suit_colours(suit, red):
    px = pixels(render_card(Card(7, suit), (135, 189))).reshape(-1, 3).astype(int)
    reddish = ((px[:, 0] > 150) & (px[:, 1] < 80) & (px[:, 2] < 80)).sum()
    dark = (px.max(1) < 60).sum()
    assert (reddish > 300) == red and (dark > 300) == (not red)


def test_white_face_and_dark_border():
    px = pixels(render_card(Card(5, "S")))
    assert (px[49, 2] == 255).all()  # a white face inside the border
    assert px[49, 0].max() < 200  # grey outline


def test_dejavu_has_the_suit_glyphs():
    assert all(has_glyph(symbol) for symbol in SUIT_SYMBOLS.values())
    assert not has_glyph("\U0010fffd")  # a private-use code point has no glyph


def test_polygon_suits_when_the_font_lacks_glyphs(monkeypatch):
    monkeypatch.setattr(cards, "has_glyph", lambda ch, size=20: False)
    cards._card_face.cache_clear()
    try:
        images = [pixels(render_card(Card(9, suit), (135, 189))) for suit in SUITS]
        assert len({img.tobytes() for img in images}) == 4
        for img, suit in zip(images, SUITS):
            centre = img[110:170, 40:95].reshape(-1, 3).astype(int)  # the big suit symbol
            coloured = (centre[:, 0] > 150) & (centre[:, 1] < 80) if suit in "HD" else centre.max(1) < 60
            assert coloured.sum() > 200, suit
    finally:
        cards._card_face.cache_clear()


def test_back_is_deterministic_and_mostly_red():
    back = pixels(render_back())
    np.testing.assert_array_equal(back, pixels(render_back()))
    inner = back[10:-10, 10:-10].reshape(-1, 3).astype(int)
    assert ((inner[:, 0] > 120) & (inner[:, 2] < 100)).mean() > 0.5


@pytest.mark.parametrize("card", [Card(0, "S"), Card(14, "H"), Card(5, "X")])
def test_not_a_card_raises(card):
    with pytest.raises(ValueError):
        render_card(card)
