"""A real multi-node Ray cluster on this one machine: a head and two worker nodes, each its own `ray start`.

    python -m cluster.local_cluster up      # head (no CPUs) + rollout node + learner node, state in runs/
    python -m cluster.local_cluster status  # nodes, resources, dashboard URL, metrics ports
    python -m cluster.local_cluster env     # shell exports for `ray job ...` (address, token auth)
    python -m cluster.local_cluster down    # ends only this cluster's processes (never `ray stop`)

Every node gets the cluster's own temp dir and explicitly chosen free ports, so it never meets another Ray
instance on the machine (nor the default 6379/8265/10001). Token authentication stays on: the nodes run with
RAY_AUTH_MODE=token and Ray's own token lookup (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).
`up --head-only PATH` makes the worker nodes treat PATH as missing (RL4VLM_HIDDEN_PATHS), as separate machines
without the head's disk would: a checkpoint there reaches them through the object store (models/checkpoint_files.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from models.checkpoint_files import HIDDEN_ENV

REPO = pathlib.Path(__file__).resolve().parent.parent
# runs/ is git-ignored, so neither git nor a `--working-dir .` job upload picks the state file up.
DEFAULT_STATE = REPO / "runs" / "local-cluster.json"
NODE_RESOURCES = {"head": "head_node", "rollout": "rollout_node", "learner": "learner_node"}
# Named as `ray start` flags; the head's last two are set through env variables (see _node_env).
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port", "autoscaler_metrics", "dashboard_metrics")
NODE_PORTS = (
    "node-manager-port object-manager-port metrics-export-port dashboard-agent-listen-port dashboard-agent-grpc-port "
    "runtime-env-agent-port"
).split()
WORKER_PORTS_PER_NODE = 64  # one per worker process; a tiny run uses about ten on a node


def _port_free(port: int) -> bool:
    # Ray binds some servers to the node IP and some to all interfaces: the port must be free on both.
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block(n: int, low: int = 20000, high: int = 32000, tries: int = 200) -> int:
    """First port of n consecutive free ports, below Linux's ephemeral range (32768+) so that outgoing
    connections cannot take them later, and above Ray's default worker ports (10002-19999)."""
    for _ in range(tries):
        base = random.randrange(low, high - n)
        if all(_port_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports in [{low}, {high})")


def token_path() -> pathlib.Path | None:
    """Where Ray will read the auth token (its own order), creating ~/.ray/auth_token as `ray.init` would.

    None when the token comes from the RAY_AUTH_TOKEN variable itself (nothing on disk to point at)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = pathlib.Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or pathlib.Path.home() / ".ray" / "auth_token")
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only: the token is a secret
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # 256 bits, the format Ray generates
    return path


def _node_env(head_ports: dict[str, int], metrics_interval_ms: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    # Two head services whose ports only an env variable sets (defaults 44217/44227, shared by every cluster).
    env["AUTOSCALER_METRIC_PORT"] = str(head_ports["autoscaler_metrics"])
    env["DASHBOARD_METRIC_PORT"] = str(head_ports["dashboard_metrics"])
    env["RAY_AUTH_MODE"] = "token"  # explicit: `ray start` alone enables it only when a token file already exists
    # The job driver inherits this PATH: `python -m cluster.train` must resolve to this venv's Python.
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "3"  # nothing here drains (no Serve); keeps `down` quick
    if metrics_interval_ms:
        env["RAY_metrics_report_interval_ms"] = str(metrics_interval_ms)
    return env


def _start_node(state: dict, name: str, extra: list[str], env: dict, object_store_mb: int, timeout: float) -> None:
    """One `ray start --block`: a long-lived process per node, whose PID is the node and whose SIGTERM ends it."""
    spec, temp_dir = state["nodes"][name], state["temp_dir"]
    args = [
        "--block",
        # Ray on Linux swaps a loopback node IP for the host's routable one (gRPC servers and metrics bind
        # to all interfaces anyway); only the dashboard honours a loopback bind. See docs/cluster.md.
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={spec['cpus']}",
        "--num-gpus=0",
        # One unit per CPU (at least one): `--learner.resources learner_node 1` then fits a rank per CPU there.
        f"--resources={json.dumps({spec['resource']: max(spec['cpus'], 1)})}",
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        *[f"--{flag}={port}" for flag, port in spec["ports"].items()],
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]
    log = pathlib.Path(temp_dir) / f"ray-start-{name}.log"
    with open(log, "w") as out:
        # A session of its own: `down` signals the node's process group, and Ctrl-C here does not reach it.
        proc = subprocess.Popen(
            [str(pathlib.Path(sys.executable).parent / "ray"), "start", *extra, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state["pids"][name] = proc.pid
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start ({name}) failed or timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def up(
    state_file: str | os.PathLike | None = None,
    worker_cpus: int = 2,
    expose: bool = False,
    object_store_mb: int = 256,
    metrics_interval_ms: int | None = None,
    timeout: float = 180.0,
    head_only: list[str] = (),
) -> dict:
    """Start head + rollout + learner nodes; write and return the state (addresses, ports, PIDs, temp dir).

    `head_only`: paths the worker nodes' actors treat as missing (they then get a checkpoint there shipped)."""
    state_path = pathlib.Path(state_file or DEFAULT_STATE)
    old = read_state(state_path) if state_path.exists() else None
    if old and any(_ours(pid, old["temp_dir"]) for pid in old["pids"].values()):
        raise RuntimeError(f"a cluster from {state_path} is still running: `down` it first")
    # Short path: Ray's Unix sockets live under it and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rl4vlm-c-", dir="/tmp")
    per_node = len(NODE_PORTS) + WORKER_PORTS_PER_NODE
    base = free_port_block(len(HEAD_PORTS) + 3 * per_node)
    head_ports = dict(zip(HEAD_PORTS, range(base, base + len(HEAD_PORTS))))
    nodes = {}
    for i, name in enumerate(NODE_RESOURCES):
        start = base + len(HEAD_PORTS) + i * per_node
        ports = dict(zip(NODE_PORTS, range(start, start + len(NODE_PORTS))))
        ports["min-worker-port"], ports["max-worker-port"] = start + len(NODE_PORTS), start + per_node - 1
        nodes[name] = {"ports": ports, "resource": NODE_RESOURCES[name], "cpus": 0 if name == "head" else worker_cpus}
    token = token_path()
    dashboard_host = "0.0.0.0" if expose else "127.0.0.1"
    state = {
        "address": f"127.0.0.1:{head_ports['port']}",
        "dashboard_url": f"http://127.0.0.1:{head_ports['dashboard-port']}",
        "dashboard_host": dashboard_host,
        "head_ports": head_ports,
        "metrics_ports": {n: spec["ports"]["metrics-export-port"] for n, spec in nodes.items()},
        "nodes": nodes,
        "temp_dir": temp_dir,
        "token_path": str(token) if token else None,
        "pids": {},
        "state_file": str(state_path),
        "head_only": [os.path.abspath(p) for p in head_only],
    }
    env = _node_env(head_ports, metrics_interval_ms)
    head_args = ["--head", "--include-dashboard=true", f"--dashboard-host={dashboard_host}"]
    head_args += [f"--{flag}={head_ports[flag]}" for flag in HEAD_PORTS[:3]]
    try:
        _start_node(state, "head", head_args, env, object_store_mb, timeout)
        for name in ("rollout", "learner"):  # one at a time: nodes starting together race for socket names
            # Nodes here share one logs dir: the head's log monitor alone streams every worker's output to the
            # driver (three monitors printed each line three times).
            extra = [f"--address={state['address']}", "--include-log-monitor=false"]
            worker_env = {**env, HIDDEN_ENV: os.pathsep.join(state["head_only"])} if head_only else env
            _start_node(state, name, extra, worker_env, object_store_mb, timeout)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state, indent=2))
        _wait_ready(state, timeout)
    except BaseException:
        down(state, keep_logs=True)  # a failed start is diagnosed from the Ray logs
        raise
    return state


