"""3. Learner: DeepSpeed ZeRO stages 1, 2 and 3 against plain torch, same model, same batch, same PPO maths.

Every variant is the project's `LearnerWorker` running its real `LearnerWorker.update` (proximal pass, GAE,
clipped PPO epochs: learner/ppo_update.py) on the same replay rows collected by a real rollout actor. Plain torch
swaps only the engine (`LearnerWorker._wrap`) for learner/step_model.py `PlainTorchModel`, the stand-in the
tests check against DeepSpeed: backward of loss / grad_accum, then gradient clipping and an AdamW step every
grad_accum micro-batches, which is what DeepSpeed's engine does at these settings. One rank each (the default
run's learner), one CPU each, run one after the other with repeats alternating between variants.
"""

from __future__ import annotations

import dataclasses

import ray

from benchmarks import report
from benchmarks.common import Context, kill, learner_actor, replay_table
from contracts.config import PPOConfig
from learner.learner import LearnerWorker
from learner.step_model import PlainTorchModel

NAME = "zero"
TITLE = "3. Learner: ZeRO-1/2/3 vs plain torch, samples/s of a PPO update"
VARIANTS = ("torch", "zero1", "zero2", "zero3")


class PlainTorchLearner(LearnerWorker):
    """The learner rank with DeepSpeed's engine swapped for `PlainTorchModel`; everything else is the same."""

    def _wrap(self, optimizer, ds_config: dict):
        grad_accum, clip = ds_config["gradient_accumulation_steps"], ds_config["gradient_clipping"]
        return PlainTorchModel(self.module, optimizer, grad_accum, clip), optimizer


def bench_ppo(ctx: Context) -> PPOConfig:
    """The default PPO settings (quick: a smaller batch), with every epoch run and the policy trained: early
    stopping on KL or a value-only warm-up would make variants do different amounts of work."""
    ppo = PPOConfig(target_kl=float("inf"), value_warmup_updates=0)
    if ctx.quick:
        ppo = dataclasses.replace(ppo, steps_per_update=32, micro_batch=8, grad_accum=2, epochs=1)
    return ppo


def run(ctx: Context) -> dict:
    ppo = bench_ppo(ctx)
    table = replay_table(ctx, ppo.steps_per_update)
    table_ref = ray.put(table)
    learners = {}
    for variant in VARIANTS:
        stage = 2 if variant == "torch" else int(variant[-1])
        cls = PlainTorchLearner if variant == "torch" else None
        # All four stay alive so repeats can alternate; they run one at a time, so half a CPU each is reserved.
        learners[variant] = learner_actor(ctx.model, ppo, zero_stage=stage, cls=cls, cpus=0.5)
        ray.get(learners[variant].update.remote(table_ref, 0))  # warm-up update (allocations, lazy inits)
    rates = {v: [] for v in VARIANTS}
    update_s = {v: [] for v in VARIANTS}
    for _ in range(ctx.repeats):
        for variant, learner in learners.items():  # one at a time: each has the same core to itself
            out = ray.get(learner.update.remote(table_ref, 0))
            samples = out["learner/samples"] * ppo.epochs
            rates[variant].append(samples / out["timing/train_s"])
            update_s[variant].append(out["timing/train_s"])
    kill(*learners.values())

    metrics = [report.metric(f"{v}: samples/s", "samples/s", rates[v]) for v in VARIANTS]
    metrics += [report.metric(f"{v}: one PPO update", "s", update_s[v]) for v in VARIANTS]
    ratios = [
        report.ratio(
            f"learner samples/s: ZeRO-{v[-1]} / plain torch",
            rates[v],
            rates["torch"],
            target=0.9 if v == "zero2" else None,
            headline=v == "zero2",
        )
        for v in VARIANTS[1:]
    ]
    return {
        "setup": (
            f"Model {ctx.model}; {table.num_rows} replay rows, micro-batch {ppo.micro_batch}, grad_accum "
            f"{ppo.grad_accum}, {ppo.epochs} epoch(s), fp32, AdamW, world size 1, one warm-up update per variant."
        ),
        "metrics": metrics,
        "ratios": ratios,
        "notes": [
            "samples/s = replay rows x PPO epochs / wall clock of `LearnerWorker.update` (which includes the "
            "proximal scoring pass, collation and the optimizer steps).",
            "With one rank ZeRO has nothing to partition: this measures DeepSpeed's bookkeeping (flat fp32 buffers, "
            "gradient bucketing, stage-3 parameter fetch hooks) on a model this small.",
        ],
    }
