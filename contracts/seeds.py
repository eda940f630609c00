"""Every seed range of the project in one place: the ranges never overlap, so no held-out episode is ever
trained on, and SFT demonstrations and the tokenizer corpus never replay a training or evaluation episode.

    [env.seed, env.seed + actors * 10**8)   RL training: actor a, env e, episode k -> `training_seed(...)`
    [10**12, 2 * 10**12)                    held-out evaluation (env.eval_seed); ALFWorld plays its unseen
                                            split for these seeds (envs/alfworld/env.py)
    [2 * 10**12, 3 * 10**12)                SFT demonstrations (learner/sft.py: base + sft seed * 10**6 + episode)
    [3 * 10**12, ...)                       episodes played for the tokenizer corpus (envs/experts.py,
                                            envs/alfworld/expert.py)

The numbers are part of the results: the same seed replays the same episode, so changing any of them
changes which episodes every reported run trained and was evaluated on.
"""

from __future__ import annotations

MAX_ENVS_PER_ACTOR = 1000
"""Env copies one rollout actor may run: each owns a disjoint block of training seeds (config.validate checks)."""
SEEDS_PER_ENV = 100_000
"""Training episodes one env copy can play before its block would run into the next env's."""
EVAL_SEED_BASE = 10**12
"""The default `env.eval_seed`; ALFWorld maps [EVAL_SEED_BASE, 2 * EVAL_SEED_BASE) to unseen games."""
SFT_SEED_BASE = 2 * 10**12
"""First seed of the SFT demonstration episodes."""
CORPUS_SEED_BASE = 3 * 10**12
"""First seed of the episodes whose prompts and answers train the tokenizer."""


def training_seed(base: int, actor_id: int, env_index: int, episode: int) -> int:
    """The seed of training episode `episode` of env copy `env_index` of rollout actor `actor_id`."""
    return base + (actor_id * MAX_ENVS_PER_ACTOR + env_index) * SEEDS_PER_ENV + episode


def training_seeds_end(base: int, num_actors: int) -> int:
    """One past the largest training seed `num_actors` actors can use (`validate` keeps it below env.eval_seed)."""
    return base + num_actors * MAX_ENVS_PER_ACTOR * SEEDS_PER_ENV
