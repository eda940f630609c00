"""models/checkpoint_files.py: a checkpoint made local on a node that cannot read the driver's path (manifest,
object-store shipping verified by checksum, one copy per node), and the driver's paths resolved once
(cluster/train.py resolve_paths). Seconds, except the one test on a private Ray cluster."""

from __future__ import annotations

import json
import os
import pathlib
import threading

import numpy as np
import pytest

from contracts.presets import tiny
from models import checkpoint_files as cf
from models.checkpoint_files import ModelFiles, ModelFilesError, ensure_local


def fake_checkpoint(path: pathlib.Path, weights: bytes = b"\x01\x02" * 1000) -> pathlib.Path:
    (path / "value_head").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "value_head" / "head.safetensors").write_bytes(b"head")
    return path


def events(root: pathlib.Path) -> list[dict]:
    return [json.loads(line) for f in root.glob("*/events.jsonl") for line in f.read_text().splitlines()]


class FakeServer:
    """Stands in for the CheckpointServer actor: `fetch` is patched to call `packed` directly."""

    def __init__(self, path, manifest):
        self.server = cf.CheckpointServer(str(path), manifest)
        self.calls = 0

    def packed(self, node):
        self.calls += 1
        return cf.pack(self.server.path, self.server.expected)


@pytest.fixture
def shipping(monkeypatch, tmp_path):
    """A checkpoint on 'the driver's disk' (hidden from this process, as from a node without it) and a server."""
    path = fake_checkpoint(tmp_path / "driver" / "ckpt")
    monkeypatch.setenv(cf.HIDDEN_ENV, str(tmp_path / "driver"))
    monkeypatch.setattr(cf, "fetch", lambda server, node: server.packed(node))
    server = FakeServer(path, cf.manifest(path))
    return path, ModelFiles(str(path), server.server.expected, server), tmp_path / "cache"


def test_manifest_lists_every_file_and_its_digest_follows_the_content(tmp_path):
    a = cf.manifest(fake_checkpoint(tmp_path / "a"))
    b = cf.manifest(fake_checkpoint(tmp_path / "b"))
    c = cf.manifest(fake_checkpoint(tmp_path / "c", weights=b"\x01\x03" * 1000))
    assert [f[0] for f in a["files"]] == ["config.json", "model.safetensors", "value_head/head.safetensors"]
    assert a["bytes"] == sum(f[1] for f in a["files"]) and a["digest"] == b["digest"] != c["digest"]
    with pytest.raises(ModelFilesError, match="no config.json"):
        cf.manifest(tmp_path)


def test_a_readable_matching_path_is_used_as_it_is(tmp_path):
    path = fake_checkpoint(tmp_path / "ckpt")
    files = ModelFiles(str(path), cf.manifest(path), server=None)
    assert ensure_local(str(path), files, root=tmp_path / "cache") == str(path)
    assert [e["action"] for e in events(tmp_path / "cache")] == ["local"]
    assert ensure_local("anything", None) == "anything"  # an actor built directly: untouched


def test_a_node_without_the_path_gets_one_verified_copy(shipping):
    path, files, root = shipping
    first = ensure_local(str(path), files, root=root)
    assert first != str(path) and pathlib.Path(first, "value_head", "head.safetensors").read_bytes() == b"head"
    assert cf.manifest(first)["digest"] == files.manifest["digest"]
    assert ensure_local(str(path), files, root=root) == first  # the node's copy, not shipped again
    assert files.server.calls == 1
    assert [e["action"] for e in events(root)] == ["shipped", "cached"]


def test_concurrent_actors_on_one_node_share_one_copy(shipping):
    path, files, root = shipping
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_local(str(path), files, root=root))) for _ in "ab"]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(results)) == 1 and files.server.calls == 1


def test_a_stale_copy_at_the_same_path_is_replaced_by_the_drivers(shipping, monkeypatch, tmp_path):
    path, files, root = shipping
    stale = fake_checkpoint(tmp_path / "node-copy", weights=b"\x09" * 2000)  # same sizes, other weights
    monkeypatch.delenv(cf.HIDDEN_ENV)
    local = ModelFiles(str(stale), files.manifest, files.server)
    out = ensure_local(str(stale), local, root=root)
    assert out != str(stale) and pathlib.Path(out, "model.safetensors").read_bytes() == b"\x01\x02" * 1000
    assert events(root)[0]["reason"] == "differs from the driver's copy (model.safetensors)"


