"""Soak: memory of every process of a long run (100+ small updates), sampled per update, and its slope.

RSS is split as Linux reports it (/proc/<pid>/status): anonymous memory (the process's own heap, where a leak
shows), file-backed pages and shared memory. Ray maps its object store into every worker that reads an
object, so a rollout actor's RSS also counts the object-store pages it has touched (weight pushes land in a
different place each time until the store's mapping is covered); that part is bounded by the object store's
size and is not the process's own memory. The slope is a least-squares fit over the updates after warm-up.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from benchmarks import report
from benchmarks.chaos import RunInThread, pid_of, status, wait_for
from benchmarks.common import Context

NAME = "soak"
TITLE = "12. Soak: memory per process over a long run (anonymous, file-backed and shared RSS per update)"
WARMUP = 10
"""Updates left out of the slope: caches, allocator pools and the object-store mapping fill up first."""
KINDS = ("RssAnon", "RssFile", "RssShmem")
EVAL_EVERY = 5
"""Held-out evaluations during the soak too (their own env copies and longer batches)."""


def memory_mb(pid: int) -> dict[str, float]:
    """The process's RSS parts in MB (/proc/<pid>/status; values there are in kB)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in KINDS:
                out[key] = int(value.split()[0]) / 1024
    return out


def slope(updates: list[int], values: list[float]) -> float:
    """MB per update, least squares."""
    return float(np.polyfit(updates, values, 1)[0]) if len(set(updates)) > 1 else 0.0


def soak_run(
    ctx: Context, updates: int, run_name: str = "soak", preset: str = "tiny", extra: tuple[str, ...] = ()
) -> dict[str, dict[int, dict[str, float]]]:
    """A `preset` run of `updates` with the default model; {process: {update: memory_mb}} sampled as it goes."""
    import ray

    from cluster.control import NAMESPACE, lookup

    flags = ["--model.path", ctx.model, "--run.out-dir", str(ctx.work_dir / "soak"), "--run.name", run_name]
    flags += ["--run.total-updates", str(updates), "--run.checkpoint-every", "0", "--run.eval-every", str(EVAL_EVERY)]
    run = RunInThread([preset, *flags, "--run.time-budget-min", "600", *extra])
    wait_for(lambda: run.running() and status(run_name).get("update", 0) >= 1, 900, "the first update")
    actor = lambda name: ray.get_actor(name, namespace=NAMESPACE)  # noqa: E731
    pids = {
        "driver": os.getpid(),
        "rollout actor": pid_of(ray.get(lookup(run_name).rollout_actor.remote(0))),
        "learner rank": pid_of(actor(f"learner-{run_name}-0")),
        "replay store": pid_of(actor(f"store-{run_name}")),
    }
    samples: dict[str, dict[int, dict[str, float]]] = {name: {} for name in pids}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            update = status(run_name).get("update", 0)
            for name, pid in pids.items():
                try:
                    samples[name][update] = memory_mb(pid)  # the last sample of each update stays
                except OSError:  # the run is ending
                    return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run.join(60 * 120)
    finally:
        done.set()
        sampler.join(10)
    return samples


def run(ctx: Context) -> dict:
    updates = ctx.size(WARMUP + 10, 120)
    t0 = time.perf_counter()
    samples = soak_run(ctx, updates)
    wall = time.perf_counter() - t0
    metrics, ratios = [], []
    for name, by_update in samples.items():
        kept = sorted(u for u in by_update if u >= WARMUP)
        for kind in KINDS:
            values = [by_update[u][kind] for u in kept]
            label = f"{name}: {kind} slope after update {WARMUP}"
            metrics.append(report.metric(label, "MB/update", [slope(kept, values)]))
        anon = [by_update[u]["RssAnon"] for u in kept]
        metrics.append(report.metric(f"{name}: RssAnon at update {kept[0]} / {kept[-1]}", "MB", [anon[0], anon[-1]]))
        ratios.append(
            report.ratio(
                f"{name}: own memory (RssAnon) at the last update / after warm-up",
                [anon[-1]],
                [anon[0]],
                target=1.05,
                direction="max",
                headline=name == "rollout actor",
            )
        )
    return {
        "setup": (
            f"`python -m cluster.train tiny --model.path {ctx.model} --run.total-updates {updates} "
            f"--run.eval-every {EVAL_EVERY} --run.checkpoint-every 0`, the driver in this process; /proc/<pid>/status "
            f"of the driver, rollout actor 0, learner rank 0 and the replay store every 0.5 s ({wall / 60:.1f} min)."
        ),
        "repeats": 1,
        "metrics": metrics,
        "ratios": ratios,
        "notes": [
            "RssShmem is Ray's object store as mapped into the process (bounded by the store's size), not its own.",
        ],
    }
