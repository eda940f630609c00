"""Tasks for tests/test_task_api.py, referenced as `task_fixtures:NAME` (tests/ is on sys.path under pytest; a
subprocess gets it through PYTHONPATH): NumberLine with faults injected into its hooks, and broken tasks."""

from __future__ import annotations

import dataclasses

from envs.builtin import NUMBERLINE
from envs.numberline import NumberLineEnv
from envs.parsing import ParsedAction
from envs.task import Task


class FlakyLineEnv(NumberLineEnv):
    """NumberLine whose reset fails for seeds = 3 (mod 7) and whose second step fails for seeds = 1 (mod 5);
    `info` carries the seed so the prompt hook can fail on its own rule (seeds = 4 (mod 11))."""

    def reset(self, *, seed=None, options=None):
        if seed is not None and seed % 7 == 3:
            raise RuntimeError(f"reset boom (seed {seed})")
        self.seed_ = seed
        obs, info = super().reset(seed=seed)
        return obs, {**info, "seed": seed}

    def step(self, action):
        if self.seed_ is not None and self.seed_ % 5 == 1 and self.steps == 1:
            raise RuntimeError("step boom")
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "seed": self.seed_}


def flaky_prompt(info: dict, cot: bool) -> str:
    if info.get("seed", 0) % 11 == 4:
        raise KeyError("prompt boom")
    return NUMBERLINE.prompt(info, cot)


def flaky_parse(text, actions, rng) -> ParsedAction:
    """The paper's parser, except: "BAD" in the text raises, "OUT" gives an action outside the action space."""
    if "BAD" in text:
        raise ValueError("parse boom")
    if "OUT" in text:
        return ParsedAction(1, True, "ok", env_action=7)
    return NUMBERLINE.parse(text, actions, rng)


FLAKY = dataclasses.replace(NUMBERLINE, name="flaky", make_env=FlakyLineEnv, prompt=flaky_prompt, parse=flaky_parse)


class NoResetEnv(NumberLineEnv):
    def reset(self, *, seed=None, options=None):
        raise RuntimeError("this env never resets")


class TrainingStepFailsEnv(NumberLineEnv):
    """Fine on held-out seeds (the driver's smoke test and the evaluations), broken on every training step."""

    def reset(self, *, seed=None, options=None):
        self.seed_ = seed
        return super().reset(seed=seed)

    def step(self, action):
        if self.seed_ is not None and self.seed_ < 10**12:
            raise RuntimeError("training step boom")
        return super().step(action)


class BadObsEnv(NumberLineEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return obs[:, :, 0], info  # grey, not RGB


NO_RESET = dataclasses.replace(NUMBERLINE, name="noreset", make_env=NoResetEnv)
TRAINING_FAILS = dataclasses.replace(NUMBERLINE, name="trainfails", make_env=TrainingStepFailsEnv)
BAD_OBS = dataclasses.replace(NUMBERLINE, name="badobs", make_env=BadObsEnv)
BAD_PROMPT = dataclasses.replace(NUMBERLINE, name="badprompt", prompt=lambda info, cot: 42)
OUT_OF_SPACE = dataclasses.replace(NUMBERLINE, name="outofspace", parse=lambda *_: ParsedAction(5, True, "ok"))
NOT_CALLABLE = dataclasses.replace(NUMBERLINE, name="notcallable", prompt="You are playing a game")
WITH_DEFAULTS = dataclasses.replace(
    NUMBERLINE,
    name="mine",
    defaults=dataclasses.replace(
        NUMBERLINE.defaults, max_new_tokens=64, steps_per_update=128, cot_coef=0.3, config={"sft.samples": 500}
    ),
)
BAD_DEFAULTS = dataclasses.replace(
    NUMBERLINE, name="baddefaults", defaults=dataclasses.replace(NUMBERLINE.defaults, config={"sft.sample": 1})
)
NO_EXPERT = dataclasses.replace(NUMBERLINE, name="noexpert", expert=None)
BAD_EXPERT = dataclasses.replace(NUMBERLINE, name="badexpert", expert=lambda info: 0)
NOT_A_TASK = {"name": "dict"}


def make_task() -> Task:
    """A factory: `task_fixtures:make_task` resolves to what it returns."""
    return dataclasses.replace(NUMBERLINE, name="made")
