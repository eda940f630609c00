"""How busy the machine's cores are during a training run: CPU time of every process of the run over a window.

`CoreSampler` runs beside the driver (the benchmarks call `cluster.train.main` in their own process, so the
run's Ray processes, its rollout actors and learner ranks among them, are all descendants of this one). Every
`interval` it reads each process's user + system CPU time and notes when new lines appear in the run's
history.jsonl, so a window can be cut at the PPO loop's first and last log lines afterwards.
"""

from __future__ import annotations

import bisect
import os
import pathlib
import threading
import time

import psutil

GROUPS = {"rollout": "ray::RolloutActor", "learner": "ray::LearnerWorker"}
"""Process groups reported apart, by the process title Ray gives an actor's worker; the rest is `other`
(the driver, Ray's GCS, raylet and agents, the replay store)."""


def group_of(process: psutil.Process) -> str:
    try:
        title = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    return next((g for g, prefix in GROUPS.items() if title.startswith(prefix)), "other")


class CoreSampler:
    """Samples the CPU time of this process and all its descendants, grouped, every `interval` seconds."""

    def __init__(self, history: pathlib.Path, interval: float = 0.5):
        self.history, self.interval = history, interval
        self.times: list[float] = []
        self.cpu: list[dict[str, float]] = []
        """Cumulative CPU seconds per group at each sample (processes seen so far; an exited one keeps its last)."""
        self.line_seen: list[float] = []
        """When each line of history.jsonl was first seen (its index is the line's)."""
        self._last: dict[tuple[int, float], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CoreSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    key = (p.pid, p.create_time())
                    cpu = p.cpu_times()
                    # An actor's worker starts as ray::IDLE and takes the actor's title later: look until it does.
                    known = self._last.get(key, ("other", 0.0))[0]
                    group = known if known != "other" else group_of(p)
                    self._last[key] = (group, cpu.user + cpu.system)
                except psutil.Error:
                    continue  # exited between the listing and the read: its last reading stays counted
            totals = dict.fromkeys([*GROUPS, "other"], 0.0)
            for group, seconds in self._last.values():
                totals[group] += seconds
            now = time.perf_counter()
            self.times.append(now)
            self.cpu.append(totals)
            if self.history.exists():
                lines = self.history.read_text().count("\n")
                self.line_seen += [now] * (lines - len(self.line_seen))
            self._stop.wait(self.interval)

    def at(self, t: float) -> dict[str, float]:
        """Cumulative CPU seconds per group at time t (the last sample at or before it)."""
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        return self.cpu[i]

    def busy(self, first_line: int, last_line: int) -> dict[str, float]:
        """Share of all the machine's cores each group (and `all`) kept busy between two history lines, with
        `cpu_s` (CPU seconds of all groups) and `capacity_s` (wall clock x cores) behind `all`."""
        t0, t1 = self.line_seen[first_line], self.line_seen[last_line]
        start, end = self.at(t0), self.at(t1)
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        out = {g: (end[g] - start[g]) / capacity for g in start}
        out["all"] = sum(out.values())
        return out | {"cpu_s": out["all"] * capacity, "capacity_s": capacity}
