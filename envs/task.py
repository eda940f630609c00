"""The Task API: everything the framework knows about one task, in one small typed object (docs/tasks.md).

A task is a `Task` value: how to make its env (gymnasium API, an image observation and an info dict), the
question for a step, the parser from model text to env action, the success rule, and optional parts (per-step
admissible actions, an SFT expert, perception labels, a tokenizer corpus, per-task config defaults). The five
built-in tasks are Task values too (envs/builtin.py, envs/alfworld/task.py); `--env.task` names one of them, an
installed one (entry-point group `rl4vlm.tasks`) or any importable `package.module:attr` (envs/registry.py).

Every hook is plain Python called inside a rollout actor (or SFT): it may raise. The rollout actor catches
what a hook raises, drops that episode only, counts and logs it (actors/task_calls.py), so a faulty task costs
episodes, never the run; a task whose episodes keep failing stops the run with TaskFailedError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.parsing import ParsedAction


class TaskError(ValueError):
    """A task that cannot be used: unknown name, import failure, not a Task, a broken hook at start-up."""


class TaskFailedError(RuntimeError):
    """A task's episodes failed `env.max_consecutive_failures` times in a row: the run stops with this."""


def return_positive(rewards: Sequence[float], terminated: bool, info: dict) -> bool:
    """The paper's gym_cards success rule: the episode's return is > 0."""
    return sum(rewards) > 0


def terminated_won(rewards: Sequence[float], terminated: bool, info: dict) -> bool:
    """Success = the episode terminated (reached its goal), whatever the return (ALFWorld: won)."""
    return bool(terminated)


@dataclass(frozen=True)
class Expert:
    """Writes the SFT demonstrations: a state's answer text for an action the (noisy) expert picks."""

    act: Callable[[dict, float, np.random.Generator], Any]
    """(info, noise, rng) -> the env action of the demonstration (what `env.step` takes: an index, or a command
    for text-action tasks). The expert's best action with probability 1 - noise, else a wrong one: noise is
    `sft.action_noise`, and a state-independent error rate leaves RL room to improve on the SFT start."""
    response: Callable[[dict, Any, bool], str]
    """(info, action, cot) -> the answer text for that state and action, in the prompt's format (the JSON the
    parser reads; with `cot` False the action-only answer). The chat template is added by the framework."""


@dataclass(frozen=True)
class Perception:
    """What the image shows, as class labels: the targets of the embedded VLM's vision pre-training."""

    labels: Callable[[dict], Sequence[int]]
    """info -> one class index per slot (e.g. NumberLine: current and target number, each 0..5)."""
    classes: tuple[int, ...]
    """How many classes each slot has (fixed: a sample that misses the top class must not shrink a head)."""


@dataclass(frozen=True)
class TaskDefaults:
    """The task's config defaults. They fill the fields a preset leaves at the generic default (`Config()`);
    flags on the command line win over both (contracts/task_defaults.py)."""

    max_new_tokens: int = 96
    """rollout.max_new_tokens: the response cap (the longest expert answer in tokens plus some room)."""
    steps_per_update: int = 256
    """ppo.steps_per_update: env steps per PPO update."""
    cot_coef: float = 0.5
    """ppo.cot_coef: λ, the weight of the CoT tokens' log-prob in the action log-prob (paper: gym 0.5, ALF 0.2)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """Any other config field by its dotted path, e.g. {"sft.samples": 3000, "env.envs_per_actor": 8}."""


@dataclass(frozen=True)
class Task:
    """One task. Only `name`, `make_env`, `prompt` and `parse` are required; docs/tasks.md shows each in use."""

    name: str
    """Short name: runs/<name>-<time>/ and the default checkpoint checkpoints/<name>-sft are named after it."""
    make_env: Callable[[], gym.Env]
    """() -> a fresh env. reset(seed=s) -> (obs, info) and step(action) -> (obs, reward, terminated, truncated,
    info) as gymnasium; obs an (H, W, 3) uint8 image, info a dict (what the other hooks read). Each rollout
    actor makes env.envs_per_actor of them, and a new one after a failure."""
    prompt: Callable[[dict, bool], str]
    """(info, cot) -> the question text of a step, from the latest info (reset's, then step's). cot False: the
    action-only variant. The model's chat template and image placeholder are added by the engine."""
    parse: Callable[[str, Sequence[str], np.random.Generator], ParsedAction]
    """(text, actions, rng) -> ParsedAction: the model's answer to an env action. `actions` is the step's action
    list (`admissible(info)` when set, else `action_names`); `rng` is for a random fallback. It must never
    fail on text: an unparsable answer gives a fallback action with valid=False (counted as invalid)."""
    action_names: tuple[str, ...] = ()
    """The fixed action list of a Discrete env: index i is env action i (the parser's `actions`)."""
    admissible: Callable[[dict], Sequence[str]] | None = None
    """info -> the actions legal in this state, for tasks whose action set changes per step (ALFWorld's
    commands); they become the parser's `actions`. None: `action_names` every step."""
    success: Callable[[Sequence[float], bool, dict], bool] = return_positive
    """(rewards, terminated, final info) -> whether a finished episode succeeded (training and held-out
    success). Default: the paper's return > 0."""
    expert: Expert | None = None
    """The SFT expert; without one the SFT warm start cannot build a checkpoint (give --model.path)."""
    perception: Perception | None = None
    """Labels for the embedded VLM's vision pre-training; without them that step is skipped."""
    corpus: Callable[[], list[str]] | None = None
    """() -> every string prompts and answers are made of: the embedded VLM's tokenizer training text. None:
    prompts and expert answers of seeded expert episodes (learner/sft.py: expert_corpus)."""
    defaults: TaskDefaults = field(default_factory=TaskDefaults)
    """Config defaults of this task (response cap, steps per update, λ, anything else)."""
    slow_reset: bool = False
    """Resets take seconds (loading a game): rollout actors run them in threads, off the batch's path."""
    episode_type: Callable[[dict], str | None] | None = None
    """final info -> a label to report success by (ALFWorld: the task type), or None."""
    solvable: Callable[[dict], bool] | None = None
    """reset info -> whether the episode can be won at all (Points24 deals); evaluation reports success over
    the solvable ones too. None: every episode can."""
    held_out_seeds: tuple[int, int] | None = None
    """[low, high): the only seeds the held-out evaluation may use (ALFWorld: the unseen games); None: any."""

    def actions(self, info: dict) -> Sequence[str]:
        """The parser's action list for the state `info` describes."""
        return self.admissible(info) if self.admissible is not None else self.action_names
