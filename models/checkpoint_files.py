"""A checkpoint directory's files, made local on whichever node reads them (rollout actors, learner ranks).

The driver describes the checkpoint once (`manifest`: relative paths, sizes, blake2b digests) and serves it
from its own node (`CheckpointServer`, started as a Ray actor by cluster/launch.py). Every rollout actor and
learner rank calls `ensure_local(path, files)` before anything reads the model, replaced and added actors too:

- `path` is readable here and matches the manifest (shared storage, or the driver's own machine): used as is;
- otherwise the files come through Ray's object store: packed by the server at the first request and put once,
  fetched once per node, verified by checksum and unpacked atomically (under a lock, so actors on one node
  share one copy) into `<node's Ray session dir>/rl4vlm-models/<node id>/<digest>/`; that path is returned;
- nothing to ship from (no server): `ModelFilesError`, one line naming the node, the path and the remedy.

A path that is not here is never taken for a model hub repo id (the actors also run with HF_HUB_OFFLINE=1).
Each call appends one JSON line to the node's `rl4vlm-models/<node id>/events.jsonl` and prints one line.
`RL4VLM_HIDDEN_PATHS` (os.pathsep-separated prefixes) makes this node treat those paths as missing: a
one-machine cluster (cluster/local_cluster.py `--head-only`) so behaves like machines without a shared disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

HIDDEN_ENV = "RL4VLM_HIDDEN_PATHS"
CHUNK = 8 << 20


class ModelFilesError(FileNotFoundError):
    """The checkpoint cannot be made local on this node; the message is one line."""


@dataclass(frozen=True)
class ModelFiles:
    """What every rollout actor and learner rank is given about the model: where the driver has it, what it
    holds, and who ships it to nodes that cannot read it."""

    path: str
    manifest: dict
    server: Any = None
    """Handle of the CheckpointServer on the driver's node (None: nothing can be shipped)."""


# ---- describing and checking a checkpoint -----------------------------------------------------------------------
def _file_hash(path: pathlib.Path, memo: dict | None = None) -> str:
    """blake2b of a file; `memo` (absolute path -> [size, mtime_ns, inode, hash]) skips unchanged files."""
    st = path.stat()
    key, sig = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
    if memo is not None and memo.get(key, [None])[:3] == sig:
        return memo[key][3]
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    if memo is not None:
        memo[key] = [*sig, h.hexdigest()]
    return h.hexdigest()


def _digest(files: list) -> str:
    return hashlib.blake2b(json.dumps(files).encode(), digest_size=16).hexdigest()


def manifest(path: str | os.PathLike, memo: dict | None = None) -> dict:
    """{"digest", "bytes", "files": [[relative path, size, blake2b], ...]} of every file under `path`."""
    root = pathlib.Path(path)
    if not (root / "config.json").is_file():
        raise ModelFilesError(f"{root} is not a checkpoint directory (no config.json)")
    names = sorted(p for p in root.rglob("*") if p.is_file())
    files = [[p.relative_to(root).as_posix(), p.stat().st_size, _file_hash(p, memo)] for p in names]
    return {"digest": _digest(files), "bytes": sum(f[1] for f in files), "files": files}


def hidden(path: str | os.PathLike) -> bool:
    """Whether this node treats `path` as absent (RL4VLM_HIDDEN_PATHS)."""
    target = os.path.abspath(path)
    prefixes = [os.path.abspath(p) for p in os.environ.get(HIDDEN_ENV, "").split(os.pathsep) if p]
    return any(target == p or target.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)


def mismatch(path: str | os.PathLike, expected: dict, memo: dict | None = None) -> str | None:
    """Why `path` here is not the manifest's checkpoint (None: it is)."""
    root = pathlib.Path(path)
    if hidden(root) or not root.is_dir():
        return "not on this node"
    for rel, size, digest in expected["files"]:
        p = root / rel
        if not p.is_file() or p.stat().st_size != size or _file_hash(p, memo) != digest:
            return f"differs from the driver's copy ({rel})"
    return None


def model_files_error(error: Exception) -> ModelFilesError | None:
    """The one-line ModelFilesError inside an actor's death (a Ray error whose text carries its traceback)."""
    tag = f"{ModelFilesError.__name__}: "
    lines = [line.split(tag, 1)[1] for line in str(error).splitlines() if tag in line]
    return ModelFilesError(lines[-1]) if lines else None


# ---- shipping through the object store ---------------------------------------------------------------------------
def pack(path: str | os.PathLike, expected: dict) -> dict[str, np.ndarray]:
    """The checkpoint's files as uint8 arrays (zero-copy out of Ray's object store), checked against `expected`."""
    out = {}
    for rel, size, digest in expected["files"]:
        data = np.fromfile(pathlib.Path(path) / rel, dtype=np.uint8)
        if data.size != size or hashlib.blake2b(data, digest_size=16).hexdigest() != digest:
            raise ModelFilesError(f"{path}/{rel} changed since the run described it: restart the run")
        out[rel] = data
    return out


