"""cluster/monitor.py: the panel queries as Grafana would send them (no server), then a real Prometheus
(Debian's package) started as `make monitor` starts it, scraping a live run through Ray's service-discovery
file: every panel query of cluster/grafana_dashboard.json returns data from Prometheus' HTTP API."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from cluster import monitor


def test_every_panel_query_has_its_grafana_variables_filled_in():
    queries = monitor.panel_queries(session="session_2026_x")
    assert len(queries) >= 14
    for title, expr in queries:
        assert "$" not in expr, (title, expr)
        assert 'SessionName=~"session_2026_x"' in expr, (title, expr)


def test_prometheus_config_scrapes_the_discovery_file(tmp_path):
    text = monitor.prometheus_config(tmp_path / monitor.DISCOVERY_FILE, interval_s=2)
    assert f"files: ['{tmp_path / monitor.DISCOVERY_FILE}']" in text and "scrape_interval: 2s" in text
    with pytest.raises(FileNotFoundError, match="--run.dashboard"):
        monitor.discovery_file(str(tmp_path))


def test_the_newest_live_cluster_is_found_and_a_dead_ones_file_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(monitor.tempfile, "gettempdir", lambda: str(tmp_path))
    dead, live = tmp_path / "rl4vlm-c-dead", tmp_path / "rl4vlm-ray-live"
    for d in (dead, live):
        d.mkdir()
        (d / monitor.DISCOVERY_FILE).write_text("[]")
    an_hour_ago = time.time() - 3600
    os.utime(dead / monitor.DISCOVERY_FILE, (an_hour_ago, an_hour_ago))
    assert monitor.discovery_file() == live / monitor.DISCOVERY_FILE
    os.utime(live / monitor.DISCOVERY_FILE, (an_hour_ago, an_hour_ago))
    with pytest.raises(FileNotFoundError, match="only stale ones"):
        monitor.discovery_file()
    assert monitor.discovery_file(str(dead)) == dead / monitor.DISCOVERY_FILE  # named: taken as it is


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary (make test installs it)")
def test_prometheus_answers_every_panel_query_during_a_run(tmp_path, tiny_model_path, monkeypatch):
    import ray

    from benchmarks.chaos import RunInThread, status, wait_for
    from cluster.control import lookup
    from cluster.launch import OWN_TEMP_DIRS, free_port, init_ray, shutdown_ray

    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    init_ray(4, dashboard=True, temp_prefix="rl4vlm-test-ray-", private=True)
    port, server, run = free_port(), None, None
    try:
        discovery = wait_for(lambda: _discovery(OWN_TEMP_DIRS[-1]), 60, "Ray's service-discovery file")
        server = monitor.start_prometheus(discovery, tmp_path / "prometheus", port)
        flags = ["--model.path", tiny_model_path, "--run.out-dir", str(tmp_path), "--run.name", "watched"]
        run = RunInThread(["tiny", *flags, "--run.total-updates", "12", "--run.checkpoint-every", "0"])
        wait_for(lambda: status("watched").get("update", 0) >= 1, 600, "update 1")
        ray.kill(ray.get(lookup("watched").rollout_actor.remote(0)), no_restart=True)  # the restart counter exists
        wait_for(lambda: status("watched").get("update", 0) >= 4, 600, "update 4")
        prometheus = f"http://127.0.0.1:{port}"
        counts, deadline = {}, time.monotonic() + 90
        while time.monotonic() < deadline and (not counts or not all(counts.values())):
            time.sleep(2)
            counts = monitor.check(prometheus)
        empty = [name for name, n in counts.items() if not n]
        assert not empty, f"{len(empty)} of {len(counts)} panel queries returned no data: {empty}"
        assert len(counts) >= 14
        print(f"\nall {len(counts)} panel queries answered by prometheus (update {status('watched')['update']})")
        run.join(900)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutdown_ray(remove_temp_dir=True)


def _discovery(ray_dir: str):
    try:
        return monitor.discovery_file(ray_dir)
    except FileNotFoundError:
        return None
