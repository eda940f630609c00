"""SFT demonstrations for ALFWorld: the oracle's plan in the thoughts, a noisy action (issue 4).

Same recipe as the gym_cards experts (envs/experts.py): the thoughts state what the text says (the task,
what is held) and the oracle's next command, while the action is the oracle's only with probability
1 - noise, otherwise a uniformly random other admissible command. With ~10-40 admissible commands the noise
is spread thin, so SFT mostly learns to imitate the oracle; RL is left with what imitation cannot learn
from the prompt: the oracle knows where hidden objects are, the policy has to search.
"""

from __future__ import annotations

import json

import numpy as np

from contracts.seeds import CORPUS_SEED_BASE
from envs.prompts import alfworld_prompt, chat_prompt

CORPUS_EPISODES = 36
CORPUS_NOISE = (0.0, 0.3, 1.0)


def noisy_action(info: dict, noise: float, rng: np.random.Generator) -> str:
    """The oracle's command with probability 1 - noise, else another admissible command uniformly."""
    best = info["expert_command"]
    others = [c for c in info["admissible_commands"] if c != best]
    if others and rng.random() < noise:
        return others[int(rng.integers(len(others)))]
    return best


def thoughts(info: dict) -> str:
    held = info.get("held") or "nothing"
    return f"The task is to {info['task']}. I hold {held}. The next step is to {info['expert_command']}."


def response(info: dict, action: str, cot: bool = True) -> str:
    """The answer in the paper's ALFWorld format."""
    if not cot:
        return f' {{\n"action": {json.dumps(action)}\n}}'
    return f' {{\n"thoughts": {json.dumps(thoughts(info))}, \n"action": {json.dumps(action)}\n}}'


def labels(info: dict) -> list[int]:
    """What the floor-plan image shows that the vision tower should learn: hands full? at a receptacle?"""
    return [int(bool(info.get("held"))), int(bool(info.get("at_receptacle")))]


LABEL_CLASSES = (2, 2)


def corpus() -> list[str]:
    """Prompts and answers of seeded episodes (train games) at the noise levels of CORPUS_NOISE, plus every
    object and receptacle name ALFRED has (unseen rooms hold names the train games may not)."""
    from alfworld.gen import constants

    from envs.alfworld.env import AlfworldEnv

    env, rng, texts = AlfworldEnv(), np.random.default_rng(0), []
    for episode in range(CORPUS_EPISODES):
        _, info = env.reset(seed=CORPUS_SEED_BASE + episode)
        noise, done = CORPUS_NOISE[episode % len(CORPUS_NOISE)], False
        while not done:
            action = noisy_action(info, noise, rng)
            for cot in (True, False):
                texts += [chat_prompt(alfworld_prompt(info, cot)), response(info, action, cot)]
            _, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated or len(texts) > 4000
    names = sorted({n.lower() for n in constants.OBJECTS} | {n.lower() for n in constants.RECEPTACLES})
    texts += [f"take {n} 1 from {n} 2, go to {n} 3, move {n} 1 to {n} 2" for n in names] * 4
    return texts
