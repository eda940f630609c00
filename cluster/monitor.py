"""A Prometheus server for a run's Ray metrics, and a check that every Grafana panel's query has data.

    make monitor                                          # installs Debian's prometheus if missing, then:
    python -m cluster.monitor serve                       # newest local cluster's metrics, on 127.0.0.1:9090
    python -m cluster.monitor serve --ray-dir /tmp/rl4vlm-ray-abc123 --port 9091
    python -m cluster.monitor check --prometheus http://127.0.0.1:9090   # each panel: series returned

Prometheus finds the nodes through the file Ray's dashboard keeps up to date,
`<Ray temp dir>/prom_metrics_service_discovery.json` (a run started with `--run.dashboard`, or a cluster
from `cluster.local_cluster up` or `ray start --head`), so nodes that join later are scraped too. Grafana
(not packaged in Debian or PyPI, so not installed here) reads the same server: docs/cluster.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

DASHBOARD = pathlib.Path(__file__).with_name("grafana_dashboard.json")
DISCOVERY_FILE = "prom_metrics_service_discovery.json"  # ray._private.ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE
LIVE_S = 60
"""A running cluster's dashboard rewrites its discovery file every few seconds; an older one is a dead cluster's."""
SCRAPE_INTERVAL_S = 2
"""Short, so a few minutes of a run already give every rate() and increase() panel two points."""


def discovery_file(ray_dir: str | None = None) -> pathlib.Path:
    """Ray's service-discovery file of `ray_dir`, else of the newest local cluster (this project's temp dirs and
    Ray's default /tmp/ray). FileNotFoundError naming where it looked."""
    if ray_dir:
        candidates = [pathlib.Path(ray_dir) / DISCOVERY_FILE]
    else:
        patterns = [os.path.join(tempfile.gettempdir(), p, DISCOVERY_FILE) for p in ("rl4vlm-*", "ray")]
        candidates = [pathlib.Path(f) for p in patterns for f in glob.glob(p)]
    found = [c for c in candidates if c.exists()]
    live = [c for c in found if ray_dir or time.time() - c.stat().st_mtime < LIVE_S]  # a dead cluster's stays
    if not live:
        where = ray_dir or f"{tempfile.gettempdir()}/rl4vlm-*/ and /tmp/ray/"
        stale = f" (only stale ones, e.g. {found[0]}: no cluster rewrites them)" if found else ""
        raise FileNotFoundError(
            f"no live {DISCOVERY_FILE} in {where}{stale}: start the run with --run.dashboard (Ray's dashboard "
            "writes it), or pass --ray-dir <the cluster's temp dir>"
        )
    return max(live, key=lambda f: f.stat().st_mtime)


def prometheus_config(discovery: pathlib.Path, interval_s: int = SCRAPE_INTERVAL_S) -> str:
    return (
        f"global:\n  scrape_interval: {interval_s}s\n  evaluation_interval: {interval_s}s\n"
        f"scrape_configs:\n  - job_name: ray\n    file_sd_configs:\n      - files: ['{discovery}']\n"
        f"        refresh_interval: {interval_s}s\n"
    )


def start_prometheus(discovery: pathlib.Path, data_dir: pathlib.Path, port: int) -> subprocess.Popen:
    """Start the prometheus binary (Debian's package) on 127.0.0.1:`port`, its config and data in `data_dir`."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("no prometheus binary on PATH: `make monitor` installs Debian's package")
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "prometheus.yml").write_text(prometheus_config(discovery))
    command = [binary, f"--config.file={data_dir / 'prometheus.yml'}", f"--storage.tsdb.path={data_dir / 'tsdb'}"]
    command += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(data_dir / "prometheus.log", "w"))


def panel_queries(session: str = ".*", rate_window: str = "30s", range_window: str = "10m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of cluster/grafana_dashboard.json, with Grafana's variables filled
    in as Grafana would: $session, $__rate_interval and $__range."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$session", session)  # session names are [A-Za-z0-9_-]
            expr = expr.replace("$__rate_interval", rate_window).replace("$__range", range_window)
            out.append((panel["title"], expr))
    return out


def query(prometheus: str, expr: str) -> list[dict]:
    """The result vector of an instant query (Prometheus' HTTP API); RuntimeError if it fails."""
    url = f"{prometheus.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def check(prometheus: str, session: str = ".*") -> dict[str, int]:
    """Series returned per panel query ("<panel>: <expr>" -> count); 0 means the panel would show no data."""
    return {f"{title}: {expr}": len(query(prometheus, expr)) for title, expr in panel_queries(session)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve", "check"])
    parser.add_argument("--ray-dir", help="the Ray cluster's temp dir (default: the newest local one)")
    parser.add_argument("--port", type=int, default=9090, help="Prometheus' port on 127.0.0.1 (serve)")
    parser.add_argument("--data-dir", default="runs/prometheus", help="Prometheus' config and data (serve)")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="server to query (check)")
    parser.add_argument("--session", default=".*", help="Ray session name to check (default: all)")
    args = parser.parse_args(argv)
    if args.command == "check":
        counts = check(args.prometheus, args.session)
        for name, n in counts.items():
            print(f"{n:4d} series  {name}")
        empty = [name for name, n in counts.items() if not n]
        print(f"{len(counts) - len(empty)} of {len(counts)} panel queries return data", file=sys.stderr)
        return 1 if empty else 0
    try:
        discovery = discovery_file(args.ray_dir)
        server = start_prometheus(discovery, pathlib.Path(args.data_dir), args.port)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"prometheus on http://127.0.0.1:{args.port} (pid {server.pid}), scraping the nodes in {discovery}")
    print(f"  Ray dashboard's Metrics page: start the cluster with RAY_PROMETHEUS_HOST=http://127.0.0.1:{args.port}")
    print(f"  panels with data: python -m cluster.monitor check --prometheus http://127.0.0.1:{args.port}")
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return 0


if __name__ == "__main__":
    sys.exit(main())
