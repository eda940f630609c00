"""A real three-node Ray cluster on this machine (cluster/local_cluster.py), a training job submitted to it with
the `ray job submit` CLI exactly as docs/cluster.md writes it, and the job's metrics on the nodes' Prometheus
endpoints. One cluster for the module, always torn down (only its own processes; never `ray stop`)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from cluster import local_cluster

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parent.parent
RAY = str(pathlib.Path(sys.executable).parent / "ray")
# What the driver sets by update 1 (cluster/metrics.py RunLogger.log); README lists the same names.
PER_UPDATE_METRICS = {
    f"ray_rl4vlm_{k}"
    for k in (
        "env_steps_per_s",
        "tokens_per_s",
        "success",
        "reward",
        "staleness",
        "weight_push_seconds",
        "replay_depth",
        "policy_version",
        "eval_success",
    )
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Metrics every 2 s instead of Ray's 10 s, so a seconds-long tiny job shows up while it runs.
    state = local_cluster.up(tmp_path_factory.mktemp("cluster") / "state.json", metrics_interval_ms=2000)
    try:
        yield state
    finally:
        local_cluster.down(state)
        assert not local_cluster.leftover_pids(state["temp_dir"], set(state["pids"].values()))


def cli_env() -> dict[str, str]:
    """The shell of someone following docs/cluster.md: token mode on, no RAY_ADDRESS left over."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return {**env, "RAY_AUTH_MODE": "token"}


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_three_alive_nodes_with_distinct_resources(cluster):
    alive = [n for n in local_cluster.nodes(cluster) if n["Alive"]]
    assert len(alive) == 3
    by_resource = {r: n for n in alive for r in ("head_node", "rollout_node", "learner_node") if r in n["Resources"]}
    assert len({n["NodeID"] for n in by_resource.values()}) == 3  # each marker on its own node
    assert by_resource["head_node"]["Resources"].get("CPU", 0) == 0  # nothing but the driver runs on the head
    assert by_resource["rollout_node"]["Resources"]["CPU"] == by_resource["learner_node"]["Resources"]["CPU"] == 2
    assert {n["MetricsExportPort"] for n in alive} == set(cluster["metrics_ports"].values())
    ports = [p for spec in cluster["nodes"].values() for p in spec["ports"].values()]
    assert not {6379, 8265, 10001} & {int(cluster["address"].rsplit(":", 1)[1]), *ports}
    status = subprocess.run(
        ["make", "-s", "cluster-status", f"STATE={cluster['state_file']}"], cwd=REPO, capture_output=True, text=True
    )
    assert status.returncode == 0 and status.stdout.count("alive") == 3, status.stdout + status.stderr


def test_dashboard_needs_the_token_and_listens_on_loopback(cluster):
    url = cluster["dashboard_url"]
    with urllib.request.urlopen(url + "/api/authentication_mode", timeout=5) as r:
        assert json.load(r)["authentication_mode"] == "token"
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url + "/api/jobs/", headers=headers), timeout=5)
        assert err.value.code == code
    token = pathlib.Path(cluster["token_path"]).read_text().strip()
    request = urllib.request.Request(url + "/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200
    host_ip = local_cluster.nodes(cluster)[0]["NodeManagerAddress"]  # Ray's routable IP for this machine
    if host_ip != "127.0.0.1":
        with pytest.raises(OSError):
            socket.create_connection((host_ip, int(url.rsplit(":", 1)[1])), timeout=3).close()


def test_submitted_training_job_succeeds_and_exports_metrics(cluster, tiny_model_path, tmp_path):
    url = cluster["dashboard_url"]
    command = [
        *[RAY, "job", "submit", "--address", url, "--working-dir", ".", "--"],
        *["python", "-m", "cluster.train", "tiny", "--run.total-updates", "3", "--run.eval-episodes", "2"],
        *["--model.path", tiny_model_path, "--run.out-dir", str(tmp_path / "runs")],
        *["--rollout.resources", "rollout_node", "1", "--learner.resources", "learner_node", "1"],
    ]
    log = tmp_path / "submit.log"
    seen: set[str] = set()
    t0 = time.monotonic()
    with open(log, "w") as out:
        job = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            # Poll every node's endpoint while the job runs, and briefly after (the last export may lag).
            deadline = None
            while deadline is None or (time.monotonic() < deadline and not PER_UPDATE_METRICS <= seen):
                for port in cluster["metrics_ports"].values():
                    seen |= set(re.findall(r"^(ray_rl4vlm_\w+?)(?:\{| )", scrape(port), re.M))
                if deadline is None and job.poll() is not None:
                    deadline = time.monotonic() + 20
                time.sleep(2)
            job.wait(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
    output = log.read_text()
    print(f"job took {time.monotonic() - t0:.0f} s; metrics seen: {sorted(seen)}")
    assert job.returncode == 0, output[-5000:]
    submission_id = re.search(r"Job '(raysubmit_\w+)' succeeded", output).group(1)
    status = subprocess.run(
        [RAY, "job", "status", "--address", url, submission_id], env=cli_env(), capture_output=True, text=True
    )
    assert "succeeded" in (status.stdout + status.stderr).lower()
    assert PER_UPDATE_METRICS <= seen, f"missing on the endpoints: {sorted(PER_UPDATE_METRICS - seen)}"
    assert (tmp_path / "runs").is_dir() and list((tmp_path / "runs").glob("*/eval.json"))

    # The upload left the venv, runs/ and checkpoints/ behind (.gitignore) and carried the code.
    unpacked = pathlib.Path(cluster["temp_dir"]).glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
    packages = [p for p in unpacked if p.is_dir()]  # not the .lock files next to them
    assert packages and all((p / "cluster" / "train.py").exists() for p in packages)
    assert not [p for p in packages for d in (".venv", "runs", "checkpoints", ".git") if (p / d).exists()]

    # Each actor ran on the node its custom resource names.
    actors = json.loads(
        subprocess.run(
            [RAY, "list", "actors", "--address", url, "--format", "json", "--detail", "--limit", "1000"],
            env=cli_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    nodes = {n["NodeID"]: n["Resources"] for n in local_cluster.nodes(cluster)}
    ours = ("RolloutActor", "LearnerWorker")
    placed = {a["class_name"]: nodes[a["node_id"]] for a in actors if a["class_name"] in ours}
    assert "rollout_node" in placed["RolloutActor"] and "learner_node" in placed["LearnerWorker"]
