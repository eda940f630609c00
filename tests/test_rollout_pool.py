"""cluster/rollout_pool.py: the throttle's gate on new collects and its config wiring (fake handles, no cluster),
then the pool in a real run: a killed rollout actor is replaced and the run finishes all its updates; the pool
scales 1 -> 3 -> 2 through the `python -m cluster.control` command while the job runs, and every new actor's
first samples carry the policy version current when it joined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from driver_runs import RunInThread, argv, history, status, wait_for

from cluster import launch, rollout_pool
from cluster.rollout_pool import RolloutPool, backlog_gate
from contracts.presets import tiny

# ---- the throttle (rollout.max_backlog_updates), without a cluster ----


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


def test_a_failed_learner_rank_raises_while_the_others_still_wait(monkeypatch):
    """Rank 1 died; rank 0 sits in a collective that only gloo's 30-min timeout would end. The update must fail
    at once (the driver then restores the learner group), not wait for rank 0."""
    pool = pool_of(1)
    rank0, rank1 = object(), object()

    def fake_wait(refs, num_returns=1, timeout=None, **kw):
        return [r for r in refs if r is rank1], [r for r in refs if r is not rank1]

    def fake_get(ref):
        if ref is rank1:
            raise RuntimeError("rank 1 died")
        raise AssertionError("waited for a rank that never finishes")

    monkeypatch.setattr(rollout_pool.ray, "wait", fake_wait)
    monkeypatch.setattr(rollout_pool.ray, "get", fake_get)
    with pytest.raises(RuntimeError, match="rank 1 died"):
        pool.run_until([rank0, rank1])


# ---- a real run (slow) ----
@pytest.mark.slow
def test_killed_rollout_actor_is_replaced_and_the_run_finishes(ray_cluster, tiny_model_path, tmp_path):
    import ray

    from cluster.control import lookup

    run = RunInThread(argv(tiny_model_path, tmp_path, "kill", 4))
    wait_for(lambda: status("kill").get("update", 0) >= 1, 300, "the first PPO update")
    victim = ray.get(lookup("kill").rollout_actor.remote(0))
    ray.kill(victim, no_restart=True)  # a crash, as far as the run can tell
    result = run.join(600)

    assert result["updates"] == 4 and result["policy_version"] == 4
    assert result["rollout_actor_restarts"] >= 1
    rows = history(tmp_path / "kill")
    assert max(r.get("rollout/actor_restarts", 0) for r in rows) >= 1
    restart_s = [r["rollout/restart_s_last"] for r in rows if "rollout/restart_s_last" in r]
    assert restart_s and 0 < restart_s[-1] < 300  # the replacement loaded the current weights
    print(f"\nrollout actor restart: {restart_s[-1]:.1f} s from the crash being seen to current weights loaded")


@pytest.mark.slow
def test_scale_one_to_three_to_two_while_running(ray_cluster, tiny_model_path, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    run = RunInThread([*argv(tiny_model_path, tmp_path, "scale", 7), "--ppo.steps-per-update", "24"])

    def control(n):  # the operator's command, from another process, against the running job
        cmd = [sys.executable, "-m", "cluster.control", "scale", "--run", "scale", "--rollout-actors", str(n)]
        out = subprocess.run([*cmd, "--address", address], capture_output=True, text=True, timeout=120, env=os.environ)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout[out.stdout.index("{") :])

    wait_for(lambda: status("scale").get("update", 0) >= 1, 300, "the first PPO update")
    assert control(3)["desired_rollout_actors"] == 3
    wait_for(lambda: status("scale").get("actors") == 3 and status("scale")["update"] >= 3, 400, "3 actors")
    control(2)
    wait_for(lambda: status("scale").get("actors") == 2, 300, "2 actors")
    result = run.join(600)

    assert result["updates"] == 7
    actors = [r["rollout/actors"] for r in history(tmp_path / "scale") if "rollout/actors" in r]
    assert 1 in actors and 3 in actors and actors[-1] == 2
    joined = result["new_actor_first_versions"]  # [actor id, version when it joined, version of its first samples]
    assert len(joined) >= 2
    for actor_id, at_join, first_samples in joined:
        assert at_join >= 1 and first_samples >= at_join, (actor_id, at_join, first_samples)
