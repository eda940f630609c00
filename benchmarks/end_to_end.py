"""13. End to end: what a user gets per second of wall clock, the previous default against the new one.

Both sides are the real driver (`python -m cluster.train numberline`, async, rollout throttle on) on the same
SFT checkpoint; the previous default differs only by its flags (`PREVIOUS`): one learner rank with one
reserved CPU in micro-batches of 16 x 4 accumulation, fp32, 4 PPO epochs and no demonstration loss, where the new
default runs two 1-thread bf16 ranks on half a reserved CPU each in micro-batches of 32 (64 samples per optimizer
step on both sides), 3 epochs, with the demonstration loss at 5 (8 expert answers more per micro-batch). Per
repeat, short runs (no evaluation inside) give trained env steps/s = env steps the updates trained on / PPO loop
wall clock, and how busy the cores were over that loop (benchmarks/cores.py); one whole learning run per side
(the preset's 25 updates, held-out evaluations every 5) gives the wall clock to held-out success >= 0.9 and the
final success.
"""

from __future__ import annotations

import math

from benchmarks import report
from benchmarks.common import Context, RunSpec, run_args, training_run

NAME = "end_to_end"
TITLE = "13. End to end: trained env steps/s, time to success, cores busy (previous vs new default)"
PREVIOUS = ("--learner.world-size", "1", "--learner.cpus-per-rank", "1", "--ppo.micro-batch", "16")
PREVIOUS += ("--ppo.grad-accum", "4", "--ppo.demo-coef", "0", "--learner.dtype", "float32", "--ppo.epochs", "4")
SIDES = {"previous default": RunSpec(extra=PREVIOUS, label="previous"), "new default": RunSpec(label="new")}
TARGET_SUCCESS = 0.9


def learning_run_args(ctx: Context) -> list[str]:
    """A whole run of the preset with held-out evaluations along the way (quick: the tiny preset's scale)."""
    if ctx.quick:
        return ["--run.total-updates", "2", "--run.eval-episodes", "4", "--run.eval-every", "1"]
    return ["--run.total-updates", "25", "--run.eval-episodes", "100", "--run.eval-every", "5"]


def time_to_success(rows: list[dict], target: float) -> tuple[float, float]:
    """(PPO loop seconds until the first held-out evaluation at >= target, or NaN; the last evaluation's success).
    The loop starts at the SFT-start evaluation's line; evaluations on the way are counted in (both sides run
    the same ones)."""
    evals = [r for r in rows if "eval/success" in r]
    start = evals[0]["time/elapsed_s"]
    reached = next((r["time/elapsed_s"] - start for r in evals[1:] if r["eval/success"] >= target), math.nan)
    return reached, evals[-1]["eval/success"]


def run(ctx: Context) -> dict:
    short = {side: [] for side in SIDES}
    for repeat in range(ctx.repeats):  # interleaved, so drift in the machine's load hits both sides
        for side, spec in SIDES.items():
            short[side].append(training_run(ctx, spec, repeat))
    full = {side: training_run(ctx, spec, 0, overrides=learning_run_args(ctx)) for side, spec in SIDES.items()}
    rate = {side: [r["used_steps"] / r["loop_s"] for r in short[side]] for side in SIDES}
    success = {side: time_to_success(full[side]["rows"], TARGET_SUCCESS) for side in SIDES}
    metrics, ratios = [], []
    for side in SIDES:
        rs = short[side]
        reached, final = success[side]
        metrics += [
            report.metric(f"{side}: trained env steps/s", "steps/s", rate[side]),
            report.metric(f"{side}: PPO loop wall clock", "s", [r["loop_s"] for r in rs]),
            report.metric(f"{side}: learner update (median per run)", "s", [r["train_s_median"] for r in rs]),
            report.metric(f"{side}: env steps collected / used", "x", [1 / r["used_frac"] for r in rs]),
            report.metric(f"{side}: cores busy, all processes", "share", [r["cores_busy"]["all"] for r in rs]),
            report.metric(f"{side}: cores busy, learner ranks", "share", [r["cores_busy"]["learner"] for r in rs]),
            report.metric(f"{side}: cores busy, rollout actor", "share", [r["cores_busy"]["rollout"] for r in rs]),
            report.metric(f"{side}: cores busy, driver and Ray", "share", [r["cores_busy"]["other"] for r in rs]),
            report.metric(f"{side}: wall clock to held-out >= {TARGET_SUCCESS}", "s", [reached]),
            report.metric(f"{side}: held-out success at the end", "success", [final]),
        ]
    new, old = "new default", "previous default"
    ratios.append(
        report.ratio(
            "trained env steps/s: new default / previous default", rate[new], rate[old], target=2.0, headline=True
        )
    )
    ratios.append(
        report.ratio(
            "cores busy during PPO, new default (CPU time of all processes / wall clock x cores)",
            [r["cores_busy"]["cpu_s"] for r in short[new]],
            [r["cores_busy"]["capacity_s"] for r in short[new]],
            target=0.85,
            headline=True,
            unit="share",
        )
    )
    ratios.append(
        report.ratio(
            f"wall clock to held-out >= {TARGET_SUCCESS}: previous / new", [success[old][0]], [success[new][0]]
        )
    )
    preset, overrides = run_args(ctx)
    return {
        "setup": (
            f"Short runs: `python -m cluster.train {preset} {' '.join(overrides)} --run.eval-every 0 "
            f"--run.checkpoint-every 0`; learning runs: `{' '.join(learning_run_args(ctx))}`; model {ctx.model}; "
            f"previous default = the same command with `{' '.join(PREVIOUS)}`."
        ),
        "metrics": metrics,
        "ratios": ratios,
        "notes": [
            "Trained env steps/s counts the env steps the PPO updates trained on, not the ones collected: "
            "a throttled rollout collects little more than it is used, an unthrottled one much more.",
            "Cores busy: user + system CPU time of the benchmark process (the driver) and every process it "
            "started (Ray's GCS, raylet and agents, the replay store, the rollout actor, the learner ranks) over "
            "the PPO loop, divided by its wall clock times the machine's cores. A learner rank waiting in a "
            "gloo collective counts as busy only while it spins.",
            "The learning runs are one per side (a run takes ~10 min): their time to success swings with the "
            "run-to-run spread of held-out success (up to 0.12 between evaluations, README).",
        ],
    }
