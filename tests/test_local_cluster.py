"""A real three-node Ray cluster on this machine (cluster/local_cluster.py) and training jobs submitted to it the
way README.md and docs/cluster.md write them, from a fresh copy of the checkout whose checkpoint and runs/ the
worker nodes cannot read (`up --head-only`, as machines without the head's disk): the model is shipped to them
through the object store, the results land in the copy and outlive the cluster, a later job resumes the run on
another node while one of its rollout actors is killed and replaced, and a missing model fails in one line.
The metrics reach the nodes' Prometheus endpoints. One cluster for the module, always torn down (only its own
processes; never `ray stop`). The tests run in file order: later ones use the first job's run."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
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


def readme_line(task: str) -> str:
    """The `make submit TASK=<task> ...` line of README.md's "Running it as a cluster service", verbatim."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running it as a cluster service") :]
    return re.search(rf"^make submit TASK={task} .*$", section, re.M).group(0)


@pytest.fixture(scope="module")
def clone(tmp_path_factory, tiny_model_path):
    """What `git clone` gives (the tracked and not-ignored files, here with their uncommitted edits), plus this
    venv as .venv and the SFT checkpoint a first run would build (minutes) already in checkpoints/."""
    root = tmp_path_factory.mktemp("clone") / "rl4vlm"
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in filter(None, names.decode().split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(sys.prefix)  # this venv
    shutil.copytree(tiny_model_path, root / "checkpoints" / "numberline-sft")
    return root


@pytest.fixture(scope="module")
def cluster(clone):
    # Metrics every 2 s instead of Ray's 10 s, so a seconds-long tiny job shows up while it runs. The state file
    # sits where `make submit` / `make cluster-down` in the clone look for it.
    hidden = [str(clone / "checkpoints"), str(clone / "runs")]
    state = local_cluster.up(clone / "runs" / "local-cluster.json", metrics_interval_ms=2000, head_only=hidden)
    try:
        yield state
    finally:
        local_cluster.down(state)  # a no-op after test_results_outlive_the_cluster's `make cluster-down`
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


def submit(clone: pathlib.Path, line: str, log: pathlib.Path, watch=None, limit_s=600) -> tuple[int, str, float]:
    """Run a `make submit ...` line in the clone's shell; `watch(process)` is called every 2 s while it runs
    (and for up to 20 s after, while it returns False). A job still running after `limit_s` is killed (its
    status then is -9). Returns (exit status, output, seconds)."""
    t0 = time.monotonic()
    with open(log, "w") as out:
        job = subprocess.Popen(line, shell=True, cwd=clone, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline, finished = t0 + limit_s, False
            while time.monotonic() < deadline:
                if watch is not None and watch(job) and finished:
                    break
                if not finished and job.poll() is not None:
                    finished, deadline = True, time.monotonic() + (20 if watch else 0)
                time.sleep(2)
        finally:
            if job.poll() is None:
                job.kill()
            job.wait()
    return job.returncode, log.read_text(), time.monotonic() - t0


def model_events(cluster: dict) -> list[dict]:
    """Every node's models/checkpoint_files.py events (what each actor did to get the model, and how long)."""
    logs = pathlib.Path(cluster["temp_dir"]).glob("session_2*/rl4vlm-models/*/events.jsonl")
    return [json.loads(line) for log in logs for line in log.read_text().splitlines()]


def node_of(cluster: dict, resource: str) -> str:
    return next(n["NodeID"] for n in local_cluster.nodes(cluster) if resource in n["Resources"])


def actors(cluster: dict) -> list[dict]:
    out = subprocess.run(
        [RAY, "list", "actors", "--address", cluster["dashboard_url"], "--format", "json", "--detail"]
        + ["--limit", "1000"],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def readme_job(cluster, clone, tmp_path_factory):
    """README's smoke line, verbatim, in the clone, with every node's Prometheus endpoint polled meanwhile."""
    seen: set[str] = set()
    log = tmp_path_factory.mktemp("job") / "submit.log"
    control: dict = {}

    def scrape_all(job) -> bool:
        for port in cluster["metrics_ports"].values():
            seen.update(re.findall(r"^(ray_rl4vlm_\w+?)(?:\{| )", scrape(port), re.M))
        printed = re.search(r"^  scale: (.+)$", log.read_text(), re.M)
        if printed and not control and job.poll() is None:  # the driver's command, pasted as `status` meanwhile
            command = printed.group(1).replace(" scale ", " status ").replace(" --rollout-actors N", "")
            command = command.replace("python -m", f"{sys.executable} -m")
            env = {k: v for k, v in cli_env().items() if k != "RAY_AUTH_MODE"}  # only what the line itself says
            done = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True)
            control.update(line=printed.group(1), code=done.returncode, output=done.stdout + done.stderr)
        return PER_UPDATE_METRICS <= seen

    line = readme_line("tiny")
    code, output, seconds = submit(clone, line, log, scrape_all)
    print(f"{line}\n-> exit {code} in {seconds:.0f} s; metrics seen: {sorted(seen)}")
    assert code == 0, output[-5000:]
    run_dir = pathlib.Path(re.search(r"^run dir +(\S+)$", output, re.M).group(1))
    return {"output": output, "seen": seen, "run_dir": run_dir, "line": line, "control": control}


def test_the_readme_job_succeeds_and_exports_metrics(cluster, clone, readme_job):
    output = readme_job["output"]
    submission_id = re.search(r"Job '(raysubmit_\w+)' succeeded", output).group(1)
    status = subprocess.run(
        [RAY, "job", "status", "--address", cluster["dashboard_url"], submission_id],
        env=cli_env(),
        capture_output=True,
        text=True,
    )
    assert "succeeded" in (status.stdout + status.stderr).lower()
    seen = readme_job["seen"]
    assert PER_UPDATE_METRICS <= seen, f"missing on the endpoints: {sorted(PER_UPDATE_METRICS - seen)}"
    # Paths that mean one thing: resolved against the clone (RL4VLM_ROOT from make submit), printed at start and end.
    assert readme_job["run_dir"].parent == clone / "runs"
    assert output.count(f"model path {clone / 'checkpoints' / 'numberline-sft'}\n") == 2
    assert "temporary working dir" not in output and "huggingface.co" not in output

    # The upload left the venv, runs/ and checkpoints/ behind (.gitignore) and carried the code.
    unpacked = pathlib.Path(cluster["temp_dir"]).glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
    packages = [p for p in unpacked if p.is_dir()]  # not the .lock files next to them
    assert packages and all((p / "cluster" / "train.py").exists() for p in packages)
    assert not [p for p in packages for d in (".venv", "runs", "checkpoints", ".git") if (p / d).exists()]

    # Each actor ran on the node its custom resource names.
    nodes = {n["NodeID"]: n["Resources"] for n in local_cluster.nodes(cluster)}
    ours = ("RolloutActor", "LearnerWorker")
    placed = {a["class_name"]: nodes[a["node_id"]] for a in actors(cluster) if a["class_name"] in ours}
    assert "rollout_node" in placed["RolloutActor"] and "learner_node" in placed["LearnerWorker"]
    # ... under names that say run and role (the dashboard's Actors page, `ray list actors`).
    run, named = readme_job["run_dir"].name, {a["class_name"]: a["name"] for a in actors(cluster)}
    assert named["RolloutActor"] == f"rollout-{run}-0" and named["LearnerWorker"] == f"learner-{run}-0"
    assert named["ReplayStore"] == f"store-{run}" and named["RunControl"] == f"control-{run}"
    # The driver printed the dashboard and a control command that worked as pasted while the job ran.
    assert f"  dashboard: {cluster['dashboard_url']} (log in with the token `ray get-auth-token` prints)" in output
    control = readme_job["control"]
    assert control["line"].startswith(f"RAY_AUTH_MODE=token python -m cluster.control scale --run {run} ")
    assert control["code"] == 0 and '"desired_rollout_actors": 1' in control["output"], control


def test_nodes_without_the_checkpoint_got_it_shipped_once(cluster, clone, readme_job):
    model = str(clone / "checkpoints" / "numberline-sft")
    events = [e for e in model_events(cluster) if e["path"] == model]
    for resource in ("rollout_node", "learner_node"):
        on_node = [e for e in events if e["node"] == node_of(cluster, resource)]
        assert [e["action"] for e in on_node] == ["shipped"], on_node
        assert on_node[0]["reason"] == "not on this node" and on_node[0]["result"].startswith(cluster["temp_dir"])
        print(f"{resource}: shipped {on_node[0]['bytes'] / 1e6:.1f} MB in {on_node[0]['seconds']:.2f} s")
    assert "model files: shipped to 2 node(s)" in readme_job["output"]


def test_a_later_job_resumes_on_another_node_and_a_killed_rollout_actor_reloads_the_model(
    cluster, clone, readme_job, tmp_path
):
    """A second job resumes the first one's run from its durable checkpoint, with its rollout actor on the
    learner node; that actor is killed once the run is back, and its replacement gets the model there too."""
    run = readme_job["run_dir"]
    line = (
        f'make submit TASK=tiny ARGS="--run.resume runs/{run.name} --run.total-updates 6 '
        '--rollout.resources learner_node 1 --learner.resources learner_node 1"'
    )
    killed = []

    def kill_after_resume(job) -> bool:
        if not killed and "resumed from" in (tmp_path / "submit.log").read_text():
            ours = set(local_cluster.leftover_pids(cluster["temp_dir"], set(cluster["pids"].values())))
            alive = [a for a in actors(cluster) if a["class_name"] == "RolloutActor" and a["state"] == "ALIVE"]
            if alive and alive[0]["pid"] in ours:  # a worker process of this cluster, by its id
                os.kill(alive[0]["pid"], signal.SIGKILL)
                killed.append(alive[0])
        return True

    code, output, seconds = submit(clone, line, tmp_path / "submit.log", kill_after_resume)
    assert code == 0 and killed, output[-5000:]
    result = json.loads((run / "eval.json").read_text())
    checkpoint = pathlib.Path(result["resumed_from"])
    assert checkpoint.parent == run / "checkpoints" and result["updates"] == 6
    assert result["rollout_actor_restarts"] >= 1
    learner_node = node_of(cluster, "learner_node")
    assert killed[0]["node_id"] == learner_node and killed[0]["name"] == f"rollout-{run.name}-0"
    replacement = [a for a in actors(cluster) if a["name"] == f"rollout-{run.name}-0-r1"]
    assert replacement and replacement[0]["node_id"] == learner_node
    events = [e for e in model_events(cluster) if e["path"] == str(checkpoint / "model")]
    assert {e["node"] for e in events} == {learner_node}
    # The rank, the rollout actor and its replacement: one copy shipped to the node, then used from its cache.
    actions = [e["action"] for e in events]
    assert actions.count("shipped") == 1 and actions.count("cached") >= 2, events
    print(f"resume job took {seconds:.0f} s; learner node: {actions}")


def test_a_missing_model_fails_in_seconds_with_one_line(cluster, clone, tmp_path):
    line = 'make submit TASK=tiny ARGS="--model.path checkpoints/missing --model.no-build-if-missing"'
    code, output, seconds = submit(clone, line, tmp_path / "submit.log")
    assert code != 0 and seconds < 120, output[-3000:]
    missing = clone / "checkpoints" / "missing"
    errors = {line for line in output.splitlines() if line.startswith("error:")}  # the CLI repeats the log tail
    assert errors == {f"error: model.path {missing} does not exist and model.build_if_missing is off"}
    assert "Traceback" not in output and "huggingface.co" not in output
    print(f"failed in {seconds:.0f} s (submit to exit, job start included)")


def test_results_outlive_the_cluster(cluster, clone, readme_job):
    down = subprocess.run(["make", "cluster-down"], cwd=clone, env=cli_env(), capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not pathlib.Path(cluster["temp_dir"]).exists()  # the job's working dirs went with it
    run = readme_job["run_dir"]
    for name in ("eval.json", "config.json", "history.jsonl", "learning_curve.png", "tensorboard", "checkpoint"):
        assert (run / name).exists(), name
    assert json.loads((run / "eval.json").read_text())["updates"] >= 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if (p / "state.json").exists())
