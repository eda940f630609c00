"""5. Async against sync: wall clock of the same number of PPO updates (and so of used env steps).

Both are the real driver (`python -m cluster.train`, `--run.mode async|sync`) with its defaults otherwise:
one vLLM rollout actor and the preset's ZeRO-2 learner ranks (two of 1 thread). Async keeps the rollout actor
collecting while the learner trains; sync collects, then trains, then pushes. The wall clock is the PPO loop's
(from the SFT-start evaluation's log line to the last update's), so start-up and the final evaluation are left
out.
"""

from __future__ import annotations

from benchmarks import report
from benchmarks.common import Context, RunSpec, run_args, training_run
from contracts.config import RolloutConfig

NAME = "async_sync"
TITLE = "5. Async vs sync: wall clock for the same PPO updates and env steps"
NOTES = [
    "The bound row is measured, not assumed: async cannot finish before the learner has run every update, "
    "so the sync wall clock divided by the learner's share of it is the most that overlapping can win. "
    "Here the learner is most of an update (the preset's PPO epochs, each a forward and a backward, plus "
    "the proximal scoring pass, against one vLLM forward per token in the rollout), so the bound is small "
    "whatever the system does; the target is on the share of it that async wins. A large gain needs "
    "rollout and learning of similar cost (the paper's regime: long CoT generation of a 7B model on a GPU).",
    "The bound also takes the learner's time as fixed. Where its ranks already fill the machine's cores "
    "(two 1-thread ranks on 2 cores), the overlapped rollout takes cores from them: compare the two modes' "
    "learner time over all updates above.",
    "Async can at best hide the shorter of rollout and learning behind the longer: the speed-up is bounded "
    "by (rollout + learner time) / max(rollout, learner time) per update, so below 2 on any split.",
    "Async's first update cannot overlap anything (the store starts empty), so short runs understate its "
    "steady-state gain; the second ratio leaves that update out.",
    "Sync's samples are not all on-policy either: a collect call that overshoots the update's steps leaves "
    "whole episodes in the store for the next update (one version old by then).",
]


def run(ctx: Context) -> dict:
    backlog = RolloutConfig.max_backlog_updates  # the default, spelled out so runs are shared with the throttle
    specs = {mode: RunSpec(mode=mode, max_backlog_updates=backlog) for mode in ("sync", "async")}
    runs = {mode: [] for mode in specs}
    for repeat in range(ctx.repeats):  # interleaved, so drift in the machine's load hits both modes
        for mode, spec in specs.items():
            runs[mode].append(training_run(ctx, spec, repeat))
    preset, overrides = run_args(ctx)
    metrics = []
    for mode in specs:
        rs = runs[mode]
        metrics += [
            report.metric(f"{mode}: PPO loop wall clock", "s", [r["loop_s"] for r in rs]),
            report.metric(f"{mode}: wall clock of updates 2..N", "s", [r["steady_s"] for r in rs]),
            report.metric(f"{mode}: env steps used by the updates", "steps", [r["used_steps"] for r in rs]),
            report.metric(f"{mode}: env steps collected", "steps", [r["collected_steps"] for r in rs]),
            report.metric(f"{mode}: sample staleness (policy versions)", "versions", [r["staleness"] for r in rs]),
            report.metric(f"{mode}: learner update (median per run)", "s", [r["train_s_median"] for r in rs]),
            report.metric(f"{mode}: learner time, all updates", "s", [r["train_s_total"] for r in rs]),
        ]
    loop = {mode: [r["loop_s"] for r in runs[mode]] for mode in specs}
    steady = {mode: [r["steady_s"] for r in runs[mode]] for mode in specs}
    # Async overlaps rollout with learning, but every update still waits for the learner: the sum of the
    # learner's update times is a floor under async's wall clock, so sync wall clock / that sum bounds the gain.
    learner = {mode: [r["train_s_total"] for r in runs[mode]] for mode in specs}
    return {
        "setup": (
            f"`python -m cluster.train {preset} {' '.join(overrides)} --run.eval-every 0 --run.checkpoint-every 0 "
            f"--run.mode sync|async` with model {ctx.model}; rollout.max_backlog_updates {backlog:g} (the default) "
            "in both modes."
        ),
        "metrics": metrics,
        "ratios": [
            report.ratio(
                "speed-up async over sync (sync wall clock / async wall clock)",
                loop["sync"],
                loop["async"],
                headline=True,
            ),
            report.ratio(
                "share of the possible gain async wins: (speed-up - 1) / (bound - 1)",
                [s / a - 1 for s, a in zip(loop["sync"], loop["async"])],
                [s / t - 1 for s, t in zip(loop["sync"], learner["sync"])],
                target=0.8,
                headline=True,
                unit="share",
            ),
            report.ratio(
                "the same without the first update (sync / async wall clock of updates 2..N)",
                steady["sync"],
                steady["async"],
            ),
            report.ratio(
                "upper bound on the speed-up for this split: sync wall clock / sync learner time (all updates)",
                loop["sync"],
                learner["sync"],
                headline=True,
            ),
            report.ratio(
                "async wall clock / async learner time (1.0: rollout wholly hidden behind learning)",
                loop["async"],
                learner["async"],
            ),
        ],
        "notes": NOTES,
    }
