"""Config.validate over random configs (hypothesis): valid ones pass, and every broken rule is reported, once.

The rules are restated here independently of contracts/validation.py, as plain bounds (`INTS`, `FLOATS`,
`CHOICES`) and cross-field predicates (`cross_problems`); the test draws values on both sides of every bound and
checks that validate raises exactly when a rule is broken, with one line per broken rule naming its flag. A
field out of its own range is left out of the cross-field rules that read it (their numbers would mean nothing).
"""

from __future__ import annotations

import collections
import copy
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.config import Config
from contracts.presets import PRESETS
from contracts.validation import ConfigError

INF = math.inf
SHAPE = ("vocab_size", "text_hidden", "text_layers", "text_heads", "text_intermediate", "vision_hidden")
SHAPE += ("vision_layers", "vision_heads", "image_size", "patch_size", "max_positions")
INTS = {  # path: (lowest valid, highest valid)
    "env.envs_per_actor": (1, 1000),
    "env.seed": (0, INF),
    "env.max_consecutive_failures": (1, INF),
    "rollout.num_actors": (1, INF),
    "rollout.max_new_tokens": (1, INF),
    "rollout.steps_per_call": (1, INF),
    "rollout.max_model_len": (0, INF),
    "rollout.max_restarts": (0, INF),
    "replay.capacity_steps": (1, INF),
    "replay.max_policy_lag": (0, INF),
    "ppo.epochs": (1, INF),
    "ppo.steps_per_update": (1, INF),
    "ppo.micro_batch": (1, INF),
    "ppo.grad_accum": (1, INF),
    "ppo.value_warmup_updates": (0, INF),
    "ppo.demo_batch": (1, INF),
    "ppo.demo_samples": (1, INF),
    "learner.world_size": (1, INF),
    "learner.zero_stage": (1, 3),
    "learner.push_every": (1, INF),
    "run.total_updates": (1, INF),
    "run.eval_episodes": (1, INF),
    "run.eval_every": (0, INF),
    "run.checkpoint_every": (0, INF),
    "run.keep_checkpoints": (1, INF),
    "run.max_restarts": (0, INF),
    "sft.samples": (1, 10**6),
    "sft.vision_steps": (0, INF),
    "sft.epochs": (1, INF),
    "sft.batch_size": (1, INF),
    "sft.seed": (0, 10**6 - 1),
    "env.eval_seed": (0, INF),
    **{f"model.shape.{name}": (1, INF) for name in SHAPE},
}
FLOATS = {  # path: (low, low included, high, high included)
    "ppo.gamma": (0, False, 1, True),
    "ppo.gae_lambda": (0, True, 1, True),
    "ppo.clip": (0, False, INF, False),
    "ppo.value_clip": (0, True, INF, False),
    "ppo.adv_std_floor": (0, True, INF, False),
    "ppo.vf_coef": (0, True, INF, False),
    "ppo.cot_coef": (0, True, 1, True),
    "ppo.lr": (0, False, INF, False),
    "ppo.value_lr_scale": (0, False, INF, False),
    "ppo.end_lr": (0, True, INF, False),
    "ppo.max_grad_norm": (0, False, INF, False),
    "ppo.target_kl": (0, False, INF, False),
    "ppo.is_cap": (1, True, INF, False),
    "ppo.invalid_penalty": (0, True, INF, False),
    "ppo.demo_coef": (0, True, INF, False),
    "rollout.temperature": (0, False, INF, False),
    "rollout.cpus_per_actor": (0, True, INF, False),
    "rollout.gpus_per_actor": (0, True, 1, True),
    "rollout.gpu_memory_utilization": (0, True, 1, True),
    "rollout.cpu_kv_cache_gb": (0, False, INF, False),
    "rollout.max_backlog_updates": (0, True, INF, False),
    "learner.cpus_per_rank": (0, True, INF, False),
    "learner.gpus_per_rank": (0, True, 1, True),
    "run.time_budget_min": (0, False, INF, False),
    "sft.action_noise": (0, True, 1, True),
    "sft.lr": (0, False, INF, False),
}
CHOICES = {
    "model.dtype": ("float32", "bfloat16"),
    "learner.dtype": ("", "float32", "bfloat16"),
    "rollout.backend": ("vllm", "hf"),
    "run.mode": ("async", "sync"),
}
EVAL_BASE, SFT_BASE = 10**12, 2 * 10**12


