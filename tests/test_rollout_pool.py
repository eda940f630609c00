"""The rollout pool in a real run: a killed rollout actor is replaced and the run finishes all its updates;
the pool scales 1 -> 3 -> 2 through the `python -m cluster.control` command while the job runs, and every new
actor's first samples carry the policy version current when it joined."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.slow


class RunInThread:
    """cluster.train.main in a thread of the test process (it joins the test's Ray cluster)."""

    def __init__(self, argv: list[str]):
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self.thread.start()

    def _run(self, argv):
        from cluster.train import main

        try:
            self.result = main(argv)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test thread
            self.error = error

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish in time"
        if self.error:
            raise self.error
        return self.result


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def status(run_name: str) -> dict:
    import ray

    from cluster.control import lookup

    try:
        return ray.get(lookup(run_name).status.remote())
    except ValueError:  # not registered yet
        return {}


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
