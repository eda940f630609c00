"""6. Rollout throughput with 1 and 2 rollout actors (1 CPU each), shipping to one replay store.

Per repeat: actor 0 collects alone, then both actors collect at the same time (the same number of calls
each); throughput = env steps (tokens) of all actors / wall clock of the phase. On a 2-core host the two
actors take both cores, and the Ray processes and the driver share them.
"""

from __future__ import annotations

import time

import ray

from benchmarks import report
from benchmarks.common import Context, kill, replay_store, rollout_actor

NAME = "scaling"
TITLE = "6. Rollout throughput with 1 and 2 rollout actors"


def phase(actors, calls: int) -> tuple[float, float, float]:
    """(env steps, tokens, seconds) of `calls` collect calls on every actor at once."""
    t0 = time.perf_counter()
    pending = {a.collect.remote(): a for a in actors}
    left = {a: calls - 1 for a in actors}
    steps = tokens = 0.0
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        actor = pending.pop(ref)
        out = ray.get(ref)
        steps, tokens = steps + out["rollout/env_steps"], tokens + out["rollout/tokens"]
        if left[actor]:
            left[actor] -= 1
            pending[actor.collect.remote()] = actor
    return steps, tokens, time.perf_counter() - t0


def run(ctx: Context) -> dict:
    calls = ctx.size(1, 3)
    store = replay_store(capacity_steps=4096)  # evicts its oldest episodes; nothing takes from it here
    actors = [rollout_actor(ctx, ctx.model, store=store, actor_id=i) for i in range(2)]
    ray.get([a.collect.remote(1) for a in actors])  # warm-up
    steps = {1: [], 2: []}
    tokens = {1: [], 2: []}
    for _ in range(ctx.repeats):
        for n in (1, 2):
            s, t, seconds = phase(actors[:n], calls)
            steps[n].append(s / seconds)
            tokens[n].append(t / seconds)
    kill(*actors, store)
    return {
        "setup": (
            f"Model {ctx.model}; each actor 16 envs, {calls} collect call(s) of 4 steps per env per phase; the "
            "store is a Ray actor with 0 CPUs."
        ),
        "metrics": [
            report.metric("1 actor: env steps/s", "steps/s", steps[1]),
            report.metric("2 actors: env steps/s (sum)", "steps/s", steps[2]),
            report.metric("1 actor: generated tokens/s", "tokens/s", tokens[1]),
            report.metric("2 actors: generated tokens/s (sum)", "tokens/s", tokens[2]),
        ],
        "ratios": [
            report.ratio("rollout env steps/s: 2 actors / 1 actor", steps[2], steps[1], headline=True),
            report.ratio("generated tokens/s: 2 actors / 1 actor", tokens[2], tokens[1]),
        ],
        "notes": ["The ideal is 2.0; the gap is the share of the second core taken by Ray, the driver and the store."],
    }
