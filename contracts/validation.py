"""The rules `Config.validate` checks: every field's range and every cross-field rule, before Ray starts.

A problem is one line naming the CLI flag, its value and the rule, e.g. `--ppo.gamma 2: must be in (0, 1]`;
`problems` returns them all at once, so one run of the CLI shows everything that is wrong. Types come first
(from the dataclasses' annotations: ints, finite floats, bools, strings, the Literal choices); a field with a
wrong type is not range-checked, and a rule over several fields runs only when each of them is in range.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from contracts import seeds

if TYPE_CHECKING:
    from contracts.config import Config

SFT_EPISODES_PER_SEED = 10**6
"""learner/sft.py: demonstration episode k of sft.seed s is reset with SFT_SEED_BASE + s * 10**6 + k."""
MAX_SFT_SEED = (seeds.CORPUS_SEED_BASE - seeds.SFT_SEED_BASE) // SFT_EPISODES_PER_SEED
"""sft.seed stays below this, so the SFT demonstrations never replay a tokenizer-corpus episode."""
RAY_RESERVED = ("CPU", "GPU")
"""Ray refuses these names among custom resources (they are num_cpus / num_gpus)."""


class ConfigError(ValueError):
    """Every problem of a config, one line each (`problems`); the message lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config:\n  " + "\n  ".join(self.problems))


def flag(path: str) -> str:
    """The CLI flag of a field path: model.shape.text_hidden -> --model.shape.text-hidden."""
    return "--" + path.replace("_", "-")


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value or "''"
    return str(value)


class Checker:
    """Collects problems. A field with a wrong type or out of its range is not checked again, and a rule
    over several fields runs only when each of them is in range (`fine`)."""

    def __init__(self, cfg: Config):
        self.cfg, self.problems, self.bad = cfg, [], set()

    def get(self, path: str) -> Any:
        obj = self.cfg
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    def fine(self, *paths: str) -> bool:
        """None of `paths` has a wrong type or is out of range (a rule over them can be evaluated)."""
        return not self.bad.intersection(paths)

    def field(self, path: str, ok: Callable[[Any], bool], rule: str) -> None:
        """A rule of one field (type or range): when broken, the field is left out of every later rule."""
        if self(path, ok, rule):
            self.bad.add(path)

    def __call__(self, path: str, ok: Callable[[Any], bool], rule: str) -> bool:
        """A rule reported on `path`; True when broken. Skipped (False) when `path` is already out of range."""
        if path in self.bad or ok(value := self.get(path)):
            return False
        self.problems.append(f"{flag(path)} {show(value)}: {rule}")
        return True


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _resources(v: dict) -> bool:
    return all(k not in RAY_RESERVED and _number(q) and math.isfinite(q) and q >= 0 for k, q in v.items())


