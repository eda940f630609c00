"""cluster/recovery.py: naming the component in Ray's errors and the trained-twice count (no cluster), then the
chaos test: one short run with two learner ranks during which the test kills (SIGKILL, by PID) a rollout
actor, the replay store, RunControl and learner rank 1, one each at different phases; the run must finish
every update, count each restart in eval.json, keep policy versions strictly increasing and never train an
episode twice or on a policy of the learner group that died."""

from __future__ import annotations

import pathlib

import pytest
from driver_runs import history

from benchmarks.chaos import UPDATES, chaos_run, survived
from cluster.recovery import Recovery, component_of
from contracts.presets import tiny


def test_component_named_from_the_actor_class_in_the_error():
    error = RuntimeError("The actor died unexpectedly ... class_name: ReplayStore, actor_id: 5c1e ...")
    assert component_of(error) == "the replay store"
    assert component_of(RuntimeError("class_name: LearnerWorker")) == "a learner rank"
    assert component_of(RuntimeError("something else")) == "an actor of the run"


def test_an_episode_taken_twice_is_counted():
    recovery = Recovery(tiny(), pathlib.Path("unused"), "run")
    recovery.taken(["0-0-0", "0-1-0"])
    recovery.taken(["0-0-1", "0r1-0-0"])  # a replacement actor's ids carry its incarnation
    assert recovery.counters["episodes_trained_twice"] == 0
    recovery.taken(["0-1-0", "0-2-0"])
    assert recovery.counters["episodes_trained_twice"] == 1


@pytest.mark.slow
def test_a_run_survives_one_kill_of_each_component(ray_cluster, tiny_model_path, tmp_path):
    # Two ranks, rank 1 killed: rank 0 is then left waiting in a collective, the harder case for the driver.
    result = chaos_run(tiny_model_path, tmp_path, "chaos", extra=("--learner.world-size", "2"), learner_rank=1)

    assert result["updates"] == UPDATES, result
    killed = result["killed"]  # the update reached when each kill was made
    assert list(killed) == ["rollout actor", "replay store", "RunControl", "learner rank"], killed
    assert all(update >= k for k, update in enumerate(killed.values(), start=1)), killed
    assert result["rollout_actor_restarts"] >= 1
    assert result["store_restarts"] == 1 and result["control_restarts"] == 1, result
    assert result["learner_restarts"] == 1 and result["episodes_trained_twice"] == 0, result
    versions = result["versions"]
    assert versions == sorted(set(versions)), f"policy versions not strictly increasing: {versions}"
    # One jump: the restored weights became a version of their own. The first update after it trained only on
    # samples of the restored policy (staleness 0), none of the lost group's.
    assert result["staleness_after_restore"] == [0.0], result
    assert len(versions) == UPDATES + result["updates_redone"]
    assert survived(result)
    rows = history(tmp_path / "chaos")
    assert max(r.get("recovery/store_restarts", 0) for r in rows) == 1
    print(f"\nchaos run: {result['wall_clock_s']:.0f} s, learner restore {result['learner_restore_s']} s")
