"""8. Model families and dtype: rollout env steps/s and learner samples/s of each tiny real family, and bf16 vs
fp32 on the embedded default, in one run.

Each variant is the project's RolloutActor (vLLM, NumberLine, the default 16 envs) and LearnerWorker (ZeRO-2,
one rank, its real PPO update on replay rows that variant's own rollout actor collected: prompt lengths differ
per family, e.g. LlavaNext's anyres tiling gives 336 image tokens where LLaVA-1.5 style gives 64). The tiny
family checkpoints are models/tiny_families.py (random weights: their answers run to the token cap).
"""

from __future__ import annotations

import dataclasses

import ray

from benchmarks import report
from benchmarks.common import Context, kill, learner_actor, replay_store, rollout_actor
from contracts.config import PPOConfig

NAME = "families"
TITLE = "8. Model families (tiny llava / llava_next / qwen2_vl / qwen2_5_vl) and bf16 vs fp32, default model"
FAMILY_NAMES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")


def _ppo(ctx: Context) -> PPOConfig:
    ppo = PPOConfig(target_kl=float("inf"), value_warmup_updates=0, steps_per_update=ctx.size(32, 128), epochs=1)
    return dataclasses.replace(ppo, micro_batch=8, grad_accum=2) if ctx.quick else ppo


def measure(ctx: Context, path: str, dtype: str, ppo: PPOConfig) -> tuple[list[float], list[float], int]:
    """Rollout env steps/s per collect and learner samples/s per update, and the rows' mean sequence length."""
    store = replay_store()
    actor = rollout_actor(ctx, path, store=store, dtype=dtype, max_new_tokens=ctx.size(24, 48))
    ray.get(actor.collect.remote())  # warm-up (first-call allocations)
    rollout = []
    for _ in range(ctx.repeats):
        out = ray.get(actor.collect.remote())
        rollout.append(out["rollout/env_steps"] / out["timing/collect_s"])
    shards = ray.get(store.take.remote(ppo.steps_per_update, 0, 1))
    while shards is None:
        ray.get(actor.collect.remote())
        shards = ray.get(store.take.remote(ppo.steps_per_update, 0, 1))
    kill(actor, store)
    table = shards[0]
    lengths = [
        len(p) + len(r) for p, r in zip(table.column("prompt_ids").to_pylist(), table["response_ids"].to_pylist())
    ]
    learner = learner_actor(path, ppo, dtype=dtype)
    ref = ray.put(table)
    ray.get(learner.update.remote(ref, 0))  # warm-up update
    learn = []
    for _ in range(ctx.repeats):
        out = ray.get(learner.update.remote(ref, 0))
        learn.append(out["learner/samples"] * ppo.epochs / out["timing/train_s"])
    kill(learner)
    return rollout, learn, round(sum(lengths) / len(lengths))


def run(ctx: Context) -> dict:
    from models.tiny_families import build

    ppo = _ppo(ctx)
    variants = [
        ("embedded default, float32", ctx.model, "float32"),
        ("embedded default, bfloat16", ctx.model, "bfloat16"),
    ]
    variants += [(f"tiny {f}, float32", str(build(f, ctx.work_dir / f"family-{f}")), "float32") for f in FAMILY_NAMES]
    metrics, rates, lengths = [], {}, {}
    for label, path, dtype in variants:
        rollout, learn, length = measure(ctx, path, dtype, ppo)
        rates[label], lengths[label] = (rollout, learn), length
        metrics.append(report.metric(f"{label}: rollout env steps/s", "env steps/s", rollout))
        metrics.append(report.metric(f"{label}: learner samples/s", "samples/s", learn))
    fp32, bf16 = rates["embedded default, float32"], rates["embedded default, bfloat16"]
    ratios = [
        report.ratio("rollout env steps/s: bf16 / fp32, embedded default", bf16[0], fp32[0]),
        report.ratio("learner samples/s: bf16 / fp32, embedded default", bf16[1], fp32[1]),
    ]
    return {
        "setup": (
            f"NumberLine, 16 envs, vLLM, max_new_tokens {ctx.size(24, 48)}; learner ZeRO-2, one rank, "
            f"{ppo.steps_per_update} rows x {ppo.epochs} epoch, micro-batch {ppo.micro_batch}; one warm-up call each. "
            "Mean sequence length (prompt incl. image tokens + response): "
            + ", ".join(f"{k} {v}" for k, v in lengths.items())
            + "."
        ),
        "metrics": metrics,
        "ratios": ratios,
        "notes": [
            "The tiny families are random-weight checkpoints of each real architecture (2 text layers, width 128), "
            "so their numbers compare the families' per-token work at equal size, not real models' speed.",
            "bf16: vLLM runs the model in bf16; the learner runs DeepSpeed's bf16 mode (bf16 module, fp32 master "
            "weights in the optimizer).",
        ],
    }
