"""envs/parsing.py: the paper's text -> action parser (spec §4, §14) on tricky strings for every task's action
set, ALFWorld's command matching, the learner's CoT/action split, and property tests.

The built-in Tasks that feed the parser their action names are tested in tests/test_envs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import BUILTIN_TASKS, resolve_task
from envs.parsing import ACTION_MARKER, ParsedAction, action_start_index, parse_action, parse_command

NL = ("-", "+")
EZP = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "*", "=")


def nl(text, seed=0):
    return parse_action(text, NL, np.random.default_rng(seed))


def ezp(text, seed=0):
    return parse_action(text, EZP, np.random.default_rng(seed), ten_rule=True)


def parse(task: str, text, seed: int = 0) -> ParsedAction:
    spec = resolve_task(task)
    return spec.parse(text, spec.action_names, np.random.default_rng(seed))


def ok(task: str, name: str) -> ParsedAction:
    return ParsedAction(resolve_task(task).action_names.index(name), True, "ok")


def test_marker_constant():
    assert ACTION_MARKER == '"action":'


@pytest.mark.parametrize(
    "text, action",
    [
        ('{"thoughts": "3 is smaller than 5", "action": "+"}', 1),
        ('{"thoughts": "5 is larger than 3", "action": "-"}', 0),
        (' {\n "current number": "1", \n"target number": "0", \n"action": "-" \n}', 0),
        ('"action":"+"', 1),
        ('"action": +', 1),
    ],
)
def test_marker_with_one_action_is_valid(text, action):
    assert nl(text) == ParsedAction(action, True, "ok")


def test_text_before_marker_is_ignored():
    # "-" and "+" before the marker do not count: the string is cut at the marker.
    assert nl('thoughts: 5 - 3 = 2, not 3 + 1. "action": "+"') == ParsedAction(1, True, "ok")
    assert nl('I said "+" earlier. "action": "-"}') == ParsedAction(0, True, "ok")


@pytest.mark.parametrize("text", ['"action": "-" or "+"', '"action": "+-"', '{"action": "-"} then +'])
def test_both_actions_after_marker_is_ambiguous(text):
    out = nl(text)
    assert out.valid is False and out.reason == "ambiguous"
    assert out.action in (0, 1)


def test_no_marker_keeps_only_last_character():
    assert nl("I will subtract - no, add one: +") == ParsedAction(1, True, "ok")
    assert nl("+ is wrong, so -") == ParsedAction(0, True, "ok")
    # last char is "." -> nothing found, even though both symbols appear earlier
    out = nl("choose - or + then stop.")
    assert (out.valid, out.reason) == (False, "no_match")
    # a single "action" without the colon-quote marker form is not a marker
    out = nl('"action" "+"}')
    assert (out.valid, out.reason) == (False, "no_match")


def test_empty_string_is_no_match():
    out = nl("")
    assert (out.valid, out.reason) == (False, "no_match")
    assert out.action in (0, 1)


def test_uppercase_marker_is_found():
    assert nl('{"ACTION": "+"}') == ParsedAction(1, True, "ok")
    assert nl('{"Action": "-"}') == ParsedAction(0, True, "ok")


def test_first_marker_is_used():
    # everything after the FIRST marker is searched; a parser using the last marker would return "-", valid
    out = nl('"action": "+", "action": "-"')
    assert (out.valid, out.reason) == (False, "ambiguous")
    # the second marker has nothing after it; the first cut still sees "+"
    assert nl('"action": "+" "action":') == ParsedAction(1, True, "ok")


@pytest.mark.parametrize("text", [None, 42, 3.5, b'"action": "+"', ['"action": "+"']])
def test_non_string_is_not_text(text):
    out = nl(text)
    assert (out.valid, out.reason) == (False, "not_text")
    assert out.action in (0, 1)


def test_random_fallback_in_range_and_reproducible():
    texts = ['"action": "-+"', "", None, "nothing here."]
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = [parse_action(texts[i % 4], NL, rng_a).action for i in range(200)]
    b = [parse_action(texts[i % 4], NL, rng_b).action for i in range(200)]
    assert a == b
    # each fallback is one rng.integers(2) draw, so the sequence is the generator's own
    expected_rng = np.random.default_rng(7)
    assert a == [int(expected_rng.integers(2)) for _ in range(200)]
    assert set(a) == {0, 1}
    out = parse_action(None, EZP, np.random.default_rng(3), ten_rule=True)
    assert 0 <= out.action < len(EZP)


def test_valid_parse_does_not_consume_randomness():
    rng = np.random.default_rng(11)
    nl_rng_state = rng.bit_generator.state
    parse_action('"action": "+"', NL, rng)
    assert rng.bit_generator.state == nl_rng_state


# ---- EZPoints-style names with the "10" rule ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, name",
    [
        ('{"action": "10"}', "10"),
        ('{"action": "1010"}', "10"),  # every "10" is deleted, nothing is left over
        ('{"action": "10", "10"}', "10"),
        ('{"action": "1"}', "1"),
        ('{"action": "9"}', "9"),
        ('{"action": "+"}', "+"),
        ('{"action": "="}', "="),
        ('{"cards": [10, 2], "formula": "10+2", "action": "*"}', "*"),
    ],
)
def test_ten_rule_single_names(text, name):
    assert ezp(text) == ParsedAction(EZP.index(name), True, "ok")


def test_ten_rule_without_marker_last_char():
    # only "0" is kept, which is no action name
    assert (ezp("the answer is 10").valid, ezp("the answer is 10").reason) == (False, "no_match")
    assert ezp("the answer is 7") == ParsedAction(EZP.index("7"), True, "ok")


def test_ten_rule_1100_is_ambiguous():
    # "1100" -> found {"10"}; deleting "10" leaves "10" again, which contains "1" (and "10") -> 2 names
    out = ezp('"action": "1100"')
    assert (out.valid, out.reason) == (False, "ambiguous")


@pytest.mark.parametrize("text", ['"action": "110"', '"action": "12"', '"action": "10" or "="', '"action": "1+"'])
def test_ten_rule_ambiguous_cases(text):
    out = ezp(text)
    assert (out.valid, out.reason) == (False, "ambiguous")
    assert 0 <= out.action < len(EZP)


def test_ten_needs_the_rule():
    # without the rule "10" also contains "1": two names match
    out = parse_action('"action": "10"', EZP, np.random.default_rng(0), ten_rule=False)
    assert (out.valid, out.reason) == (False, "ambiguous")


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
    assert 0 <= out.action < len(resolve_task(task).action_names)


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


# ---- ALFWorld (spec §4, with the exact-command fix of issue 4) ---------------------------------------------
ADMISSIBLE = ["go to cabinet 1", "go to cabinet 10", "open cabinet 1", "take mug 1 from cabinet 1"]


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ('{"thoughts": "...", "action": "go to cabinet 10"}', "go to cabinet 10"),  # not "go to cabinet 1"
        ('{"thoughts": "...", "action": "go to cabinet 1"}', "go to cabinet 1"),
        ('"action": "Open Cabinet 1"', "open cabinet 1"),  # lower-cased like the paper
        ('"action": I will go to cabinet 10 now', "go to cabinet 10"),  # unquoted: whole-phrase match
        ("blah blah take mug 1 from cabinet 1", "take mug 1 from cabinet 1"),  # no marker: the last 30 chars
    ],
)
def test_alfworld_command_parsing(text, command):
    parsed = parse_command(text, ADMISSIBLE, np.random.default_rng(0))
    assert parsed.valid and parsed.command == command and parsed.action == ADMISSIBLE.index(command)


def test_alfworld_unmatched_text_goes_to_the_env_raw():
    parsed = parse_command('{"action": "fly to the moon"}', ADMISSIBLE, np.random.default_rng(0))
    assert (parsed.valid, parsed.reason, parsed.action, parsed.command) == (False, "no_match", -1, "fly to the moon")


@pytest.mark.parametrize("text", ["", "   ", None])
def test_alfworld_empty_text_is_a_random_admissible_command(text):
    parsed = parse_command(text, ADMISSIBLE, np.random.default_rng(0))
    assert parsed.reason == "empty" and not parsed.valid and parsed.command in ADMISSIBLE


# ---- action_start_index: the learner's CoT/action split over a response's decoded tokens ----------------------
def test_action_start_marker_single_token():
    assert action_start_index(['{"thoughts": "x", ', '"action":', ' "+"', "}"]) == 1


def test_action_start_marker_split_across_tokens():
    # '{' + '"' + 'act' + 'ion":' -> marker starts at the '"' token
    assert action_start_index(["{", '"', "act", 'ion":', ' "', "-", '"}']) == 1


def test_action_start_marker_glued_to_neighbours():
    assert action_start_index(['{"thoughts": "ok",', ' "action": "', "+", '"}']) == 1
    # the marker's opening quote is the last char of token 0
    assert action_start_index(['ok, "', 'action":', ' "+"']) == 0


def test_action_start_last_marker_counts():
    toks = ['"action":', ' "-"', ", ", '"action":', ' "+"', "</s>"]
    assert action_start_index(toks) == 3
    assert action_start_index(['"action": "-", "action": "+"']) == 0  # both inside one token


def test_action_start_absent_returns_len():
    assert action_start_index(["{", '"thoughts"', ': "x"}']) == 3
    assert action_start_index(['"Action":', ' "+"']) == 2  # case-sensitive, as the token match
    assert action_start_index([]) == 0


# ---- properties --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(), st.booleans())
def test_any_text_never_raises_and_is_in_range(text, ten):
    names = EZP if ten else NL
    out = parse_action(text, names, np.random.default_rng(0), ten_rule=ten)
    assert isinstance(out.action, int) and 0 <= out.action < len(names)
    assert out.valid == (out.reason == "ok")
    assert out.reason in ("ok", "no_match", "ambiguous")


NL_SAFE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='-+"\\'), max_size=80)
EZP_SAFE = st.text(
    st.characters(blacklist_categories=("Cs", "Nd"), blacklist_characters='+*="\\0123456789'), max_size=80
)


@settings(max_examples=200, deadline=None)
@given(NL_SAFE, st.sampled_from(NL))
def test_wellformed_json_parses_to_its_action(thoughts, a):
    text = '{"thoughts": "' + thoughts + '", "action": "' + a + '"}'
    assert nl(text) == ParsedAction(NL.index(a), True, "ok")


@settings(max_examples=200, deadline=None)
@given(EZP_SAFE, st.sampled_from(EZP))
def test_wellformed_json_parses_to_its_action_ezpoints(thoughts, a):
    text = '{"thoughts": "' + thoughts + '", "action": "' + a + '"}'
    assert ezp(text) == ParsedAction(EZP.index(a), True, "ok")


SAFE = st.text(st.characters(blacklist_categories=("Cs", "Nd"), blacklist_characters='+-*/()="\\'), max_size=60)


@settings(max_examples=200, deadline=None)
@given(SAFE, st.sampled_from(resolve_task("points24").action_names))
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
    st.sampled_from(sorted(t for t in BUILTIN_TASKS if t != "alfworld")),
)
def test_any_input_gives_an_action_in_range(text, task):
    out = parse(task, text)
    assert 0 <= out.action < len(resolve_task(task).action_names)
    assert out.valid == (out.reason == "ok")
