"""14. The learner against the hardware: FLOP/s of a PPO update over the machine's matmul peak, and levers.

Every variant is the project's `LearnerWorker.update` (learner/ppo_update.py) on the same real replay rows,
split over the ranks by the replay store's own `take`. FLOPs are counted, not estimated: torch's FlopCounterMode
over one unpadded sample's scoring forward (the proximal pass) and forward + backward (a PPO micro-batch), for
every distinct (prompt, response) length in the rows, with the update's own scoring code (logits only at
response positions). An update's FLOPs are the proximal pass over every row plus the micro-batches it trained
(`learner/optimizer_micro_steps` x micro-batch rows, at the rows' mean cost). The peak is square matmuls
(512/1024/2048, the best) in the same dtype, run on as many 1-thread processes (or threads) at once as the
variant's learner uses, measured in the same suite run.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import ray
import torch

from benchmarks import report
from benchmarks.common import Context, kill, learner_ranks, remote, replay_table
from benchmarks.zero import bench_ppo
from contracts.config import ReplayConfig, RolloutConfig

NAME = "learner_peak"
TITLE = "14. Learner vs the hardware: FLOP/s of the matmul peak, padding, where an update's time goes"


@dataclasses.dataclass(frozen=True)
class Variant:
    ranks: int = 1
    threads: int = 1
    dtype: str = "float32"
    micro_batch: int = 16
    grad_accum: int = 4


VARIANTS = {  # every one trains 64 samples per optimizer step
    "previous default (1 rank, 1 thread, fp32, 16 x 4)": Variant(),
    "1 rank, bf16": Variant(dtype="bfloat16"),
    "1 rank, 2 threads": Variant(threads=2),
    "2 ranks x 1 thread, fp32, 32 x 1": Variant(ranks=2, micro_batch=32, grad_accum=1),
    "new default (2 ranks x 1 thread, bf16, 32 x 1)": Variant(ranks=2, dtype="bfloat16", micro_batch=32, grad_accum=1),
}


class MatmulPeak:
    """One process's best square-matmul FLOP/s (a Ray actor: as many at once as a variant has ranks)."""

    def measure(self, dtype: str, threads: int, seconds: float = 1.0) -> float:
        torch.set_num_threads(threads)
        best = 0.0
        for n in (512, 1024, 2048):
            a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
            a @ b
            t0, k = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                a @ b
                k += 1
            best = max(best, 2 * n**3 * k / (time.perf_counter() - t0))
        return best


def matmul_peak(dtype: str, ranks: int, threads: int, seconds: float) -> float:
    """Sum of `ranks` concurrent processes' best matmul FLOP/s, each with `threads` threads."""
    probes = [remote(MatmulPeak, cpus=0.5, env={"OMP_NUM_THREADS": str(threads)}).remote() for _ in range(ranks)]
    out = sum(ray.get([p.measure.remote(dtype, threads, seconds) for p in probes]))
    kill(*probes)
    return out


def lengths(table) -> list[tuple[int, int]]:
    """(prompt, response) token counts of every row."""
    import pyarrow.compute as pc

    prompt = pc.list_value_length(table.column("prompt_ids")).to_pylist()
    return list(zip(prompt, pc.list_value_length(table.column("response_ids")).to_pylist()))


def flops_by_length(model_path: str, table) -> dict[tuple[int, int], tuple[float, float]]:
    """FLOPs of one unpadded row's scoring forward and of its forward + backward, per (prompt, response) length."""
    from torch.utils.flop_counter import FlopCounterMode

    from learner.batch import TokenTexts, collate, samples_from_table
    from learner.step_model import PlainTorchModel, WrappedModelStep
    from models.families import family_of_model, image_token_id
    from models.policy import PolicyWithValue, load_policy
    from models.tokenizer import banned_token_ids

    vlm, processor, head = load_policy(model_path)
    module = PolicyWithValue(vlm, head)
    banned = torch.tensor(banned_token_ids(processor.tokenizer))
    wrapped = PlainTorchModel(module, torch.optim.SGD(module.parameters(), lr=0.0), 1, 1.0)
    step = WrappedModelStep(wrapped, None, torch.device("cpu"), banned, RolloutConfig.temperature, 0.5)
    family, image_token = family_of_model(vlm), image_token_id(vlm.config)
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for s in samples_from_table(table, TokenTexts(processor.tokenizer)):
        key = (len(s.record.prompt_ids), len(s.record.response_ids))
        if key in out:
            continue
        batch = collate([s], processor.image_processor, processor.tokenizer.pad_token_id, family, image_token)
        with FlopCounterMode(display=False) as fwd, torch.no_grad():
            step.score(batch)
        with FlopCounterMode(display=False) as both:
            seq, values, _ = step.score(batch)
            (seq.sum() + values.sum()).backward()
        out[key] = (fwd.get_total_flops(), both.get_total_flops())
    return out


def update_flops(shards: list, flops: dict, micro_steps: float, micro_batch: int) -> float:
    """One update's FLOPs over all ranks: the proximal pass over every row, then the trained micro-batches."""
    total = 0.0
    for shard in shards:
        rows = [flops[k] for k in lengths(shard)]
        total += sum(f for f, _ in rows) + micro_steps * micro_batch * float(np.mean([t for _, t in rows]))
    return total


def padding_waste(shards: list, micro_batch: int, rng) -> float:
    """Padded / real tokens of an epoch's shuffled micro-batches on every rank (right-padded to the longest)."""
    padded = real = 0
    for shard in shards:
        tokens = np.array([p + r for p, r in lengths(shard)])[rng.permutation(shard.num_rows)]
        for i in range(0, len(tokens), micro_batch):
            chunk = tokens[i : i + micro_batch]
            padded, real = padded + chunk.max() * len(chunk), real + chunk.sum()
    return padded / real


