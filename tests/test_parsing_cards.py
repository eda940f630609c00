"""The paper's parser (spec §4, §14) on the card tasks' action sets, with the registry that feeds it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import TASKS, make_env
from envs.parsing import ParsedAction, parse_action


def parse(task: str, text, seed: int = 0) -> ParsedAction:
    spec = TASKS[task]
    return parse_action(text, spec.action_names, np.random.default_rng(seed), ten_rule=spec.ten_rule)


def ok(task: str, name: str) -> ParsedAction:
    return ParsedAction(TASKS[task].action_names.index(name), True, "ok")


# ---- registry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["numberline", "ezpoints", "points24", "blackjack"])
def test_registry_matches_the_envs(task):
    env = make_env(task)
    assert TASKS[task].name == task
    assert tuple(env.action_names) == TASKS[task].action_names
    assert env.action_space.n == len(TASKS[task].action_names)
    assert TASKS[task].ten_rule == (task in ("ezpoints", "points24"))


def test_action_lists_are_the_papers():
    numbers = tuple(str(n) for n in range(1, 11))
    assert TASKS["ezpoints"].action_names == (*numbers, "+", "*", "=")
    assert TASKS["points24"].action_names == (*numbers, "+", "-", "*", "/", "(", ")", "=")
    assert TASKS["blackjack"].action_names == ("stand", "hit")


# ---- Blackjack -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, name",
    [
        (' {\n "thoughts": "I have 15 and the dealer shows 10.", \n"action": "hit" \n}', "hit"),
        ('{"thoughts": "hit or stand? I hit.", "action": "stand"}', "stand"),  # text before the marker is cut
        ('{"ACTION": "HIT"}', "hit"),  # lower-cased first
        ('"action": "Hit me"', "hit"),
        ('"action": "white"', "hit"),  # a plain substring test, as in the paper: "white" contains "hit"
    ],
)
def test_blackjack_single_action(text, name):
    assert parse("blackjack", text) == ok("blackjack", name)


@pytest.mark.parametrize(
    "text, reason",
    [
        ('"action": "stand" or "hit"', "ambiguous"),
        ('"action": "stand", "thoughts": "never hit"', "ambiguous"),
        ('"action": "double down"', "no_match"),
        ("I should stand", "no_match"),  # no marker: only the last character "d" is kept
        ("", "no_match"),
    ],
)
def test_blackjack_fallbacks(text, reason):
    out = parse("blackjack", text)
    assert (out.valid, out.reason) == (False, reason) and out.action in (0, 1)


def test_blackjack_has_no_ten_rule():
    # "10" has no meaning in Blackjack: it is neither found nor removed
    assert parse("blackjack", '"action": "hit", "total": 10') == ok("blackjack", "hit")


# ---- EZPoints and Points24 ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["ezpoints", "points24"])
@pytest.mark.parametrize(
    "text, name",
    [
        ('{"cards": [10, 2], "current formula": "10+", "thoughts": "append 2", "action": "2"}', "2"),
        ('"action": "10"', "10"),
        ('"action": "100"', "10"),  # "10" is removed, "0" is no action: still 10
        ('"action": "1010"', "10"),
        ('"action": "="', "="),
        ('"action": "*"', "*"),
        ('"action": "+" \n}', "+"),
        ('{"thoughts": "2*6=12 is complete", "action": "="}', "="),
        ("no marker, the last character is 7", "7"),
    ],
)
def test_formula_tasks_single_action(task, text, name):
    assert parse(task, text) == ok(task, name)


@pytest.mark.parametrize("task", ["ezpoints", "points24"])
@pytest.mark.parametrize(
    "text",
    ['"action": "110"', '"action": "12"', '"action": "10+"', '"action": "2" or "3"', '"action": "1" or "+"'],
)
def test_formula_tasks_ambiguous(task, text):
    out = parse(task, text)
    assert (out.valid, out.reason) == (False, "ambiguous")
    assert 0 <= out.action < len(TASKS[task].action_names)


@pytest.mark.parametrize(
    "text, name",
    [('"action": "("', "("), ('"action": ")"', ")"), ('"action": "-"', "-"), ('"action": "/"', "/")],
)
def test_points24_operators_and_brackets(text, name):
    assert parse("points24", text) == ok("points24", name)
    out = parse("ezpoints", text)  # not EZPoints actions
    assert (out.valid, out.reason) == (False, "no_match")


@pytest.mark.parametrize("text", ['"action": "(10"', '"action": "-1"', '"action": "10)"', '"action": "8/3"'])
def test_points24_mixed_tokens_are_ambiguous(text):
    out = parse("points24", text)
    assert (out.valid, out.reason) == (False, "ambiguous")


@pytest.mark.parametrize("task", ["ezpoints", "points24"])
def test_echoed_template_is_no_match(task):
    out = parse(task, '"action": "{number}" or "{operator}" \n \\}')
    assert (out.valid, out.reason) == (False, "no_match")


def test_ten_at_the_end_without_marker():
    # no marker keeps only "0": no action, even though "10" was meant
    out = parse("points24", "my answer is 10")
    assert (out.valid, out.reason) == (False, "no_match")


def test_first_marker_wins():
    out = parse("points24", '"action": "(", "action": ")"')
    assert (out.valid, out.reason) == (False, "ambiguous")
    assert parse("ezpoints", '"action": "=" "action":') == ok("ezpoints", "=")


# ---- properties --------------------------------------------------------------------------------------

SAFE = st.text(st.characters(blacklist_categories=("Cs", "Nd"), blacklist_characters='+-*/()="\\'), max_size=60)


@settings(max_examples=200, deadline=None)
@given(SAFE, st.sampled_from(TASKS["points24"].action_names))
def test_wellformed_points24_json_parses(thoughts, name):
    text = '{"thoughts": "' + thoughts + '", "action": "' + name + '"}'
    assert parse("points24", text) == ok("points24", name)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60).filter(lambda t: "hit" not in t.lower() and "stand" not in t.lower()))
def test_wellformed_blackjack_json_parses(thoughts):
    for name in ("stand", "hit"):
        text = '{"thoughts": "' + thoughts + '", "action": "' + name + '"}'
        assert parse("blackjack", text) == ok("blackjack", name)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.text(max_size=80), st.none(), st.integers()),
    st.sampled_from(sorted(t for t in TASKS if not TASKS[t].text_actions)),
)
def test_any_input_gives_an_action_in_range(text, task):
    out = parse(task, text)
    assert 0 <= out.action < len(TASKS[task].action_names)
    assert out.valid == (out.reason == "ok")