def _wait_ready(state: dict, timeout: float) -> None:
    """Until the dashboard answers and all three nodes are alive in the GCS."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(state["dashboard_url"] + "/api/gcs_healthz", timeout=5) as r:
                if r.status == 200 and sum(n["Alive"] for n in nodes(state)) == len(NODE_RESOURCES):
                    return
        except (OSError, RuntimeError, subprocess.SubprocessError):  # not up yet, or a slow `ray.init` on a busy host
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster not ready after {timeout:.0f} s (logs in {state['temp_dir']})")
        time.sleep(2)


def client_env(state: dict) -> dict[str, str]:
    """Variables a CLI client (`ray job submit`, a driver) needs for this cluster, besides its address."""
    env = {"RAY_AUTH_MODE": "token"}
    if state.get("token_path"):
        env["RAY_AUTH_TOKEN_PATH"] = state["token_path"]
    return env


_NODES_SNIPPET = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print("NODES=" + json.dumps(ray.nodes(), default=str))
"""


def nodes(state: dict, timeout: float = 60.0) -> list[dict]:
    """`ray.nodes()` of the cluster, asked from a child process: the caller's own Ray (and auth mode) stay
    untouched, which matters inside a pytest session that runs its own private clusters."""
    env = {**os.environ, **client_env(state)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", _NODES_SNIPPET, state["address"]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("NODES="):
            return json.loads(line[len("NODES=") :])
    raise RuntimeError(f"could not list nodes (rc {out.returncode}): {out.stderr[-2000:]}")


def _ours(pid: int, temp_dir: str) -> bool:
    """Alive and one of this cluster's processes (a PID from an old state file may belong to someone else now).

    Reaps it first when it is our own exited child, which would otherwise linger as a zombie."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return temp_dir in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def leftover_pids(temp_dir: str, sessions: set[int]) -> list[int]:
    """PIDs of this cluster still running: in a node's session (agents rename themselves, so their command
    lines do not show the temp dir), or with the temp dir in their command line or working dir (a job driver
    runs in its unpacked working_dir under the session dir). Nothing else on the machine matches."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
            if fields[0] == "Z":  # already dead, only waiting to be reaped
                continue
            session = int(fields[3])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError, ValueError):
            continue
        if session in sessions or temp_dir in cmdline or (cwd + os.sep).startswith(temp_dir + os.sep):
            found.append(int(proc.name))
    return found


