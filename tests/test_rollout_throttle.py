"""The rollout throttle (rollout.max_backlog_updates) without a cluster: the pool's gate on new collects, the
store-backed gate, and the config wiring."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster import launch, rollout_pool
from cluster.rollout_pool import RolloutPool, backlog_gate
from contracts.config import tiny


class FakeHandle:
    """An actor handle whose `collect.remote()` returns a fresh token (no Ray)."""

    def __init__(self):
        self.submitted = 0
        self.collect = SimpleNamespace(remote=self._collect)

    def _collect(self):
        self.submitted += 1
        return object()


def pool_of(n: int, may_collect=None) -> RolloutPool:
    handles = {}

    def make(actor_id):
        handles[actor_id] = FakeHandle()
        return handles[actor_id]

    pool = RolloutPool(make, may_collect=may_collect)
    for actor_id in range(n):
        pool._spawn(actor_id)
    pool.handles_made = handles
    return pool


def running(pool: RolloutPool) -> int:
    return sum(kind == "collect" for kind, _, _ in pool.calls.values())


def test_without_a_gate_every_idle_actor_collects():
    pool = pool_of(3)
    pool.submit_collects()
    assert running(pool) == 3 and pool.counters["throttled_collects"] == 0
    pool.submit_collects()  # busy actors get no second collect
    assert running(pool) == 3


def test_gate_sees_the_running_collects_and_holds_the_rest_back():
    asked = []

    def may_collect(n_running):
        asked.append(n_running)
        return n_running < 2

    pool = pool_of(3, may_collect)
    pool.submit_collects()
    assert running(pool) == 2 and asked == [0, 1, 2]
    assert pool.counters["throttled_collects"] == 1
    pool.submit_collects(force=True)  # forced (nothing else running in the driver's eyes): the gate is not asked
    assert running(pool) == 3 and asked == [0, 1, 2]


def test_step_with_nothing_running_collects_anyway(monkeypatch):
    """A refusing gate must never leave the driver's wait loop waiting on nothing."""
    pool = pool_of(1, lambda n: False)
    pool.submit_collects()
    assert running(pool) == 0
    waited = []
    monkeypatch.setattr(rollout_pool.ray, "wait", lambda refs, **kw: (waited.append(list(refs)), ([], refs))[1])
    pool.step(timeout=0)
    assert running(pool) == 1 and len(waited[0]) == 1  # it submitted, then waited on that collect


def test_backlog_gate_counts_store_depth_plus_running_collects(monkeypatch):
    depth = {"replay/depth_steps": 100.0}
    store = SimpleNamespace(stats=SimpleNamespace(remote=lambda: depth))
    monkeypatch.setattr(rollout_pool.ray, "get", lambda ref: ref)
    gate = backlog_gate(store, max_backlog_steps=256, steps_per_collect=64)
    assert gate(0) and gate(2)  # 100 + 128 < 256
    assert not gate(3)  # 100 + 192 >= 256
    depth["replay/depth_steps"] = 256.0
    assert not gate(0)  # one update's worth is waiting: hold back


def test_config_wires_the_throttle(monkeypatch):
    made = {}
    monkeypatch.setattr(launch, "backlog_gate", lambda store, limit, per: made.update(limit=limit, per=per) or "gate")
    cfg = tiny()
    assert cfg.rollout.max_backlog_updates == pytest.approx(1.0)  # on by default
    assert launch.throttle(cfg, store=None) == "gate"
    assert made == {"limit": cfg.ppo.steps_per_update, "per": cfg.env.envs_per_actor * cfg.rollout.steps_per_call}
    cfg.rollout.max_backlog_updates = 0.25  # below one update would starve the learner: counted as 1
    launch.throttle(cfg, store=None)
    assert made["limit"] == cfg.ppo.steps_per_update
    cfg.rollout.max_backlog_updates = 2.5
    launch.throttle(cfg, store=None)
    assert made["limit"] == 2.5 * cfg.ppo.steps_per_update
    cfg.rollout.max_backlog_updates = 0
    assert launch.throttle(cfg, store=None) is None


def test_an_update_starting_lets_a_throttled_actor_collect_again(monkeypatch):
    """The store was full when the last collect ended (actor held back); the driver's `take` then emptied it. The
    actor must collect while the learner trains, not wait for the update to end (that made async run like sync)."""
    room = {"free": False}
    pool = pool_of(1, lambda n: room["free"])
    pool.submit_collects()
    assert running(pool) == 0
    room["free"] = True  # the take
    learner_ref = object()
    seen = []

    def fake_wait(refs, num_returns=1, timeout=None, **kw):
        seen.append(running(pool))
        return (list(refs), []) if timeout == 0 and len(refs) == 1 and refs[0] is learner_ref else ([], list(refs))

    monkeypatch.setattr(rollout_pool.ray, "wait", fake_wait)
    monkeypatch.setattr(rollout_pool.ray, "get", lambda refs: ["metrics"])
    assert pool.run_until([learner_ref]) == ["metrics"]
    assert seen[0] == 1  # the collect was submitted before the driver began waiting on the learner
    pool.calls.clear()
    room["free"] = False
    pool.submit_collects()
    pool.run_until([learner_ref], resubmit=False)  # sync mode: nothing is started during the update
    assert running(pool) == 0
