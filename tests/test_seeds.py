"""contracts/seeds.py: the seed ranges stay disjoint and numerically what every reported run used."""

from __future__ import annotations

import pytest

from contracts import seeds
from contracts.config import EnvConfig
from contracts.presets import tiny


def test_bases_and_formula_are_the_ones_runs_were_reported_with():
    assert (seeds.EVAL_SEED_BASE, seeds.SFT_SEED_BASE, seeds.CORPUS_SEED_BASE) == (10**12, 2 * 10**12, 3 * 10**12)
    assert EnvConfig().eval_seed == 10**12
    # actor a, env e, episode k: base + (a * 1000 + e) * 100_000 + k
    assert seeds.training_seed(7, actor_id=3, env_index=2, episode=5) == 7 + 3_002 * 100_000 + 5
    assert seeds.training_seeds_end(7, num_actors=3) == 7 + 3 * 1000 * 100_000


def test_training_blocks_never_overlap():
    last_of_env0 = seeds.training_seed(0, 0, 0, seeds.SEEDS_PER_ENV - 1)
    assert last_of_env0 < seeds.training_seed(0, 0, 1, 0)
    last_env_of_actor0 = seeds.training_seed(0, 0, seeds.MAX_ENVS_PER_ACTOR - 1, seeds.SEEDS_PER_ENV - 1)
    assert last_env_of_actor0 < seeds.training_seed(0, 1, 0, 0) == seeds.training_seeds_end(0, 1)


def test_config_keeps_training_seeds_below_the_eval_seeds():
    cfg = tiny()
    cfg.rollout.num_actors = seeds.EVAL_SEED_BASE // (seeds.MAX_ENVS_PER_ACTOR * seeds.SEEDS_PER_ENV)
    with pytest.raises(ValueError, match="eval_seed"):
        cfg.validate()
    cfg.rollout.num_actors -= 1
    cfg.validate()
    cfg.env.envs_per_actor = seeds.MAX_ENVS_PER_ACTOR + 1
    with pytest.raises(ValueError, match="envs_per_actor"):
        cfg.validate()