def unpack(packed: dict[str, np.ndarray], expected: dict, dest: pathlib.Path, memo: dict | None = None) -> None:
    """Write verified files into a temporary sibling of `dest`, then rename it to `dest` (atomic); their hashes
    go into `memo` so that the next actor on the node need not read them again."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for rel, size, digest in expected["files"]:
            data = packed.get(rel)
            if data is None or data.size != size or hashlib.blake2b(data, digest_size=16).hexdigest() != digest:
                raise ModelFilesError(f"shipped file {rel} failed its blake2b check")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        os.rename(tmp, dest)
        for rel, _, digest in expected["files"] if memo is not None else ():
            st = (dest / rel).stat()
            memo[str((dest / rel).resolve())] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class CheckpointServer:
    """The driver node's source of one checkpoint (a Ray actor, one call at a time): packs and puts the files
    in the object store at the first request and hands every later request the same ref."""

    def __init__(self, path: str, expected: dict):
        self.path, self.expected = path, expected
        self.ref = None
        self.pack_s: float | None = None
        self.requests: list[str] = []

    def packed(self, node_id: str) -> list:
        import ray

        if self.ref is None:
            t0 = time.perf_counter()
            self.ref = ray.put(pack(self.path, self.expected))
            self.pack_s = time.perf_counter() - t0
        self.requests.append(node_id)
        return [self.ref]  # in a list: Ray hands back the ref itself, not its value

    def report(self) -> dict:
        return {"nodes": list(self.requests), "pack_put_s": self.pack_s}


# ---- on the node that needs the model ------------------------------------------------------------------------------
def node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return "local"


def cache_root() -> pathlib.Path:
    """This node's model cache: under the Ray session dir (removed with the cluster), else the temp dir."""
    base = pathlib.Path(tempfile.gettempdir())
    try:
        import ray

        if ray.is_initialized():
            base = pathlib.Path(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - no session dir to use
        pass
    return base / "rl4vlm-models"


@contextlib.contextmanager
def _node_lock(directory: pathlib.Path):
    """An exclusive lock over this node's cache dir and hash memo (one holder per node at a time)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        memo_file = directory / "hashes.json"
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):  # none yet (or unreadable: hashing again is always right)
            memo = {}
        before = dict(memo)
        try:
            yield memo
        finally:
            if memo != before:
                (directory / "hashes.json.tmp").write_text(json.dumps(memo))
                os.replace(directory / "hashes.json.tmp", memo_file)


def describe(path: str | os.PathLike) -> dict:
    """`manifest` on the driver, sharing the node's hash memo (an unchanged checkpoint is not read again)."""
    with _node_lock(cache_root() / node_id()[:16]) as memo:
        return manifest(path, memo)


def ensure_local(path: str, files: ModelFiles | None = None, root: pathlib.Path | None = None) -> str:
    """A path on this node that holds the checkpoint described by `files` (see the module docstring).

    Without `files` (an actor built directly, a test) `path` is returned as given."""
    if files is None:
        return path
    t0, node = time.perf_counter(), node_id()
    directory = (root or cache_root()) / node[:16]
    expected, digest = files.manifest, files.manifest["digest"]
    with _node_lock(directory) as memo:
        if (why := mismatch(path, expected, memo)) is None:
            return _done(directory, node, path, expected, "local", t0, path)
        dest = directory / digest
        if dest.is_dir() and mismatch(dest, expected, memo) is None:
            return _done(directory, node, path, expected, "cached", t0, str(dest), why)
        if files.server is None:
            raise ModelFilesError(
                f"node {node[:8]} cannot read the model checkpoint {path} ({why}) and nothing can ship it: "
                "put it on storage every node mounts, or start the run through cluster/launch.py (which ships it)"
            )
        packed = fetch(files.server, node)
        fetched = time.perf_counter() - t0
        shutil.rmtree(dest, ignore_errors=True)  # a copy that failed its check
        unpack(packed, expected, dest, memo)
        return _done(directory, node, path, expected, "shipped", t0, str(dest), why, fetched)


def fetch(server, node: str) -> dict[str, np.ndarray]:
    """The packed files from the server's object-store copy (pulled to this node once; zero-copy arrays)."""
    import ray

    return ray.get(ray.get(server.packed.remote(node))[0])


def _done(directory, node, path, expected, action, t0, result, why=None, fetched: float | None = None) -> str:
    seconds = time.perf_counter() - t0
    event = {"time": time.time(), "node": node, "pid": os.getpid(), "path": path, "digest": expected["digest"]}
    event |= {"action": action, "reason": why, "seconds": round(seconds, 3), "bytes": expected["bytes"]}
    event |= {"fetch_s": None if fetched is None else round(fetched, 3), "result": result}
    with open(directory / "events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")
    size = f"{len(expected['files'])} files, {expected['bytes'] / 1e6:.1f} MB"
    how = {
        "local": f"reads {path} (matches the driver's manifest)",
        "cached": f"lacks {path} ({why}): using its verified copy {result}",
        "shipped": f"lacks {path} ({why}): received it through the object store in {fetched or 0:.2f} s, blake2b "
        f"verified, into {result}",
    }[action]
    print(f"model files on node {node[:8]}: {how}; {size}, {seconds:.2f} s", flush=True)
    return result
