"""Experts that write SFT demonstrations: a correct reading of the image, then an action from a noisy expert.

The SFT warm start must teach the response format and perception but leave room for RL (the paper's SFT
NumberLine start is 24.8 %). Our NumberLine demonstrations always read both numbers right and state the
comparison, but the action is the expert's only with probability 1 - `noise`; otherwise it is the other
action. Because the noise is independent of the state, the SFT model learns p(correct | state) ~ 1 - noise
and the paper's sampling temperature 0.2 sharpens that, so SFT success lands well below 1 and RL must
push the action distribution the rest of the way (numbers on issue 2 and in the README).

The card tasks (EZPoints, Points24, Blackjack; the section below) follow the same recipe with the formula
solvers and Blackjack basic strategy of envs/solvers.py as experts.
"""

from __future__ import annotations

import json

import numpy as np

from envs.blackjack import ACTION_NAMES as BLACKJACK_ACTIONS
from envs.ezpoints import ACTION_NAMES as EZPOINTS_ACTIONS
from envs.ezpoints import MAX_LEN as EZPOINTS_MAX_LEN
from envs.points24 import ACTION_NAMES as POINTS24_ACTIONS
from envs.points24 import MAX_LEN as POINTS24_MAX_LEN
from envs.solvers import EZPOINTS_OPS, POINTS24_OPS, basic_strategy, continuation, is_solved, next_formula_token


def numberline_expert(info: dict) -> int:
    """0 = "-", 1 = "+": step toward the target."""
    return 1 if info["current"] < info["target"] else 0


def numberline_response(info: dict, action: int, cot: bool = True) -> str:
    """The JSON answer in the paper's format; `thoughts` reads the image and compares, the action follows."""
    symbol = "-+"[action]
    if not cot:
        return f' {{\n "action": "{symbol}" \n}}'
    c, t = info["current"], info["target"]
    relation = "smaller than" if c < t else "larger than"
    thoughts = f"The current number is {c} and the target number is {t}. {c} is {relation} {t}."
    return (
        f' {{\n "current number": "{c}", \n"target number": "{t}", \n"thoughts": {json.dumps(thoughts)}, '
        f'\n"action": "{symbol}" \n}}'
    )


def noisy_numberline_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    best = numberline_expert(info)
    return 1 - best if rng.random() < noise else best


# ---- card tasks ------------------------------------------------------------------------------------------
# The same recipe as NumberLine: the thoughts read the picture correctly and state the plan the solver (or
# basic strategy) gives, while the action is the expert's only with probability 1 - `noise` and otherwise a
# uniformly random *other* action of the task's action space. `noise` is therefore exactly the error rate,
# independent of the state: SFT learns the format, the reading and a plan it does not always follow, and RL
# has to close the gap between thought and action (the paper's SFT starts are 23.0 % EZPoints, 2.6 %
# Points24, 23.1 % Blackjack).

_FORMULA_GAMES = {
    # target, operators the solver may use, longest formula on which "=" is still scored, action names
    "ezpoints": (12, EZPOINTS_OPS, EZPOINTS_MAX_LEN, EZPOINTS_ACTIONS),
    "points24": (24, POINTS24_OPS, POINTS24_MAX_LEN, POINTS24_ACTIONS),
}


def noisy_action(best: int, n_actions: int, noise: float, rng: np.random.Generator) -> int:
    """`best` with probability 1 - noise, else one of the other n_actions - 1 actions uniformly."""
    if rng.random() >= noise:
        return best
    other = int(rng.integers(n_actions - 1))
    return other + 1 if other >= best else other


def formula_expert(task: str, info: dict) -> int:
    """EZPoints/Points24: the next token of a solution that extends the formula, "=" when done or hopeless."""
    target, ops, max_len, names = _FORMULA_GAMES[task]
    return names.index(next_formula_token(info["card_values"], info["formula"], target, ops, max_len))