def test_a_copy_that_fails_its_checksum_is_refused(shipping, monkeypatch):
    path, files, root = shipping
    good = cf.pack(path, files.manifest)
    monkeypatch.setattr(cf, "fetch", lambda server, node: {**good, "model.safetensors": np.zeros(2000, np.uint8)})
    with pytest.raises(ModelFilesError, match="model.safetensors failed its blake2b check"):
        ensure_local(str(path), files, root=root)
    assert not [p for p in root.glob("*/*") if p.is_dir()]  # nothing half-written stays behind


def test_nothing_to_ship_from_fails_in_one_line_naming_node_path_and_remedy(shipping):
    path, files, root = shipping
    with pytest.raises(ModelFilesError) as error:
        ensure_local(str(path), ModelFiles(files.path, files.manifest, server=None), root=root)
    message = str(error.value)
    assert "\n" not in message and "node local" in message and str(path) in message and "storage" in message
    assert isinstance(error.value, FileNotFoundError)


def test_the_one_line_is_recovered_from_an_actor_death_message():
    death = "ActorDiedError: ...\nTraceback ...\nmodels.checkpoint_files.ModelFilesError: node 1a2b cannot read /x\n"
    assert str(cf.model_files_error(RuntimeError(death))) == "node 1a2b cannot read /x"
    assert cf.model_files_error(RuntimeError("OOM")) is None


def test_the_cluster_server_packs_once_and_ships_through_the_object_store(ray_cluster, tmp_path):
    """Real Ray: two tasks on a 'node' without the path (hidden by env) each call ensure_local at once."""
    path = fake_checkpoint(tmp_path / "driver" / "ckpt", weights=os.urandom(1 << 20))
    server = ray_cluster.remote(num_cpus=0)(cf.CheckpointServer).remote(str(path), cf.manifest(path))
    files = ModelFiles(str(path), cf.manifest(path), server)
    hidden = {"env_vars": {cf.HIDDEN_ENV: str(tmp_path / "driver")}}

    @ray_cluster.remote(num_cpus=0, runtime_env=hidden)
    def start_actor(files):
        return ensure_local(files.path, files)

    copies = ray_cluster.get([start_actor.remote(files) for _ in range(2)])
    assert len(set(copies)) == 1 and copies[0] != str(path)
    assert "rl4vlm-models" in copies[0]  # under the node's Ray session dir
    assert cf.manifest(copies[0])["digest"] == files.manifest["digest"]
    report = ray_cluster.get(server.report.remote())
    assert len(report["nodes"]) == 1 and report["pack_put_s"] is not None
    ray_cluster.kill(server)


# ---- the driver's paths (cluster/train.py) ----------------------------------------------------------------------
def test_relative_paths_resolve_once_against_the_root(monkeypatch, tmp_path):
    from cluster.train import ROOT_ENV, resolve_paths

    cfg = tiny()
    cfg.run.out_dir, cfg.run.resume = "runs", "runs/tiny-1"
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    monkeypatch.chdir("/")
    assert resolve_paths(cfg) == []
    assert cfg.model.path == str(tmp_path / "checkpoints" / "numberline-sft")
    assert (cfg.run.out_dir, cfg.run.resume) == (str(tmp_path / "runs"), str(tmp_path / "runs" / "tiny-1"))


def test_relative_paths_inside_a_job_working_dir_are_flagged(monkeypatch, tmp_path):
    from cluster.train import ROOT_ENV, resolve_paths

    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    job_dir.mkdir(parents=True)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(job_dir)
    cfg = tiny()
    cfg.model.path = "/models/x"
    notes = resolve_paths(cfg)
    assert "--run.out-dir runs" in notes[0] and "--model.path" not in notes[0] and "deleted" in notes[1]
    assert cfg.run.out_dir == str(job_dir / "runs") and cfg.model.path == "/models/x"