def get(cfg: Config, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def put(cfg: Config, path: str, value) -> None:
    *parents, name = path.split(".")
    setattr(get(cfg, ".".join(parents)) if parents else cfg, name, value)


def in_range(path: str, v) -> bool:
    if path in INTS:
        lo, hi = INTS[path]
        return lo <= v <= hi
    if path in FLOATS:
        lo, lo_in, hi, hi_in = FLOATS[path]
        return math.isfinite(v) and (lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi)
    return v in CHOICES[path]


def cross_problems(cfg: Config, fine) -> list[str]:
    """The flags of the broken cross-field rules whose fields are all in range (`fine(*paths)`)."""
    out = []

    def rule(paths: tuple[str, ...], ok) -> None:
        if fine(*paths) and not ok():
            out.append("--" + paths[0].replace("_", "-"))

    e, r, p, s = cfg.env, cfg.rollout, cfg.ppo, cfg.model.shape
    rule(
        ("ppo.steps_per_update", "learner.world_size", "ppo.micro_batch"),
        lambda: p.steps_per_update >= cfg.learner.world_size * p.micro_batch,
    )
    rule(
        ("replay.capacity_steps", "ppo.steps_per_update", "env.envs_per_actor", "rollout.steps_per_call"),
        lambda: cfg.replay.capacity_steps >= p.steps_per_update + e.envs_per_actor * r.steps_per_call,
    )
    rule(("ppo.end_lr", "ppo.lr"), lambda: p.end_lr <= p.lr)
    rule(
        ("rollout.max_model_len", "rollout.max_new_tokens"),
        lambda: r.max_model_len == 0 or r.max_model_len > r.max_new_tokens,
    )
    rule(
        ("learner.cpus_per_rank", "learner.gpus_per_rank"),
        lambda: cfg.learner.cpus_per_rank > 0 or cfg.learner.gpus_per_rank > 0,
    )
    rule(
        ("learner.dtype", "model.dtype", "learner.zero_stage"),
        lambda: cfg.learner.dtype in ("", cfg.model.dtype) or cfg.learner.zero_stage < 3,
    )
    rule(("env.eval_seed", "env.seed", "rollout.num_actors"), lambda: e.eval_seed > e.seed + r.num_actors * 10**8)
    rule(("env.eval_seed", "run.eval_episodes"), lambda: e.eval_seed + cfg.run.eval_episodes <= SFT_BASE)
    rule(("model.shape.text_hidden", "model.shape.text_heads"), lambda: s.text_hidden % s.text_heads == 0)
    rule(("model.shape.vision_hidden", "model.shape.vision_heads"), lambda: s.vision_hidden % s.vision_heads == 0)
    rule(("model.shape.image_size", "model.shape.patch_size"), lambda: s.image_size >= s.patch_size)
    rule(
        ("model.shape.max_positions", "model.shape.image_size", "model.shape.patch_size"),
        lambda: s.max_positions > (s.image_size // s.patch_size) ** 2,
    )
    return out


def expected_flags(cfg: Config) -> collections.Counter:
    bad = {path for path in (*INTS, *FLOATS, *CHOICES) if not in_range(path, get(cfg, path))}
    flags = ["--" + path.replace("_", "-") for path in bad]
    flags += cross_problems(cfg, lambda *paths: not bad.intersection(paths))
    return collections.Counter(flags)


def reported_flags(cfg: Config) -> collections.Counter:
    try:
        cfg.validate()
    except ConfigError as error:
        assert str(error).splitlines()[1:] == ["  " + p for p in error.problems]  # one line per problem
        assert error.problems, "a ConfigError lists its problems"
        return collections.Counter(p.split(" ", 1)[0] for p in error.problems)
    return collections.Counter()


def int_values(lo, hi) -> st.SearchStrategy:
    """Both sides of each bound, and some values well inside."""
    edges = [lo - 1, lo, lo + 1, *([] if hi == INF else [hi - 1, hi, hi + 1])]
    inside = st.integers(lo, lo + 3000 if hi == INF else hi)
    return st.one_of(st.sampled_from(edges), inside, st.integers(-(10**6), 10**6))


def float_values(lo, hi) -> st.SearchStrategy:
    edges = [lo, *([] if hi == INF else [hi]), math.nan, math.inf, -math.inf]
    near = [lo - 1e-9, lo + 1e-9, *([] if hi == INF else [hi - 1e-9, hi + 1e-9])]
    inside = st.floats(lo, lo + 10 if hi == INF else hi)
    return st.one_of(st.sampled_from(edges + near), inside, st.floats(-10, 10))


FIELD_VALUES = {
    **{path: int_values(*bounds) for path, bounds in INTS.items()},  # the few below replace theirs
    **{path: float_values(lo, hi) for path, (lo, _, hi, _) in FLOATS.items()},
    **{path: st.sampled_from((*choices, "other")) for path, choices in CHOICES.items()},
    "model.shape.text_hidden": st.sampled_from([-4, 0, 96, 127, 128, 256]),
    "model.shape.vision_hidden": st.sampled_from([0, 64, 100, 128]),
    "model.shape.image_size": st.sampled_from([0, 7, 14, 112]),
    "env.eval_seed": st.sampled_from([-1, 0, 10**8, 10**9 + 1, EVAL_BASE - 1, EVAL_BASE, SFT_BASE - 10, SFT_BASE]),
}


@st.composite
def configs(draw) -> Config:
    """A preset with random values (in range or not) for a random set of its fields."""
    cfg = copy.deepcopy(PRESETS[draw(st.sampled_from(sorted(PRESETS)))][1])
    for path, value in draw(st.fixed_dictionaries({}, optional=FIELD_VALUES)).items():
        put(cfg, path, value)
    return cfg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_validate_reports_exactly_the_broken_rules(cfg):
    assert reported_flags(cfg) == expected_flags(cfg)


@st.composite
def valid_configs(draw) -> Config:
    """Random configs inside every bound, the cross-field rules satisfied by construction."""
    cfg = draw(configs())
    for path in sorted(INTS.keys() - {"env.eval_seed", "env.seed", "rollout.num_actors"}):
        lo, hi = INTS[path]
        put(cfg, path, draw(st.integers(lo, min(hi, lo + 64))))
    for path, (lo, lo_in, hi, hi_in) in FLOATS.items():
        top = hi if hi < INF else lo + 10
        put(cfg, path, draw(st.floats(lo, top, exclude_min=not lo_in, exclude_max=not hi_in and hi < INF)))
    for path, choices in CHOICES.items():
        put(cfg, path, draw(st.sampled_from(choices)))
    cfg.env.seed, cfg.rollout.num_actors = draw(st.integers(0, 10**9)), draw(st.integers(1, 1000))
    cfg.env.eval_seed = draw(st.integers(EVAL_BASE, SFT_BASE - cfg.run.eval_episodes))
    p, s = cfg.ppo, cfg.model.shape
    p.steps_per_update = max(p.steps_per_update, cfg.learner.world_size * p.micro_batch)
    cfg.replay.capacity_steps += p.steps_per_update + cfg.env.envs_per_actor * cfg.rollout.steps_per_call
    p.end_lr = min(p.end_lr, p.lr)
    if 0 < cfg.rollout.max_model_len <= cfg.rollout.max_new_tokens:
        cfg.rollout.max_model_len += cfg.rollout.max_new_tokens
    cfg.learner.cpus_per_rank = cfg.learner.cpus_per_rank or 1.0
    if cfg.learner.dtype not in ("", cfg.model.dtype):
        cfg.learner.zero_stage = min(cfg.learner.zero_stage, 2)
    s.text_hidden, s.vision_hidden = s.text_heads * draw(st.integers(1, 8)), s.vision_heads * draw(st.integers(1, 8))
    s.image_size = s.patch_size * draw(st.integers(1, 8))
    s.max_positions = s.image_tokens + draw(st.integers(1, 64))
    return cfg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_valid_configs_pass(cfg):
    assert cfg.validate() is cfg
