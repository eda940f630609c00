"""Profile of a training run's hot path: py-spy samples the rollout actor and the learner rank while the real
driver trains, before and after the throttle fix (`rollout.max_backlog_updates` 0 vs the default).

py-spy attaches to the run's Ray worker processes (found as descendants of this process) for a window that
starts once the value-head warm-up updates are logged (they back-propagate into the value head only, so they
would understate the backward pass). Only active (non-idle) samples are recorded, so a process's samples per
second over the sampling rate is how busy it was. Frames are grouped into the few things each role does.
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

from benchmarks.common import Context, RunSpec, training_run
from contracts.config import PPOConfig, RolloutConfig

NAME = "profile"
TITLE = "Profile of a training run's hot path (py-spy), before and after the fix"
RATE = 50
"""Samples per second per process."""
ROLES = {
    "RolloutActor": {
        "vLLM generate (batched)": ["VLLMEngine.generate"],
        "PNG-encode observations": ["encode_png"],
        "env step / render": ["Env.step", "Env.reset", "Env.render", "(envs/render.py"],
        "ship episodes to the store": ["RolloutActor._ship"],
        "weight load (verify + reload)": ["RolloutActor.load_weights"],
    },
    "LearnerWorker": {
        "forward passes (proximal + PPO)": ["WrappedModelStep.score"],
        "backward": ["Engine.backward"],
        "optimizer step": ["Engine.step"],
        "collate (pixels, padding)": ["collate (learner/batch.py"],
        "replay rows -> samples (PNG decode)": ["samples_from_table"],
        "export weights": ["export_weights"],
    },
}


# ---- pure: collapsed stacks -> shares -----------------------------------------------------------------------
def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            out.append((frames, int(count)))
    return out


def summarize_profile(stacks: list[tuple[list[str], int]], groups: dict[str, list[str]], window_s: float) -> dict:
    """Active samples, how busy the process was, each group's share (inclusive), and the top self frames."""
    total = sum(n for _, n in stacks)
    shares = {name: 0 for name in groups}
    leaves: collections.Counter = collections.Counter()
    for frames, n in stacks:
        joined = ";".join(frames)
        for name, patterns in groups.items():
            if any(p in joined for p in patterns):
                shares[name] += n
        if frames:
            leaves[frames[-1]] += n
    return {
        "samples": total,
        "busy": total / (RATE * window_s) if window_s > 0 else float("nan"),
        "shares": {k: v / total if total else 0.0 for k, v in shares.items()},
        "top_self": [(f, n / total) for f, n in leaves.most_common(5)] if total else [],
    }


def findings(results: dict) -> list[str]:
    """What the profile says, in words, with this run's numbers (before = no throttle)."""
    summary, prof = results["before"]
    learner, actor = prof.get("LearnerWorker", {}), prof.get("RolloutActor", {})
    ls, rs = learner.get("shares", {}), actor.get("shares", {})
    model = sum(ls.get(k, 0.0) for k in ("forward passes (proximal + PPO)", "backward", "optimizer step"))
    data = sum(ls.get(k, 0.0) for k in ("collate (pixels, padding)", "replay rows -> samples (PNG decode)"))
    return [
        f"Learner (the critical path in async mode): busy {learner.get('busy', float('nan')):.0%} of the window; "
        f"{model:.0%} of its samples are the model's forward, backward and optimizer step (torch matmuls, SDPA), "
        f"{data:.0%} collation and PNG decoding. Little Python to remove there. Computing the LM head only at "
        "response positions (HF `logits_to_keep`) was tried: 2-4 % of a forward+backward at this 530-token "
        "vocabulary, within this machine's noise, so not kept (it would matter with a 32k vocabulary).",
        f"Rollout actor, unthrottled: busy {actor.get('busy', float('nan')):.0%} of the window, "
        f"{rs.get('vLLM generate (batched)', 0.0):.0%} of it in vLLM generate and "
        f"{rs.get('PNG-encode observations', 0.0):.0%} PNG-encoding frames, yet the updates used only "
        f"{summary['used_frac']:.0%} of the env steps it collected: the rest was evicted or dropped stale. That "
        "is the clear waste: a core's worth of rollout whose output is thrown away, competing with the learner "
        "and the Ray processes for the CPU. Fix: section 7 (`rollout.max_backlog_updates`).",
    ]