def shards_of(table, ranks: int, steps: int) -> list:
    """The rows split over `ranks` as a run's replay store splits them: `steps` of them, or as many as the rows
    can give every rank its share of (a store that cannot answer a take keeps its episodes)."""
    from actors.replay_store import ReplayStore

    store = ReplayStore(ReplayConfig(capacity_steps=10**6, max_policy_lag=10**6))
    for batch in table.to_batches():
        store.add(batch)
    for wanted in range(steps, 0, -1):
        if (shards := store.take(wanted, 0, ranks)) is not None:
            return shards
    raise ValueError(f"{table.num_rows} rows cannot feed {ranks} learner ranks")


def start_learner(ctx: Context, v: Variant, ppo) -> list:
    ppo = dataclasses.replace(ppo, micro_batch=v.micro_batch, grad_accum=v.grad_accum)
    env = {"OMP_NUM_THREADS": str(v.threads)}
    return learner_ranks(ctx.model, ppo, v.ranks, cpus=0.5, dtype=v.dtype, env=env)


def one_update(ranks: list, shards: list) -> dict:
    """Every rank's metrics merged: the slowest rank's timings, summed samples (cluster/metrics.py)."""
    from cluster.metrics import merge_ranks

    refs = [ray.put(s) for s in shards]
    return merge_ranks(ray.get([r.update.remote(ref, 0) for r, ref in zip(ranks, refs)]))


def run(ctx: Context) -> dict:
    ppo = bench_ppo(ctx)
    table = replay_table(ctx, ppo.steps_per_update)
    flops = flops_by_length(ctx.model, table)
    seconds = ctx.size(0.3, 1.0)
    rows = {label: {"rate": [], "of_peak": [], "update_s": [], "phases": []} for label in VARIANTS}
    peaks, waste = {}, {}
    for label, v in VARIANTS.items():
        shards = shards_of(table, v.ranks, ppo.steps_per_update)
        waste[label] = padding_waste(shards, v.micro_batch, np.random.default_rng(0))
        ranks = start_learner(ctx, v, ppo)
        one_update(ranks, shards)  # warm-up: allocations, lazy inits
        for _ in range(ctx.repeats):
            out = one_update(ranks, shards)
            work = update_flops(shards, flops, out["learner/optimizer_micro_steps"], v.micro_batch)
            rows[label]["rate"].append(work / out["timing/train_s"])
            rows[label]["update_s"].append(out["timing/train_s"])
            rows[label]["phases"].append(
                {k[7:-2]: out[k] for k in out if k.startswith("timing/") and k != "timing/train_s"}
            )
        kill(*ranks)
        peaks[label] = [matmul_peak(v.dtype, v.ranks, v.threads, seconds) for _ in range(ctx.repeats)]
        rows[label]["of_peak"] = [r / p for r, p in zip(rows[label]["rate"], peaks[label])]
    return render(ctx, ppo, table, rows, peaks, waste)


def render(ctx: Context, ppo, table, rows: dict, peaks: dict, waste: dict) -> dict:
    metrics, ratios = [], []
    for label, r in rows.items():
        metrics += [
            report.metric(f"{label}: one PPO update", "s", r["update_s"]),
            report.metric(f"{label}: learner FLOP/s", "GFLOP/s", [x / 1e9 for x in r["rate"]]),
            report.metric(
                f"{label}: matmul peak, same dtype and processes", "GFLOP/s", [x / 1e9 for x in peaks[label]]
            ),
            report.metric(f"{label}: padded / real tokens", "x", [waste[label]]),
        ]
        for phase in ("collate", "proximal", "forward", "backward", "optimizer"):
            share = [p[phase] / t for p, t in zip(r["phases"], r["update_s"])]
            metrics.append(report.metric(f"{label}: share of the update in {phase}", "share", share))
    previous, new = list(VARIANTS)[0], list(VARIANTS)[-1]
    for label, r in rows.items():
        ratios.append(
            report.ratio(
                f"learner FLOP/s of peak: {label}",
                r["rate"],
                peaks[label],
                target=0.6 if label == new else None,
                headline=label == new,
                unit="share",
            )
        )
    for label in list(VARIANTS)[1:]:
        ratios.append(
            report.ratio(
                f"update wall clock: previous default / {label}", rows[previous]["update_s"], rows[label]["update_s"]
            )
        )
    return {
        "setup": (
            f"Model {ctx.model}; {table.num_rows} replay rows, {ppo.epochs} epoch(s), every epoch run (no KL stop, "
            "no value warm-up), ZeRO-2, one warm-up update per variant; ranks are Ray actors of 0.5 CPU with "
            "OMP_NUM_THREADS = the variant's threads, one variant at a time."
        ),
        "metrics": metrics,
        "ratios": ratios,
        "notes": [
            "FLOPs of one unpadded row (FlopCounterMode: matmuls, attention, convolutions; elementwise ops are "
            "not counted): the proximal pass counts its forward, each trained micro-batch row its forward and "
            "backward.",
            "Shares of an update: collate (pixels, padding), proximal (its no-grad forwards), forward (the PPO "
            "micro-batches' forwards and losses), backward, optimizer (`step`: clipping and AdamW every "
            "grad_accum micro-batches; DeepSpeed's gradient all-reduce between ranks falls in backward and "
            "step). The rest (GAE, PNG decoding, all-reduces of a few floats) is what the shares leave.",
        ],
    }
