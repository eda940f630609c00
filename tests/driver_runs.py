"""Helpers for tests that run the whole driver (cluster.train.main) in a thread of the test process, against the
test's Ray cluster, and watch or disturb it from the test thread."""

from __future__ import annotations

import json

from benchmarks.chaos import RunInThread, status, wait_for  # noqa: F401 - shared with the chaos bench


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def argv(tiny_model_path, tmp_path, name, updates):
    return [
        "tiny",
        "--model.path",
        tiny_model_path,
        "--run.out-dir",
        str(tmp_path),
        "--run.name",
        name,
        "--run.total-updates",
        str(updates),
        "--run.checkpoint-every",
        "0",
    ]
