"""What every comparison shares: the run context, the private Ray cluster, actor factories, real replay data and
the training runs that the async/sync, throttle and profile comparisons read.

Every measured component runs in its own Ray actor with one CPU (so one OMP thread, as in a real run), one
comparison after another, and is killed when its measurement ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import tempfile
import time
from dataclasses import dataclass, field

import ray

from benchmarks.models import build_variant, count_parameters
from contracts.config import EnvConfig, LearnerConfig, PPOConfig, ReplayConfig, RolloutConfig

BIG_KV_GIB = 3
"""vLLM KV-cache space for the ~100M variant (batch 64 x ~310 tokens needs ~1.5 GiB; the default 1 GiB would
make vLLM queue requests and the batch-64 figure would measure that instead)."""


@dataclass
class Context:
    quick: bool = False
    """One repeat and the smallest sizes: a smoke test, not numbers to quote."""
    repeats: int = 3
    model: str = "checkpoints/numberline-sft"
    """The default policy (the NumberLine SFT checkpoint that `make train` starts from)."""
    big_model_dir: str = "checkpoints/bench-100m"
    """Where the ~100M variant is built (once; reused while its stamp matches)."""
    work_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path(tempfile.mkdtemp(prefix="rl4vlm-bench-")))
    """Training runs and profiles of this suite run (scratch)."""
    cache: dict = field(default_factory=dict)
    """Results shared between comparisons of one suite run (e.g. the same training run feeds two sections)."""

    def size(self, quick, full):
        return quick if self.quick else full

    def big_model(self) -> str:
        if "big_model" not in self.cache:
            self.cache["big_model"] = build_variant(self.model, self.big_model_dir)
        return self.cache["big_model"]

    def models(self) -> list[tuple[str, str]]:
        """(label, path) of the default model and the ~100M variant, labelled with their parameter counts."""
        out = []
        for path in (self.model, self.big_model()):
            out.append((f"{count_parameters(path) / 1e6:.1f}M params", path))
        return out


# ---- Ray -------------------------------------------------------------------------------------------------------
def start_ray(num_cpus: int) -> None:
    """A private local cluster with its own temp dir (cluster/launch.py `init_ray`, as a run starts one)."""
    from cluster.launch import init_ray

    init_ray(num_cpus, temp_prefix="rl4vlm-bench-ray-", private=True)


def remote(cls, cpus: float = 1.0, env: dict[str, str] | None = None):
    """`ray.remote(cls)` with `cpus` CPUs (Ray sets OMP_NUM_THREADS to match) and extra env vars."""
    from cluster.launch import ACTOR_ENV

    return ray.remote(cls).options(num_cpus=cpus, runtime_env={"env_vars": {**ACTOR_ENV, **(env or {})}})


def kill(*handles) -> None:
    for h in handles:
        with contextlib.suppress(Exception):
            ray.kill(h)


def timed(fn, *args):
    """(result, seconds) of `fn(*args)`, waiting for the result when it is an object ref (a remote call)."""
    t0 = time.perf_counter()
    out = fn(*args)
    if isinstance(out, ray.ObjectRef):
        out = ray.get(out)
    return out, time.perf_counter() - t0


def kv_env(model_path: str, ctx: Context) -> dict[str, str]:
    big = "big_model" in ctx.cache and pathlib.Path(model_path) == pathlib.Path(ctx.cache["big_model"])
    return {"VLLM_CPU_KVCACHE_SPACE": str(BIG_KV_GIB)} if big else {}


def rollout_actor(
    ctx: Context, model_path: str, store=None, actor_id: int = 0, backend: str = "vllm", dtype="float32", **rollout
):
    """The project's RolloutActor as a 1-CPU Ray actor, default env and rollout settings unless overridden."""
    from actors.rollout_actor import RolloutActor

    envs = rollout.pop("envs_per_actor", EnvConfig.envs_per_actor)
    cfg = RolloutConfig(backend=backend, **rollout)
    handle = remote(RolloutActor, env=kv_env(model_path, ctx)).remote(
        actor_id, EnvConfig(envs_per_actor=envs), cfg, model_path, store, dtype
    )
    ray.get(handle.policy_version.remote())  # started: the engine is loaded
    return handle


def replay_store(capacity_steps: int = 100_000):
    from actors.replay_store import ReplayStore

    return ray.remote(num_cpus=0)(ReplayStore).remote(ReplayConfig(capacity_steps=capacity_steps, max_policy_lag=10**6))


def learner_ranks(
    model_path: str,
    ppo: PPOConfig,
    ranks: int = 1,
    zero_stage: int = 2,
    cls=None,
    cpus: float = 1.0,
    dtype: str = "float32",
    env: dict[str, str] | None = None,
) -> list:
    """`ranks` learner ranks of `cls` (default: the project's LearnerWorker) as Ray actors, one process group.
    Each runs one OMP thread whatever `cpus` reserves (ACTOR_ENV; `env` may override), so idle ranks can be
    parked on fractions of a CPU. All ranks are started before any is waited for: rank 0's construction
    blocks in the rendezvous until the others join."""
    from cluster.launch import free_port
    from learner.learner import LearnerWorker

    cfg = LearnerConfig(world_size=ranks, zero_stage=zero_stage)
    args = (ranks, free_port(), model_path, ppo, cfg, 1000, RolloutConfig.temperature, 0, dtype)
    handles = [remote(cls or LearnerWorker, cpus=cpus, env=env).remote(rank, *args) for rank in range(ranks)]
    ray.get([h.__ray_ready__.remote() for h in handles])
    return handles


