"""Run logging: a live progress line, TensorBoard scalars, a JSONL history, Ray metrics and the curve PNG.

Ray metrics (`ray.util.metrics`) appear on each node's Prometheus endpoint (and the Ray dashboard) with the
prefix `ray_rl4vlm_`. Ray drops a gauge from the endpoint when it has not been set for two export intervals
(2 x RAY_metrics_report_interval_ms, 20 s by default), and an update takes longer than that, so the logger sets
every gauge again every `GAUGE_REFRESH_S` to its last value: a scrape between updates still finds all of them.
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time

RAY_GAUGES = {  # Ray gauge (series ray_rl4vlm_<name>): the logged metric it shows, its description
    "env_steps_per_s": ("rollout/env_steps_per_s", "Env steps per second over all rollout actors"),
    "tokens_per_s": ("rollout/tokens_per_s", "Generated tokens per second over all rollout actors"),
    "success": ("rollout/success", "Training-episode success rate (the task's success rule) since the last update"),
    "reward": ("rollout/return_mean", "Mean training-episode return since the last update"),
    "staleness": ("learner/staleness_mean", "Mean policy-version lag of the samples in the last PPO update"),
    "weight_push_seconds": ("timing/weight_push_s", "Seconds of the last weight push"),
    "replay_depth": ("replay/depth_steps", "Steps waiting in the replay store"),
    "policy_version": ("learner/policy_version", "Current learner policy version"),
    "eval_success": ("eval/success", "Held-out evaluation success"),
    "rollout_actors": ("rollout/actors", "Rollout actors currently collecting"),
    "restarts_rollout_actors": ("rollout/actor_restarts", "Rollout actors replaced so far in this run"),
    "restarts_replay_store": ("recovery/store_restarts", "Replay store restarts so far in this run"),
    "restarts_run_control": ("recovery/control_restarts", "RunControl restarts so far in this run"),
    "restarts_learner_group": ("recovery/learner_restarts", "Learner group restores so far in this run"),
}
RAY_COUNTERS = {"rollout_actor_restarts": "Crashed rollout actors replaced (Prometheus adds _total)"}
RAY_HISTOGRAMS = {"sample_staleness": "Policy-version lag of each sample in a PPO update"}
GAUGE_REFRESH_S = 2.0
"""How often the last value of every gauge is set again (well inside Ray's 2-interval expiry, 1 s at least)."""
STALENESS_BUCKETS = (0, 1, 2, 3)
"""Lags counted per update by the learner as learner/staleness_count_<k> (the last bucket is k or more)."""


def merge_ranks(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One update's metrics from every learner rank's: counts summed (samples, staleness buckets), timings the
    slowest rank's (the update ends when it does), everything else the mean over ranks (losses, KL, values)."""
    merged = {}
    for key in per_rank[0]:
        values = [m[key] for m in per_rank]
        if key == "learner/samples" or key.startswith("learner/staleness_count_"):
            merged[key] = float(sum(values))
        elif key.startswith("timing/") or key == "learner/staleness_max":
            merged[key] = float(max(values))
        else:
            merged[key] = float(sum(values) / len(values))
    return merged


class RunLogger:
    def __init__(self, run_dir: pathlib.Path, use_ray_metrics: bool = True, refresh_s: float = GAUGE_REFRESH_S):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.history = open(run_dir / "history.jsonl", "a")
        self.t0 = time.perf_counter()
        self.gauges, self.counters, self.histograms = {}, {}, {}
        if use_ray_metrics:
            from ray.util.metrics import Counter, Gauge, Histogram

            self.gauges = {k: Gauge(f"rl4vlm_{k}", description=d) for k, (_, d) in RAY_GAUGES.items()}
            self.counters = {k: Counter(f"rl4vlm_{k}", description=d) for k, d in RAY_COUNTERS.items()}
            boundaries = [b + 0.5 for b in STALENESS_BUCKETS]
            self.histograms = {
                k: Histogram(f"rl4vlm_{k}", description=d, boundaries=boundaries) for k, d in RAY_HISTOGRAMS.items()
            }
        self.restarts_seen = 0.0
        self.last: dict[str, float] = {}  # gauge name -> the value it shows
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.refresher = None
        if self.gauges:
            self.refresher = threading.Thread(target=self._refresh, args=(refresh_s,), name="gauges", daemon=True)
            self.refresher.start()

    def _refresh(self, every_s: float) -> None:
        while not self.stopped.wait(every_s):
            with self.lock:
                for name, value in self.last.items():
                    self.gauges[name].set(value)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, step: int, metrics: dict[str, float]) -> None:
        metrics = {**metrics, "time/elapsed_s": self.elapsed()}
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()
        self.history.write(json.dumps({"update": step, **metrics}) + "\n")
        self.history.flush()
        with self.lock:
            for name, (key, _) in RAY_GAUGES.items():
                if name in self.gauges and key in metrics:
                    self.gauges[name].set(metrics[key])
                    self.last[name] = metrics[key]
        restarts = metrics.get("rollout/actor_restarts", self.restarts_seen)
        if self.counters and restarts > self.restarts_seen:
            self.counters["rollout_actor_restarts"].inc(restarts - self.restarts_seen)
        self.restarts_seen = restarts
        for lag in STALENESS_BUCKETS:
            for _ in range(int(metrics.get(f"learner/staleness_count_{lag}", 0)) if self.histograms else 0):
                self.histograms["sample_staleness"].observe(lag)

    def progress(self, update: int, total: int, m: dict[str, float]) -> None:
        nan = float("nan")
        line = (
            f"[{self.elapsed() / 60:5.1f} min] update {update:3d}/{total}  "
            f"success {m.get('rollout/success', nan):.2f}  return {m.get('rollout/return_mean', nan):+.2f}  "
            f"invalid {m.get('rollout/invalid_frac', nan):.2f}  steps/s {m.get('rollout/env_steps_per_s', 0):.1f}  "
            f"tok/s {m.get('rollout/tokens_per_s', 0):.0f}  kl {m.get('learner/approx_kl', 0):.4f}  "
            f"stale {m.get('learner/staleness_mean', 0):.2f}  replay {m.get('replay/depth_steps', 0):.0f}"
        )
        if "eval/success" in m:
            line += f"  | eval success {m['eval/success']:.3f}"
        print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        self.stopped.set()
        if self.refresher is not None:
            self.refresher.join()
        self.tb.close()
        self.history.close()


def plot_curve(run_dir: pathlib.Path, out: pathlib.Path) -> None:
    """Learning curve: training success per update and held-out eval success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    train = [(r["rollout/total_env_steps"], r["rollout/success"]) for r in rows if "rollout/success" in r]
    evals = [(r.get("rollout/total_env_steps", 0), r["eval/success"]) for r in rows if "eval/success" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="training episodes (the task's success rule)", alpha=0.6)
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out evaluation")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