def down(state: dict, keep_logs: bool = False, grace: float = 20.0) -> None:
    """SIGTERM each node's `ray start --block` (workers first, while the GCS can still take their drain
    notice), then SIGKILL whatever of this cluster remains. Never `ray stop`: it would end every cluster here."""
    temp_dir = state["temp_dir"]
    # Sessions to sweep: a node's, unless its PID now names someone else's process (stale state file).
    sessions = {p for p in state["pids"].values() if _ours(p, temp_dir) or not os.path.exists(f"/proc/{p}")}
    for group in (("rollout", "learner"), ("head",)):
        pids = [state["pids"][n] for n in group if n in state["pids"] and _ours(state["pids"][n], temp_dir)]
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: the node's children get it too
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_ours(pid, temp_dir) for pid in pids):
            time.sleep(0.5)
    for pid in leftover_pids(temp_dir, sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in state["pids"].values():
        _ours(pid, temp_dir)  # reaps a killed child of this process
    if not keep_logs:
        shutil.rmtree(temp_dir, ignore_errors=True)
    state_file = pathlib.Path(state.get("state_file", DEFAULT_STATE))
    if state_file.exists() and read_state(state_file).get("temp_dir") == temp_dir:
        state_file.unlink()


def read_state(path: str | os.PathLike | None = None) -> dict:
    return json.loads(pathlib.Path(path or DEFAULT_STATE).read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cluster.local_cluster", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["up", "down", "status", "env"])
    p.add_argument("--state-file", default=os.environ.get("RL4VLM_CLUSTER_STATE", str(DEFAULT_STATE)))
    p.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs of each worker node")
    p.add_argument("--object-store-mb", type=int, default=256, help="object store of each node")
    p.add_argument("--expose", action="store_true", help="bind the dashboard to 0.0.0.0 (default: 127.0.0.1)")
    p.add_argument("--keep-logs", action="store_true", help="down: keep the temp dir with the Ray logs")
    p.add_argument(
        "--head-only",
        action="append",
        default=[],
        metavar="PATH",
        help="up: a path the worker nodes treat as missing, as machines without this disk would (repeatable)",
    )
    args = p.parse_args(argv)
    if args.command != "up" and not pathlib.Path(args.state_file).exists():
        sys.exit(f"no cluster state at {args.state_file}: run `python -m cluster.local_cluster up` first")
    if args.command == "up":
        state = up(args.state_file, args.worker_cpus, args.expose, args.object_store_mb, head_only=args.head_only)
        print(f"cluster up: GCS {state['address']}, dashboard {state['dashboard_url']}, state {args.state_file}")
        print("submit: make submit TASK=tiny   (or see docs/cluster.md); stop: make cluster-down")
    elif args.command == "down":
        down(read_state(args.state_file), keep_logs=args.keep_logs)
        print("cluster down")
    elif args.command == "env":
        state = read_state(args.state_file)
        for k, v in {"RAY_API_SERVER_ADDRESS": state["dashboard_url"], **client_env(state)}.items():
            print(f"export {k}={shlex.quote(v)}")
    else:
        state = read_state(args.state_file)
        print(f"GCS {state['address']}  dashboard {state['dashboard_url']}  temp dir {state['temp_dir']}")
        for n in nodes(state):
            res = {k: v for k, v in n["Resources"].items() if not k.startswith("node:")}
            alive = "alive" if n["Alive"] else "dead"
            print(f"  {n['NodeID'][:8]} {alive:5s} metrics :{n['MetricsExportPort']}  {res}")


if __name__ == "__main__":
    main()