def learner_actor(model_path: str, ppo: PPOConfig, **options):
    """One learner rank (world size 1): `learner_ranks` with ranks=1."""
    return learner_ranks(model_path, ppo, 1, **options)[0]


def replay_table(ctx: Context, steps: int):
    """`steps` (or a few more: whole episodes) real replay rows collected by a vLLM rollout actor with the
    default model, so learner comparisons train on what a run trains on. Cached for the suite run."""
    key = ("table", steps)
    if key not in ctx.cache:
        store = replay_store()
        actor = rollout_actor(ctx, ctx.model, store=store)
        shards = None
        while shards is None:
            ray.get(actor.collect.remote())
            shards = ray.get(store.take.remote(steps, 0, 1))
        ctx.cache[key] = shards[0]
        kill(actor, store)
    return ctx.cache[key]


# ---- training runs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training run of the real driver (cluster.train.main) for the comparisons that need whole runs."""

    mode: str = "async"
    max_backlog_updates: float | None = None
    """None keeps the config default."""
    num_actors: int = 1
    extra: tuple[str, ...] = ()
    """More flags (e.g. a previous default's settings); `label` names them in the run's folder."""
    label: str = ""

    def args(self) -> list[str]:
        out = ["--run.mode", self.mode, "--rollout.num-actors", str(self.num_actors)]
        if self.max_backlog_updates is not None:
            out += ["--rollout.max-backlog-updates", str(self.max_backlog_updates)]
        return out + list(self.extra)

    def key(self) -> str:
        backlog = "default" if self.max_backlog_updates is None else f"{self.max_backlog_updates:g}"
        return f"{self.mode}-backlog{backlog}-actors{self.num_actors}" + (f"-{self.label}" if self.label else "")


def run_args(ctx: Context) -> tuple[str, list[str]]:
    """The preset and overrides of every benchmarked training run: short, no evaluation or checkpoints inside."""
    if ctx.quick:
        return "tiny", ["--run.total-updates", "3", "--run.eval-episodes", "2"]
    return "numberline", ["--run.total-updates", "6", "--run.eval-episodes", "16"]


def training_run(ctx: Context, spec: RunSpec, repeat: int, overrides: list[str] | None = None) -> dict:
    """Run (or reuse from this suite run) one training run; summarise its PPO loop from history.jsonl, with the
    share of the cores each group of its processes kept busy over the loop (benchmarks/cores.py).
    `overrides` replaces `run_args`'s (a whole learning run instead of the short timed one)."""
    key = ("run", spec, repeat, tuple(overrides or ()))
    if key in ctx.cache:
        return ctx.cache[key]
    from benchmarks.cores import CoreSampler
    from cluster.train import main

    preset, short = run_args(ctx)
    name = f"{spec.key()}-r{repeat}" + ("-full" if overrides else "")
    argv = [preset, "--model.path", ctx.model, "--run.out-dir", str(ctx.work_dir / "runs"), "--run.name", name]
    argv += overrides or [*short, "--run.eval-every", "0", "--run.checkpoint-every", "0"]
    argv += spec.args()
    (ctx.work_dir / "runs").mkdir(parents=True, exist_ok=True)
    history = ctx.work_dir / "runs" / name / "history.jsonl"
    with open(ctx.work_dir / "runs" / f"{name}.log", "w") as log, contextlib.redirect_stdout(log):
        with CoreSampler(history) as sampler:
            main(argv)
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    summary = summarize_history(rows)
    summary["cores_busy"] = sampler.busy(*loop_lines(rows))
    summary["rows"] = rows
    ctx.cache[key] = summary
    return ctx.cache[key]


def loop_lines(rows: list[dict]) -> tuple[int, int]:
    """Indices of the PPO loop's first history line (the SFT-start evaluation) and its last update's line."""
    first = next(i for i, r in enumerate(rows) if r["update"] == 0 and "rollout/env_steps" not in r)
    return first, max(i for i, r in enumerate(rows) if "learner/samples" in r)


def summarize_history(rows: list[dict]) -> dict:
    """The PPO loop of one run: wall clock from the SFT-start log line to the last update, env steps collected
    and used, staleness, learner time per update, and what the replay store evicted or dropped."""
    first, final = loop_lines(rows)
    start, last = rows[first], rows[final]
    updates = [r for r in rows if "learner/samples" in r]
    collected = sum(r.get("rollout/env_steps", 0.0) for r in updates)
    used = sum(r["learner/samples"] for r in updates)
    train_s = sorted(r["timing/train_s"] for r in updates)
    return {
        "updates": len(updates),
        "loop_s": last["time/elapsed_s"] - start["time/elapsed_s"],
        # From the first update's line on: every update in it found its rollout already running (steady state).
        "steady_s": last["time/elapsed_s"] - updates[0]["time/elapsed_s"],
        "collected_steps": collected,
        "used_steps": used,
        "used_frac": used / collected if collected else math.nan,
        "staleness": sum(r["learner/staleness_mean"] for r in updates) / len(updates),
        "train_s_median": train_s[len(train_s) // 2],
        "train_s_total": sum(train_s),
        "evicted_steps": last.get("replay/evicted_steps", 0.0),
        "dropped_stale_steps": last.get("replay/dropped_stale_steps", 0.0),
        "push_s_median": sorted(r.get("timing/weight_push_s", math.nan) for r in updates)[len(updates) // 2],
    }
