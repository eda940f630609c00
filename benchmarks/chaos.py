"""Chaos: short training runs during which one of each single-point component is killed with SIGKILL, by PID.

Per run, at different phases: a rollout actor while it collects (after update 1), the replay store while the
learner trains on what it handed out (update 2), RunControl between the driver's calls (update 3), and a
learner rank in the update after the checkpoint of update 4. A run survives when it finishes every update
with each restart counted, policy versions strictly increasing and no episode trained twice. The test
(tests/test_recovery.py) runs `chaos_run` once; this section repeats it for a survived / tried figure.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time

from benchmarks import report
from benchmarks.common import Context

NAME = "chaos"
TITLE = "11. Chaos: a rollout actor, the replay store, RunControl and a learner rank killed in each run"
UPDATES = 8


class RunInThread:
    """cluster.train.main in a thread of this process (it joins this process's Ray cluster)."""

    def __init__(self, argv: list[str]):
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv):
        from cluster.train import main

        try:
            self.result = main(argv)
        except BaseException as error:  # noqa: BLE001 - re-raised by join, in the caller's thread
            self.error = error

    def running(self) -> bool:
        """True while the run goes on; its error, raised here, once it failed (a wait must not outlast it)."""
        if self.error:
            raise self.error
        return self.thread.is_alive()

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish in time"
        if self.error:
            raise self.error
        return self.result


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def status(run_name: str) -> dict:
    """The run's status from its RunControl ({} before it registers)."""
    import ray

    from cluster.control import lookup

    try:
        return ray.get(lookup(run_name).status.remote())
    except ValueError:
        return {}


def pid_of(handle) -> int:
    import ray

    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=300)


def chaos_run(
    model_path: str,
    out_dir: pathlib.Path,
    run_name: str,
    updates: int = UPDATES,
    extra: tuple[str, ...] = (),
    learner_rank: int = 0,
) -> dict:
    """One `tiny` run of `updates` (checkpoint every 2) with the four kills; eval.json plus "killed" (the update
    each kill was made at), "versions" and "staleness_after_restore" (0: only the restored policy's samples)."""
    import ray

    from cluster.control import NAMESPACE, lookup

    flags = ["--model.path", model_path, "--run.out-dir", str(out_dir), "--run.name", run_name]
    run = RunInThread(["tiny", *flags, "--run.total-updates", str(updates), "--run.checkpoint-every", "2", *extra])
    killed = {}

    def at(update: int) -> None:
        wait_for(lambda: run.running() and status(run_name).get("update", 0) >= update, 600, f"update {update}")

    def kill(what: str, pid: int) -> None:
        killed[what] = status(run_name).get("update", 0)  # before: a restarted RunControl knows nothing yet
        os.kill(pid, signal.SIGKILL)

    actor = lambda name: ray.get_actor(name, namespace=NAMESPACE)  # noqa: E731
    at(1)
    kill("rollout actor", pid_of(ray.get(lookup(run_name).rollout_actor.remote(0))))
    store_pid, learner_pid = pid_of(actor(f"store-{run_name}")), pid_of(actor(f"learner-{run_name}-{learner_rank}"))
    at(2)
    kill("replay store", store_pid)
    at(3)
    kill("RunControl", pid_of(lookup(run_name)))
    at(4)
    time.sleep(2)  # into the next update
    kill("learner rank", learner_pid)
    result = run.join(900)
    history = [json.loads(line) for line in (out_dir / run_name / "history.jsonl").read_text().splitlines()]
    rows = [r for r in history if "learner/policy_version" in r]
    versions = [int(r["learner/policy_version"]) for r in rows]
    after = [r for prev, r in zip(rows, rows[1:]) if r["learner/policy_version"] - prev["learner/policy_version"] > 1]
    return result | {
        "killed": killed,
        "versions": versions,
        "staleness_after_restore": [r["learner/staleness_max"] for r in after],
    }


def survived(result: dict, updates: int = UPDATES) -> bool:
    """Every update done, each kill restarted and counted, versions strictly increasing, nothing trained twice."""
    restarts = ("store_restarts", "control_restarts", "learner_restarts")
    return (
        result["updates"] == updates
        and result["rollout_actor_restarts"] >= 1
        and all(result[k] == 1 for k in restarts)
        and result["episodes_trained_twice"] == 0
        and result["versions"] == sorted(set(result["versions"]))
        and result["staleness_after_restore"] == [0.0]
    )


def run(ctx: Context) -> dict:
    tries = ctx.size(1, max(ctx.repeats, 5))
    results, failures = [], []
    for k in range(tries):
        try:
            results.append(chaos_run(ctx.model, ctx.work_dir / "chaos", f"chaos-{k}"))
        except Exception as error:  # noqa: BLE001 - a run that did not survive is the figure, not a crash
            failures.append(f"run {k}: {type(error).__name__}: {error}"[:300])
    ok = [r for r in results if survived(r)]

    def over_runs(key: str) -> list[float]:
        return [r[key] for r in results] or [0.0]

    metrics = [
        report.metric("runs that survived all four kills", "runs", [len(ok)]),
        report.metric("runs tried", "runs", [tries]),
        report.metric("episodes trained twice (all runs)", "episodes", [sum(over_runs("episodes_trained_twice"))]),
        report.metric("learner group restore time", "s", over_runs("learner_restore_s")),
        report.metric("updates redone after the learner restore", "updates", over_runs("updates_redone")),
        report.metric("replay steps lost with the store (at its last report)", "steps", over_runs("store_lost_steps")),
        report.metric("run wall clock", "s", over_runs("wall_clock_s")),
    ]
    ratios = [report.ratio("runs survived / runs tried (4 kills each)", [len(ok)], [tries], target=1.0, headline=True)]
    return {
        "setup": (
            f"{tries} x `python -m cluster.train tiny --model.path {ctx.model} --run.total-updates {UPDATES} "
            "--run.checkpoint-every 2`, the driver in this process; SIGKILL by PID of rollout actor 0 after update 1, "
            "the replay store after update 2, RunControl after update 3 and learner rank 0 2 s after update 4."
        ),
        "repeats": tries,
        "metrics": metrics,
        "ratios": ratios,
        "notes": [f"killed at updates: {r['killed']}" for r in results[:1]] + failures,
    }
