"""4. Weight push: learner rank 0 -> rollout actor, against model size, as a share of rollout time.

The real path of a run (cluster/launch.py `push_weights`): the learner exports full weights as numpy arrays with
a blake2b checksum, the payload goes by object ref through Ray's object store, the rollout actor verifies the
checksum and reloads vLLM in place. Measured for the default model and the ~100M variant:

- export: the learner's `export_weights` (copy out + checksum) until the payload is in the object store;
- load: the actor's `load_weights` (checksum verify + vLLM reload + cache resets), the time it cannot collect;
- push end to end: export start -> load done, as the driver sees it;
- checksum: one blake2b pass over the payload on its own (a push computes it twice: build and verify).

Rollout time at the default cadence = `ppo.steps_per_update` x `learner.push_every` env steps at the rate the
same rollout actor collects with that model (measured in the same repeat).
"""

from __future__ import annotations

import time

import ray

from benchmarks import report
from benchmarks.common import Context, kill, learner_actor, replay_store, rollout_actor, timed
from contracts.config import LearnerConfig, PPOConfig

NAME = "weight_push"
TITLE = "4. Weight push: time vs model size, share of rollout time at the default push cadence, checksum cost"


@ray.remote(num_cpus=1)
def checksum_pass(payload) -> dict[str, float]:
    """One blake2b pass over a weights payload (what `WeightsPayload.verify` costs), and its size."""
    from models.weight_sync import weights_checksum

    t0 = time.perf_counter()
    weights_checksum(payload.names, payload.arrays)
    return {"seconds": time.perf_counter() - t0, "bytes": float(sum(a.nbytes for a in payload.arrays))}


def run(ctx: Context) -> dict:
    ppo, learner_cfg = PPOConfig(), LearnerConfig()
    per_update = ppo.steps_per_update * learner_cfg.push_every  # env steps collected between two pushes
    metrics, ratios, rows = [], [], []
    for label, path in ctx.models():
        store = replay_store()
        actor = rollout_actor(ctx, path, store=store)
        learner = learner_actor(path, ppo, zero_stage=learner_cfg.zero_stage)
        ray.get(actor.collect.remote(1))  # warm-up
        r = {k: [] for k in ("export", "load", "push", "checksum", "rollout", "rate", "mib")}
        for version in range(1, ctx.repeats + 1):
            out, seconds = timed(actor.collect.remote, ctx.size(1, None))
            r["rate"].append(out["rollout/env_steps"] / seconds)
            r["rollout"].append(per_update / r["rate"][-1])
            t0 = time.perf_counter()
            ref = learner.export_weights.remote(version)
            ray.wait([ref], fetch_local=False)
            t1 = time.perf_counter()
            load = ray.get(actor.load_weights.remote(ref))
            r["push"].append(time.perf_counter() - t0)
            r["export"].append(t1 - t0)
            r["load"].append(load["timing/weight_load_s"])
            check = ray.get(checksum_pass.remote(ref))
            r["checksum"].append(check["seconds"])
            r["mib"].append(check["bytes"] / 2**20)
            del ref
        kill(actor, learner, store)
        metrics += [
            report.metric(f"{label}: payload", "MiB", r["mib"]),
            report.metric(f"{label}: export (learner, incl. checksum)", "s", r["export"]),
            report.metric(f"{label}: load (actor: verify + vLLM reload)", "s", r["load"]),
            report.metric(f"{label}: push end to end", "s", r["push"]),
            report.metric(f"{label}: one checksum pass", "s", r["checksum"]),
            report.metric(f"{label}: rollout env steps/s (same actor)", "steps/s", r["rate"]),
            report.metric(f"{label}: rollout time per push ({per_update} env steps)", "s", r["rollout"]),
        ]
        ratios += [
            report.ratio(
                f"push end to end / rollout time per push, {label}",
                r["push"],
                r["rollout"],
                target=0.05,
                direction="max",
                headline=True,
                unit="fraction",
            ),
            report.ratio(
                f"actor blocked by the load / rollout time per push, {label}", r["load"], r["rollout"], unit="fraction"
            ),
            report.ratio(
                f"checksum (2 passes: build + verify) / push end to end, {label}",
                [2 * c for c in r["checksum"]],
                r["push"],
                unit="fraction",
            ),
        ]
        rows.append([label, _median(r["mib"]), _median(r["push"]), _median(r["push"]) / _median(r["mib"]) * 1024])
    return {
        "setup": (
            f"One ZeRO-{learner_cfg.zero_stage} learner rank and one vLLM rollout actor (16 envs) per model, 1 CPU "
            f"each; default cadence: a push every {learner_cfg.push_every} update(s) of {ppo.steps_per_update} env "
            "steps. Per repeat: one collect call (for the rollout rate), then one push."
        ),
        "metrics": metrics,
        "ratios": ratios,
        "tables": [
            {
                "title": "Push time against model size (medians)",
                "columns": ["model", "payload MiB", "push s", "s per GiB"],
                "rows": rows,
            }
        ],
        "notes": [
            "Rollout env steps/s of the ~100M variant is slow because the random model answers up to the token cap.",
            "A push hashes the payload twice (blake2b: built on the learner, verified on the actor). Measured once on "
            "this CPU while writing the suite: blake2b ~1.4 GB/s, sha256 ~2.1 GB/s (SHA-NI), crc32 ~7 GB/s; a "
            "cheaper hash would remove most of the checksum's share at the price of a weaker check. Kept: the "
            "whole push is ~1-2 % of the rollout time it interrupts.",
        ],
    }


def _median(values: list[float]) -> float:
    return report.summarize(values)["median"]
