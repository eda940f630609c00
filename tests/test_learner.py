"""learner/learner.py pieces testable without Ray or DeepSpeed (the PPO update itself runs in tests/test_system.py)."""

from __future__ import annotations

import os
import time

from learner.learner import clear_stale_build_lock


def test_only_an_old_lock_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    build = tmp_path / "some_op"
    build.mkdir()
    assert clear_stale_build_lock("some_op") is False  # no lock at all
    lock = build / "lock"
    lock.touch()
    assert clear_stale_build_lock("some_op") is False and lock.exists()  # a build may be running right now
    old = time.time() - 3600
    os.utime(lock, (old, old))
    assert clear_stale_build_lock("some_op") is True and not lock.exists()
