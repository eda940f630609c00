"""cluster/metrics.py on a real Ray node: every gauge the run logger sets stays on the node's Prometheus endpoint
between updates (Ray drops a gauge that nobody sets for two export intervals), and the curve is drawn."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from cluster import metrics

GAUGES = {f"ray_rl4vlm_{name}" for name in metrics.RAY_GAUGES}


def scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return set(re.findall(r"^(ray_rl4vlm_\w+?)(?:\{| )", r.read().decode(), re.M))


def one_update() -> dict[str, float]:
    return {key: 1.0 for key, _ in metrics.RAY_GAUGES.values()} | {"rollout/total_env_steps": 10.0}


@pytest.mark.slow
def test_every_gauge_stays_on_the_endpoint_between_updates(tmp_path, monkeypatch):
    import ray

    from cluster.launch import init_ray, shutdown_ray

    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")  # Ray now drops a gauge left unset for ~2 s
    init_ray(1, temp_prefix="rl4vlm-test-ray-", private=True)
    logger = None
    try:
        port = ray.nodes()[0]["MetricsExportPort"]
        logger = metrics.RunLogger(tmp_path, refresh_s=0.5)
        logger.log(1, one_update())  # one update, then a long pause as during a real PPO update
        deadline = time.monotonic() + 60
        while not GAUGES <= scrape(port):
            assert time.monotonic() < deadline, f"never exported: {sorted(GAUGES - scrape(port))}"
            time.sleep(0.5)
        missing = []
        for _ in range(20):  # 10 s: five times Ray's expiry
            time.sleep(0.5)
            missing.append(GAUGES - scrape(port))
        bad = [m for m in missing if m]
        assert not bad, f"{len(bad)} of 20 scrapes between updates lacked gauges, e.g. {sorted(bad[-1])}"
    finally:
        if logger is not None:
            logger.close()
        shutdown_ray(remove_temp_dir=True)
    assert not logger.refresher.is_alive()


def test_history_and_curve(tmp_path):
    logger = metrics.RunLogger(tmp_path, use_ray_metrics=False)
    logger.log(1, one_update())
    logger.log(2, one_update() | {"eval/success": 0.5})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2] and rows[1]["eval/success"] == 0.5
    metrics.plot_curve(tmp_path, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_metrics_merge_counts_timings_and_means():
    ranks = [
        {"learner/samples": 130.0, "learner/staleness_count_1": 3.0, "timing/train_s": 20.0, "learner/approx_kl": 0.01},
        {"learner/samples": 128.0, "learner/staleness_count_1": 5.0, "timing/train_s": 22.0, "learner/approx_kl": 0.03},
    ]
    merged = metrics.merge_ranks(ranks)
    assert merged["learner/samples"] == 258.0 and merged["learner/staleness_count_1"] == 8.0
    assert merged["timing/train_s"] == 22.0 and merged["learner/approx_kl"] == pytest.approx(0.02)
    assert metrics.merge_ranks(ranks[:1]) == ranks[0]
