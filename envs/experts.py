"""Experts that write SFT demonstrations: a correct reading of the image, then an action from a noisy expert.

The SFT warm start must teach the response format and perception but leave room for RL (the paper's SFT
NumberLine start is 24.8 %). Our NumberLine demonstrations always read both numbers right and state the
comparison, but the action is the expert's only with probability 1 - `noise`; otherwise it is the other
action. Because the noise is independent of the state, the SFT model learns p(correct | state) ~ 1 - noise
and the paper's sampling temperature 0.2 sharpens that, so SFT success lands well below 1 and RL must
push the action distribution the rest of the way (numbers on issue 2 and in the README).

The card tasks (EZPoints, Points24, Blackjack; the section below) follow the same recipe with the formula
solvers and Blackjack basic strategy of envs/solvers.py as experts. The last section has the perception labels
and tokenizer corpora; envs/builtin.py puts all of it into the built-in Tasks (envs/task.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from contracts.seeds import CORPUS_SEED_BASE
from envs.blackjack import ACTION_NAMES as BLACKJACK_ACTIONS
from envs.cards import RANK_LABELS
from envs.ezpoints import ACTION_NAMES as EZPOINTS_ACTIONS
from envs.ezpoints import MAX_LEN as EZPOINTS_MAX_LEN
from envs.points24 import ACTION_NAMES as POINTS24_ACTIONS
from envs.points24 import MAX_LEN as POINTS24_MAX_LEN
from envs.prompts import chat_prompt, numberline_prompt
from envs.solvers import (
    EZPOINTS_OPS,
    POINTS24_OPS,
    STAND,
    basic_strategy,
    continuation,
    is_solved,
    next_formula_token,
)


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
# basic strategy) gives, while the action is the expert's only with probability 1 - `noise`. `noise` is
# exactly the error rate, independent of the state (Blackjack's close calls excepted: `noisy_blackjack_action`),
# so SFT learns the format, the reading and a plan it does not
# always follow, and RL has to close the gap between thought and action (the paper's SFT starts are 23.0 %
# EZPoints, 2.6 % Points24, 23.1 % Blackjack).
# The wrong action must be ONE action per state, as NumberLine's and Blackjack's other action is: spread
# uniformly over the 12 (EZPoints) or 16 (Points24) other actions, each gets 0.45/12 and sampling at T = 0.2
# sharpens 0.55 against 0.04 to ~1, so the noise vanishes from the SFT policy. Formula demonstrations
# therefore err by ending early with "=" (or, when "=" is right, by appending "+"): p = 0.55 against 0.45,
# which T = 0.2 turns into ~0.73 per step, as for NumberLine.

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


def formula_confuser(names: tuple[str, ...], best: int) -> int:
    """The one wrong action a formula demonstration takes: "=" too early, or "+" when "=" was right."""
    return names.index("+") if names[best] == "=" else names.index("=")


def noisy_formula_action(task: str, info: dict, noise: float, rng: np.random.Generator) -> int:
    best, names = formula_expert(task, info), _FORMULA_GAMES[task][3]
    return formula_confuser(names, best) if rng.random() < noise else best


def noisy_ezpoints_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    return noisy_formula_action("ezpoints", info, noise, rng)


def noisy_points24_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    return noisy_formula_action("points24", info, noise, rng)


def close_call(info: dict) -> bool:
    """A hard 12-16: the hands where hitting and standing differ by a few points of expected return."""
    return not info["usable_ace"] and 12 <= info["player_sum"] <= 16


def noisy_blackjack_action(info: dict, noise: float, rng: np.random.Generator) -> int:
    """Basic strategy, the other action with probability `noise`, except on a close call, where it is always basic
    strategy. The deliberate imperfection sits where the win/lose reward can teach the decision: with noise
    everywhere, 60 PPO updates moved the actions' agreement with basic strategy on hard 12-16 from the SFT's 0.55
    to 0.47-0.51 (README, Blackjack), while the other hands went from 0.55 to 0.96-1.00. On 20,000 simulated
    deals, following basic strategy only 0.55 of the time on the other hands costs ~13 points of success (0.30
    against 0.43); on the close calls, ~1.2 (tests/test_experts.py replays a smaller version)."""
    best = blackjack_expert(info)
    return best if close_call(info) else noisy_action(best, len(BLACKJACK_ACTIONS), noise, rng)


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
        # The plan's next token is said outright: a 4-layer model mislocates it in the plan (it wrote "2" for
        # the "+" of '10+2' in a probe), and the CoT is where such a step belongs.
        step = next_formula_token(values, formula, target, ops, max_len)
        ending = f"It can be completed to '{''.join(plan)}', which equals {target}. Next: '{step}'."
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
        text += " A hit cannot bust me, because the ace can count as 1."
    elif total <= 11:
        text += " A hit cannot bust me."
    else:
        text += f" A hit busts me if the next card is worth more than {21 - total}."
    return f"{text} {_blackjack_plan(info)}"


def _blackjack_plan(info: dict) -> str:
    """The "think about which action to choose" part of the paper's prompt: basic strategy's threshold against
    this up-card and what it says here. As the formula tasks' thoughts name the solver's next token, the plan is
    said outright; a demonstration's action still deviates from it with probability `sft.action_noise`."""
    total, dealer, soft = info["player_sum"], info["dealer_card"], info["usable_ace"]
    lowest = 12 if soft else 4  # a usable ace makes at least 12
    stand_from = min(t for t in range(lowest, 22) if basic_strategy(t, dealer, soft) == STAND)  # monotone in t
    hand = "a soft" if soft else "a hard"
    choice = BLACKJACK_ACTIONS[basic_strategy(total, dealer, soft)]
    return f"Against {11 if dealer == 1 else dealer} I stand on {hand} {stand_from} or more, so I {choice}."