# ---- running py-spy against a training run ------------------------------------------------------------------
def py_spy() -> str | None:
    local = pathlib.Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def own_workers() -> dict[str, int]:
    """PIDs of this process's Ray workers by role (descendants only: other people's clusters are left alone)."""
    import psutil

    found = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for role in ROLES:
            if cmd.startswith(f"ray::{role}"):
                found.setdefault(role, proc.pid)
    return found


def record_during(ctx: Context, spec: RunSpec, label: str, window_s: float) -> tuple[dict, dict]:
    """Run `spec` and py-spy its workers for `window_s` once the value-head warm-up updates are logged;
    (run summary, profiles)."""
    out_dir = ctx.work_dir / "profile" / label
    out_dir.mkdir(parents=True, exist_ok=True)
    history = ctx.work_dir / "runs" / f"{spec.key()}-r-1" / "history.jsonl"
    files: dict[str, pathlib.Path] = {}

    warmup = PPOConfig.value_warmup_updates

    def sampler():
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:  # history: the SFT-start line, then one line per update
            if history.exists() and len(history.read_text().splitlines()) >= 1 + max(warmup, 1):
                break
            time.sleep(0.5)
        procs = []
        for role, pid in own_workers().items():
            files[role] = out_dir / f"{role}.txt"
            cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(int(window_s)), "--rate", str(RATE)]
            cmd += ["--nonblocking", "--format", "raw", "--output", str(files[role])]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    summary = training_run(ctx, spec, repeat=-1)  # repeat -1: never shared with the timed runs
    thread.join(timeout=window_s + 60)
    profiles = {}
    for role, path in files.items():
        if path.exists():
            profiles[role] = summarize_profile(parse_collapsed(path.read_text()), ROLES[role], window_s)
    return summary, profiles


def run(ctx: Context) -> dict:
    if py_spy() is None:
        return {"setup": "py-spy is not installed (`pip install py-spy`, in the dev extra): nothing profiled."}
    window = ctx.size(5.0, 45.0)
    after = RolloutConfig.max_backlog_updates or 1.0
    cases = {"before": RunSpec("async", 0.0), "after": RunSpec("async", after)}
    results = {label: record_during(ctx, spec, label, window) for label, spec in cases.items()}
    tables, notes = [], []
    for role, groups in ROLES.items():
        rows = [["busy (active samples / possible)", *[results[c][1].get(role, {}).get("busy") for c in cases]]]
        rows += [[g, *[results[c][1].get(role, {}).get("shares", {}).get(g) for c in cases]] for g in groups]
        tables.append({"title": f"{role}: share of its active samples", "columns": ["", *cases], "rows": rows})
        for c in cases:
            top = results[c][1].get(role, {}).get("top_self", [])
            if top:
                notes.append(f"{role}, {c}: top self frames " + "; ".join(f"{f} {s:.0%}" for f, s in top[:3]))
    notes = findings(results) + notes
    for c, (summary, _) in results.items():
        notes.append(
            f"{c}: {summary['updates']} updates, {summary['collected_steps']:.0f} env steps collected, "
            f"{summary['used_frac']:.0%} of them used, staleness {summary['staleness']:.2f}, "
            f"learner update median {summary['train_s_median']:.1f} s (runs perturbed by sampling: not timings)."
        )
    return {
        "setup": (
            f"py-spy {RATE} Hz, non-blocking, for {window:g} s from update {max(PPOConfig.value_warmup_updates, 1)}'s "
            "log line (after the value-head warm-up), on the rollout actor "
            "and the learner rank of an async training run (same run settings as the timed runs)."
        ),
        "tables": tables,
        "notes": notes,
        "repeats": 1,  # one profiled run per case, whatever --repeats says
    }
