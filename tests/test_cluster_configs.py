"""The deployment files in cluster/ name only things this repo has: entry points, presets and flags, metrics."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import shlex

import pytest
import yaml

from cluster import metrics
from contracts.presets import PRESETS, parse_cli

CLUSTER = pathlib.Path(__file__).resolve().parent.parent / "cluster"
FILES = ["ray-cluster.yaml", "rayjob.yaml", "grafana_dashboard.json"]
RESOURCES = {"head_node", "rollout_node", "learner_node"}  # the custom resources of cluster/local_cluster.py
SUFFIXES = {"Gauge": [""], "Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"]}
"""How Prometheus names the series of each Ray metric kind."""


class Recorded:
    """Stands in for ray.util.metrics' Gauge/Counter/Histogram: records the name and every value sent."""

    made: list[Recorded] = []

    def __init__(self, name, description="", boundaries=None):
        self.name, self.values = name, []
        Recorded.made.append(self)

    def set(self, value):
        self.values.append(value)

    inc = observe = set


def exported_series(tmp_path, monkeypatch) -> set[str]:
    """The Prometheus series the run logger really exports: `ray_` + each metric it registers (with its kind's
    suffixes), after logging one update's metrics as the driver does; a metric that never gets a value fails."""
    import ray.util.metrics

    Recorded.made = []
    for kind in SUFFIXES:
        monkeypatch.setattr(ray.util.metrics, kind, type(kind, (Recorded,), {}))
    logger = metrics.RunLogger(tmp_path, use_ray_metrics=True)
    update = {key: 1.0 for key, _ in metrics.RAY_GAUGES.values()}
    update |= {"rollout/actor_restarts": 1.0, "learner/staleness_count_1": 2.0}
    logger.log(1, update)
    logger.close()
    silent = [m.name for m in Recorded.made if not m.values]
    assert not silent, f"registered but never given a value: {silent}"
    return {f"ray_{m.name}{s}" for m in Recorded.made for s in SUFFIXES[type(m).__name__]}


def entrypoints(text: str) -> list[list[str]]:
    """Each `python -m module args...` command in a file's text (comments included), as argv after `-m`."""
    commands = []
    for match in re.finditer(r"python -m ([\w.]+)((?:[ \t]+(?:\\\n[\s#]*)?[^\s\\#'\"]+)*)", text):
        continued = re.sub(r"\\\n[\s#]*", " ", match.group(2))  # a shell line continued, also inside comments
        commands.append([match.group(1), *shlex.split(continued)])
    return commands


def strings(node) -> list[str]:
    """All strings inside a parsed YAML/JSON document (folded entry points included)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", FILES)
def test_files_parse(name):
    text = (CLUSTER / name).read_text()
    doc = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    assert isinstance(doc, dict) and doc


@pytest.mark.parametrize("name", ["ray-cluster.yaml", "rayjob.yaml"])
def test_every_entrypoint_is_a_repo_module_with_main_and_valid_flags(name):
    text = (CLUSTER / name).read_text()
    doc = yaml.safe_load(text)
    commands = entrypoints(text) + [c for s in strings(doc) for c in entrypoints(s)]
    assert any(c[0] == "cluster.train" for c in commands), f"{name} names no `python -m cluster.train`"
    for module, *args in commands:
        assert (CLUSTER.parent / (module.replace(".", "/") + ".py")).exists(), f"{module} is not in this repo"
        assert callable(getattr(importlib.import_module(module), "main", None)), f"{module} has no main()"
        if module == "cluster.train":
            assert args and args[0] in PRESETS, f"{name}: unknown preset in {args}"
            parse_cli(args)  # every flag exists and the combination validates


def test_launcher_config_follows_rays_schema():
    """The schema `ray up` checks against (shipped with the installed Ray), and our custom resources."""
    import jsonschema
    import ray

    schema = json.loads((pathlib.Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    node_types = cfg["available_node_types"]
    assert node_types[cfg["head_node_type"]]["resources"] == {"CPU": 0, "head_node": 1}
    assert {r for t in node_types.values() for r in t["resources"] if r not in ("CPU", "GPU")} == RESOURCES
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])
    assert not any("ray stop" in c for c in strings(cfg))  # never on shared machines; these VMs start fresh


def test_rayjob_manifest_shape():
    doc = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("python -m cluster.train numberline")
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert {next(iter(json.loads(json.loads(g["rayStartParams"]["resources"])))) for g in groups} == RESOURCES
    gpu = [g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in str(g["template"])]
    assert [json.loads(json.loads(g["rayStartParams"]["resources"])) for g in gpu] == [{"learner_node": 1}]


def test_dashboard_queries_exactly_the_metrics_the_run_exports(tmp_path, monkeypatch):
    dash = json.loads((CLUSTER / "grafana_dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\bray_rl4vlm_\w+", e)}
    exported = exported_series(tmp_path, monkeypatch)
    assert len(exported) >= 10, exported  # an empty export (and an empty dashboard) must not pass
    assert queried <= exported, f"queried but never exported: {sorted(queried - exported)}"
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in exported}
    covered = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in queried}
    assert bases <= covered, f"exported but on no panel: {sorted(bases - covered)}"
    assert all(p["datasource"]["type"] == "prometheus" for p in dash["panels"])
    assert any("histogram_quantile" in e and "sample_staleness_bucket" in e for e in exprs)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