def _type_rule(hint: Any) -> tuple[Callable[[Any], bool], str] | None:
    """(check, rule) for a field's annotation; None for a type not checked here."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return (lambda v: v in choices), "must be one of " + ", ".join(map(str, choices))
    if hint is bool:
        return (lambda v: isinstance(v, bool)), "must be true or false"
    if hint is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "must be an integer"
    if hint is float:
        return (lambda v: _number(v) and math.isfinite(v)), "must be a finite number"
    if hint is str:
        return (lambda v: isinstance(v, str)), "must be a string"
    if typing.get_origin(hint) is dict:
        rule = "must map resource names (not CPU or GPU) to quantities >= 0"
        return (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v) and _resources(v)), rule
    return None


def check_types(c: Checker, obj: Any, prefix: str = "") -> None:
    """Every field of `obj` (nested dataclasses too) against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        path, hint, value = prefix + f.name, hints[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                check_types(c, value, path + ".")
            else:
                c.field(path, lambda v: False, f"must be a {hint.__name__}")
        elif (rule := _type_rule(hint)) is not None:
            c.field(path, *rule)


def _ge(lo: float) -> Callable[[Any], bool]:
    return lambda v: v >= lo


def _gt(lo: float) -> Callable[[Any], bool]:
    return lambda v: v > lo


def _within(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo <= v <= hi


ONE_GPU = "must be in [0, 1] (each engine and each learner rank runs on one GPU)"
FIELD_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    # env
    (
        "env.envs_per_actor",
        _within(1, seeds.MAX_ENVS_PER_ACTOR),
        "must be in [1, 1000]: each of the envs_per_actor envs owns a disjoint block of training seeds",
    ),
    ("env.seed", _ge(0), "must be >= 0"),
    ("env.eval_seed", _ge(0), "must be >= 0"),
    ("env.task", lambda v: bool(v.strip()), "must name a task: a built-in, an installed one or package.module:attr"),
    ("env.max_consecutive_failures", _ge(1), "must be >= 1"),
    # model
    ("model.path", bool, "must name a checkpoint folder"),
    *(
        (f"model.shape.{name}", _ge(1), "must be >= 1")
        for name in (
            "vocab_size",
            "text_hidden",
            "text_layers",
            "text_heads",
            "text_intermediate",
            "vision_hidden",
            "vision_layers",
            "vision_heads",
            "image_size",
            "patch_size",
            "max_positions",
        )
    ),
    ("model.lora.rank", _within(0, 512), "must be in [0, 512] (0 = full fine-tuning; vLLM's largest LoRA rank is 512)"),
    ("model.lora.alpha", _ge(0), "must be >= 0 (0 = 2 x model.lora.rank)"),
    ("model.lora.dropout", lambda v: 0 <= v < 1, "must be in [0, 1) (a probability)"),
    # sft
    (
        "sft.samples",
        _within(1, SFT_EPISODES_PER_SEED),
        f"must be in [1, {SFT_EPISODES_PER_SEED}] (one sft.seed's block of demonstration seeds)",
    ),
    ("sft.action_noise", _within(0.0, 1.0), "must be in [0, 1] (a probability)"),
    ("sft.vision_steps", _ge(0), "must be >= 0"),
    ("sft.epochs", _ge(1), "must be >= 1"),
    ("sft.batch_size", _ge(1), "must be >= 1"),
    ("sft.lr", _gt(0), "must be > 0"),
    (
        "sft.seed",
        lambda v: 0 <= v < MAX_SFT_SEED,
        f"must be in [0, {MAX_SFT_SEED}) (SFT seeds stay below the tokenizer corpus's)",
    ),
    # rollout
    ("rollout.num_actors", _ge(1), "must be >= 1"),
    ("rollout.temperature", _gt(0), "must be > 0 (log-probs are taken at logits / T)"),
    ("rollout.max_new_tokens", _ge(1), "must be >= 1"),
    ("rollout.steps_per_call", _ge(1), "must be >= 1"),
    ("rollout.cpus_per_actor", _ge(0), "must be >= 0"),
    ("rollout.gpus_per_actor", _within(0, 1), ONE_GPU),
    ("rollout.gpu_memory_utilization", _within(0, 1), "must be in [0, 1] (0 = 0.85 x gpus_per_actor)"),
    ("rollout.cpu_kv_cache_gb", _gt(0), "must be > 0"),
    ("rollout.max_model_len", _ge(0), "must be >= 0 (0 = the checkpoint's max positions, at most 4096)"),
    ("rollout.max_restarts", _ge(0), "must be >= 0"),
    ("rollout.max_backlog_updates", _ge(0), "must be >= 0 (0 = no throttle)"),
    # replay
    ("replay.capacity_steps", _ge(1), "must be >= 1"),
    ("replay.max_policy_lag", _ge(0), "must be >= 0"),
    # ppo
    ("ppo.gamma", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("ppo.gae_lambda", _within(0, 1), "must be in [0, 1]"),
    ("ppo.clip", _gt(0), "must be > 0"),
    ("ppo.value_clip", _ge(0), "must be >= 0 (0 = an unclipped value loss)"),
    ("ppo.adv_std_floor", _ge(0), "must be >= 0 (0 keeps the paper's normalisation)"),
    ("ppo.vf_coef", _ge(0), "must be >= 0"),
    ("ppo.cot_coef", _within(0, 1), "must be in [0, 1]"),
    ("ppo.epochs", _ge(1), "must be >= 1"),
    ("ppo.steps_per_update", _ge(1), "must be >= 1"),
    ("ppo.micro_batch", _ge(1), "must be >= 1"),
    ("ppo.grad_accum", _ge(1), "must be >= 1"),
    ("ppo.lr", _gt(0), "must be > 0"),
    ("ppo.value_lr_scale", _gt(0), "must be > 0 (the value head's rate is lr times this)"),
    ("ppo.end_lr", _ge(0), "must be >= 0"),
    ("ppo.max_grad_norm", _gt(0), "must be > 0"),
    ("ppo.value_warmup_updates", _ge(0), "must be >= 0"),
    ("ppo.target_kl", _gt(0), "must be > 0"),
    ("ppo.is_cap", _ge(1), "must be >= 1 (a cap below 1 would shrink fresh samples too)"),
    ("ppo.invalid_penalty", _ge(0), "must be >= 0 (a reward for unparsable answers would teach them)"),
    ("ppo.demo_coef", _ge(0), "must be >= 0 (0 = no demonstration loss)"),
    ("ppo.demo_batch", _ge(1), "must be >= 1"),
    ("ppo.demo_samples", _ge(1), "must be >= 1"),
    # learner
    ("learner.world_size", _ge(1), "must be >= 1"),
    ("learner.zero_stage", lambda v: v in (1, 2, 3), "must be 1, 2 or 3"),
    ("learner.cpus_per_rank", _ge(0), "must be >= 0"),
    ("learner.gpus_per_rank", _within(0, 1), ONE_GPU),
    ("learner.push_every", _ge(1), "must be >= 1"),
    # run
    ("run.total_updates", _ge(1), "must be >= 1"),
    ("run.eval_episodes", _ge(1), "must be >= 1"),
    ("run.eval_every", _ge(0), "must be >= 0 (0 = only at start and end)"),
    ("run.time_budget_min", _gt(0), "must be > 0"),
    ("run.checkpoint_every", _ge(0), "must be >= 0 (0 = never)"),
    ("run.keep_checkpoints", _ge(1), "must be >= 1"),
    ("run.max_restarts", _ge(0), "must be >= 0"),
]


def check_shape(c: Checker) -> None:
    """The embedded VLM's sizes fit together."""
    s = "model.shape."
    if c.fine(s + "text_hidden", s + "text_heads"):
        heads = c.cfg.model.shape.text_heads
        c(s + "text_hidden", lambda v: v % heads == 0, f"must be divisible by model.shape.text_heads ({heads})")
    if c.fine(s + "vision_hidden", s + "vision_heads"):
        heads = c.cfg.model.shape.vision_heads
        c(s + "vision_hidden", lambda v: v % heads == 0, f"must be divisible by model.shape.vision_heads ({heads})")
    if c.fine(s + "image_size", s + "patch_size"):
        patch = c.cfg.model.shape.patch_size
        c(s + "image_size", lambda v: v >= patch, f"must be >= model.shape.patch_size ({patch})")
    if c.fine(s + "max_positions", s + "image_size", s + "patch_size"):
        tokens = c.cfg.model.shape.image_tokens
        c(s + "max_positions", lambda v: v > tokens, f"must exceed the {tokens} image tokens of a frame")


def check_seeds(c: Checker) -> None:
    """Training, held-out and SFT seed ranges never overlap (contracts/seeds.py)."""
    cfg = c.cfg
    if c.fine("env.seed", "env.eval_seed", "rollout.num_actors"):
        end = seeds.training_seeds_end(cfg.env.seed, cfg.rollout.num_actors)
        c(
            "env.eval_seed",
            lambda v: v > end,
            f"training seeds would reach env.eval_seed (they end at {end}): "
            "raise eval_seed or lower env.seed/rollout.num_actors",
        )
    if c.fine("env.eval_seed", "run.eval_episodes"):
        last = cfg.env.eval_seed + cfg.run.eval_episodes
        c(
            "env.eval_seed",
            lambda v: last <= seeds.SFT_SEED_BASE,
            f"held-out seeds up to {last} would reach the SFT "
            f"demonstration seeds ({seeds.SFT_SEED_BASE}); lower eval_seed or run.eval_episodes",
        )


def check_cross(c: Checker) -> None:
    """Rules between fields of different sections."""
    cfg = c.cfg
    if c.fine("ppo.steps_per_update", "learner.world_size", "ppo.micro_batch"):
        need = cfg.learner.world_size * cfg.ppo.micro_batch
        c(
            "ppo.steps_per_update",
            lambda v: v >= need,
            f"must give every learner rank at least one micro-batch: >= learner.world_size x ppo.micro_batch = {need}",
        )
    paths = ("replay.capacity_steps", "ppo.steps_per_update", "env.envs_per_actor", "rollout.steps_per_call")
    if c.fine(*paths):
        collect = cfg.env.envs_per_actor * cfg.rollout.steps_per_call
        need = cfg.ppo.steps_per_update + collect
        c(
            "replay.capacity_steps",
            lambda v: v >= need,
            f"must be >= {need} = ppo.steps_per_update ({cfg.ppo.steps_per_update}) + one collect's steps "
            f"(env.envs_per_actor x rollout.steps_per_call = {collect}): a smaller store evicts episodes before "
            "an update's worth is in, and the driver waits for it forever",
        )
    if c.fine("ppo.end_lr", "ppo.lr"):
        c(
            "ppo.end_lr",
            lambda v: v <= cfg.ppo.lr,
            f"must be <= ppo.lr ({show(cfg.ppo.lr)}): the cosine schedule's floor",
        )
    if c.fine("rollout.max_model_len", "rollout.max_new_tokens"):
        cap = cfg.rollout.max_new_tokens
        c(
            "rollout.max_model_len",
            lambda v: v == 0 or v > cap,
            f"must be 0 or > rollout.max_new_tokens ({cap}): the prompt needs room too",
        )
    if c.fine("learner.dtype", "model.dtype", "learner.zero_stage"):
        c(
            "learner.dtype",
            lambda v: v in ("", cfg.model.dtype) or cfg.learner.zero_stage < 3,
            f"other than model.dtype ({cfg.model.dtype}) needs learner.zero_stage 1 or 2: the weight-push probe "
            "is scored on a whole copy of the module in the engine's dtype",
        )
    if c.fine("learner.cpus_per_rank", "learner.gpus_per_rank", "learner.resources"):
        bundle = [cfg.learner.cpus_per_rank, cfg.learner.gpus_per_rank, *cfg.learner.resources.values()]
        c(
            "learner.cpus_per_rank",
            lambda v: any(bundle),
            "a learner rank must reserve something (with "
            "learner.gpus_per_rank and learner.resources): Ray refuses an empty placement-group bundle",
        )


def problems(cfg: Config) -> list[str]:
    """Every problem of `cfg`, one line each; empty when it is valid."""
    c = Checker(cfg)
    check_types(c, cfg)
    for path, ok, rule in FIELD_RULES:
        c.field(path, ok, rule)
    check_shape(c)
    check_seeds(c)
    check_cross(c)
    return c.problems


def validate(cfg: Config) -> Config:
    """`cfg` itself when valid; otherwise one ConfigError listing every problem."""
    if found := problems(cfg):
        raise ConfigError(found)
    return cfg