def ezpoints_expert(info: dict) -> int:
    return formula_expert("ezpoints", info)


def points24_expert(info: dict) -> int:
    return formula_expert("points24", info)


def blackjack_expert(info: dict) -> int:
    """Basic strategy from the visible state only (the dealer's hole card is never used)."""
    return basic_strategy(info["player_sum"], info["dealer_card"], info["usable_ace"])


def noisy_ezpoints_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    return noisy_action(ezpoints_expert(info), len(EZPOINTS_ACTIONS), noise, rng)


def noisy_points24_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    return noisy_action(points24_expert(info), len(POINTS24_ACTIONS), noise, rng)


def noisy_blackjack_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    return noisy_action(blackjack_expert(info), len(BLACKJACK_ACTIONS), noise, rng)


def _action_only(name: str) -> str:
    return f' {{\n "action": "{name}" \n}}'


def _join(labels: list[str]) -> str:
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else labels[0]


def _card_reading(info: dict) -> str:
    labels = [rank for rank, _ in info["cards"]]
    text = f"The cards are {_join(labels)}."
    faces = sorted({label for label in labels if label in ("J", "Q", "K")})
    if faces:
        text += " " + " and ".join(faces) + (" counts" if len(faces) == 1 else " count") + " as 10."
    return text


def _formula_thoughts(task: str, info: dict) -> str:
    target, ops, max_len, _ = _FORMULA_GAMES[task]
    values, formula = info["card_values"], info["formula"]
    text = "".join(formula)
    if is_solved(values, formula, target):
        complete = f"The current formula '{text}' equals {target} and uses every card, so it is complete."
        return f"{_card_reading(info)} {complete}"
    status = "The current formula is empty." if not formula else f"The current formula '{text}' is not complete."
    plan = continuation(values, formula, target, ops, max_len)
    if plan is None:
        ending = f"No formula that extends it can reach {target}, so the game should end."
    else:
        ending = f"It can be completed to '{''.join(plan)}', which equals {target}."
    return f"{_card_reading(info)} {status} {ending}"


def formula_response(task: str, info: dict, action: int, cot: bool = True) -> str:
    """EZPoints/Points24 answer in the prompt's format, as valid JSON; the action is the one given."""
    name = _FORMULA_GAMES[task][3][action]
    if not cot:
        return _action_only(name)
    fields = {
        "cards": list(info["card_values"]),
        "current formula": "".join(info["formula"]),
        "thoughts": _formula_thoughts(task, info),
    }
    body = ", \n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
    return f' {{\n {body}, \n"action": "{name}" \n}}'


def ezpoints_response(info: dict, action: int, cot: bool = True) -> str:
    return formula_response("ezpoints", info, action, cot)


def points24_response(info: dict, action: int, cot: bool = True) -> str:
    return formula_response("points24", info, action, cot)


def _blackjack_thoughts(info: dict) -> str:
    cards = [rank for rank, _ in info["player_hand"]]
    total, dealer = info["player_sum"], info["dealer_card"]
    soft = " with a usable ace" if info["usable_ace"] else ""
    dealer_label = info["dealer_hand"][0][0]
    text = (
        f"My cards are {_join(cards)}, so my total points are {total}{soft}. The dealer shows {dealer_label}, "
        f"so the dealer's total points are {11 if dealer == 1 else dealer} from the visible card."
    )
    if info["usable_ace"]:
        return text + " A hit cannot bust me, because the ace can count as 1."
    if total <= 11:
        return text + " A hit cannot bust me."
    return text + f" A hit busts me if the next card is worth more than {21 - total}."


def blackjack_response(info: dict, action: int, cot: bool = True) -> str:
    """Blackjack answer in the prompt's format; thoughts describe both totals from the visible cards only."""
    name = BLACKJACK_ACTIONS[action]
    if not cot:
        return _action_only(name)
    return f' {{\n "thoughts": {json.dumps(_blackjack_thoughts(info))}, \n"action": "{name}" \n}}'