def blackjack_response(info: dict, action: int, cot: bool = True) -> str:
    """Blackjack answer in the prompt's format; thoughts describe both totals from the visible cards only."""
    name = BLACKJACK_ACTIONS[action]
    if not cot:
        return _action_only(name)
    return f' {{\n "thoughts": {json.dumps(_blackjack_thoughts(info))}, \n"action": "{name}" \n}}'


# ---- perception labels and tokenizer corpora (envs/builtin.py puts them into the built-in Tasks) ---------

_RANKS = {label: rank for rank, label in RANK_LABELS.items()} | {str(r): r for r in range(2, 11)}
RANK_CLASSES = 13
NO_CARD = RANK_CLASSES  # the class of an empty Blackjack card slot
BLACKJACK_VISIBLE_CARDS = 4  # the fifth player card is drawn off the canvas (envs/blackjack.py)
BLACKJACK_MAX_SUM = 21  # demonstrations are pre-action states: a busted hand has already ended its episode
BLACKJACK_LABEL_CLASSES = (RANK_CLASSES, *(RANK_CLASSES + 1,) * BLACKJACK_VISIBLE_CARDS, BLACKJACK_MAX_SUM + 1)


def _rank_class(label: str) -> int:
    """Card rank label "A".."K" -> class 0..12 (the rank, not the value: J, Q, K and 10 look different)."""
    return _RANKS[label] - 1


def numberline_labels(info: dict) -> list[int]:
    return [info["current"], info["target"]]


def card_labels(info: dict) -> list[int]:
    return [_rank_class(rank) for rank, _ in info["cards"]]


def blackjack_labels(info: dict) -> list[int]:
    """Dealer's up-card, the player's visible cards (NO_CARD when fewer) and the player's total.

    The total is what the CoT must state. With five or more cards (rare) it includes cards the frame does not
    show, as the answer writer's card list does: the image then cannot tell, and such a label is noise.
    """
    player = [_rank_class(rank) for rank, _ in info["player_hand"][:BLACKJACK_VISIBLE_CARDS]]
    player += [NO_CARD] * (BLACKJACK_VISIBLE_CARDS - len(player))
    return [_rank_class(info["dealer_hand"][0][0]), *player, info["player_sum"]]


def numberline_corpus() -> list[str]:
    """Both prompts and every answer over all states and actions (NumberLine has only 6 x 6 states).

    Kept exactly as it was before the card tasks existed: the measured NumberLine runs used this tokenizer.
    """
    texts = [chat_prompt(numberline_prompt({}, cot)) for cot in (True, False)]
    for c in range(6):
        for t in range(6):
            for a in (0, 1):
                for cot in (True, False):
                    texts.append(numberline_response({"current": c, "target": t}, a, cot))
    return texts * 4


CORPUS_EPISODES = 300
CORPUS_NOISE = (0.0, 0.45, 1.0)
"""Expert, SFT-like and almost-random play: RL shows the model formulas no expert writes (wrong numbers,
invalid-card markers, formulas up to the length cap), so the prompts carrying them belong in the corpus too."""


def episode_corpus(env, best: Callable, n_actions: int, prompt: Callable, response: Callable) -> list[str]:
    """The card tasks' states cannot be enumerated: every prompt (CoT and action-only) and answer of
    CORPUS_EPISODES seeded episodes of `env`, played by the expert `best` at the noise levels of CORPUS_NOISE in
    turn (a wrong action is any other one, uniformly: the SFT confusers would end every noisy episode at once)."""
    rng, texts = np.random.default_rng(0), []
    for episode in range(CORPUS_EPISODES):
        _, info = env.reset(seed=CORPUS_SEED_BASE + episode)
        noise, done = CORPUS_NOISE[episode % len(CORPUS_NOISE)], False
        while not done:
            action = noisy_action(best(info), n_actions, noise, rng)
            for cot in (True, False):
                texts += [chat_prompt(prompt(info, cot)), response(info, action, cot)]
            _, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    return texts
