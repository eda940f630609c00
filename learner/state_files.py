"""The files of a checkpoint, as data only: safetensors for tensors, JSON for everything else, never pickle.

What goes into a run checkpoint and when is cluster/run_checkpoints.py; this module only writes and reads the
files, and raises CheckpointError for any that is missing, corrupt or does not fit.

Layout of `runs/<run>/checkpoints/update_000010/` (written by the driver and the learner ranks together):

    model/                      HF-format policy (safetensors + config + tokenizer) and value_head/
    learner_rank0.safetensors   tensors of rank 0's optimizer state, its torch RNG state
    learner_rank0.json          the rest of rank 0's optimizer state (structure, scalars), update count, RNGs
    replay.arrow                the episodes the replay store still held (Arrow IPC)
    state.json                  policy version, counters, rollout seeds/RNGs, what the run was (written last)

`state.json` is written last and atomically, so a directory without it is an incomplete checkpoint.
A nested optimizer state (dicts, lists, tuples, tensors, scalars) is split by `flatten` into a tensor dict
and a JSON skeleton; objects that are neither (DeepSpeed keeps e.g. enum members and fragment addresses in
its state) are not saved but taken from the freshly built optimizer's own state by `unflatten`: they
describe the layout, which the resume check requires to be the same (task, ranks, ZeRO stage).
"""

from __future__ import annotations

import json
import os
import pathlib

import torch

FORMAT_VERSION = 1
_PLAIN = (int, float, bool, str, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit the run trying to resume from it."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint made with other settings (task, ranks, ZeRO stage...): an older one of the same run
    would not fit either."""


def flatten(obj, tensors: dict[str, torch.Tensor] | None = None, path: str = "s") -> tuple[dict, dict]:
    """(tensors by path, JSON skeleton) of a nested state. Dict keys may be str or int."""
    tensors = {} if tensors is None else tensors
    if torch.is_tensor(obj):
        tensors[path] = obj.detach().cpu().contiguous()
        return tensors, {"t": "tensor", "key": path}
    if type(obj) in _PLAIN:
        return tensors, {"t": "value", "v": obj}
    if isinstance(obj, dict):
        if any(type(k) not in (int, str) for k in obj):  # checked first: no tensor of it may land in the file
            return tensors, {"t": "opaque", "type": type(obj).__name__}
        items = [[k, flatten(v, tensors, f"{path}.{i}")[1]] for i, (k, v) in enumerate(obj.items())]
        return tensors, {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        kind = "list" if isinstance(obj, list) else "tuple"
        return tensors, {"t": kind, "items": [flatten(v, tensors, f"{path}.{i}")[1] for i, v in enumerate(obj)]}
    return tensors, {"t": "opaque", "type": type(obj).__name__}


def unflatten(skeleton: dict, tensors: dict[str, torch.Tensor], fresh=None):
    """Rebuild what `flatten` split; opaque parts come from `fresh` (the same state, newly built)."""
    kind = skeleton.get("t")
    if kind == "tensor":
        if skeleton["key"] not in tensors:
            raise CheckpointError(f"tensor {skeleton['key']} missing from the checkpoint")
        return tensors[skeleton["key"]]
    if kind == "value":
        return skeleton["v"]
    if kind == "dict":
        fresh_items = fresh if isinstance(fresh, dict) else {}
        return {k: unflatten(v, tensors, fresh_items.get(k)) for k, v in skeleton["items"]}
    if kind in ("list", "tuple"):
        fresh_items = list(fresh) if isinstance(fresh, (list, tuple)) else []
        items = [
            unflatten(v, tensors, fresh_items[i] if i < len(fresh_items) else None)
            for i, v in enumerate(skeleton["items"])
        ]
        return items if kind == "list" else tuple(items)
    if kind == "opaque":
        if fresh is None:
            raise CheckpointError(f"checkpoint holds a {skeleton['type']} the current optimizer does not have")
        return fresh
    raise CheckpointError(f"unknown entry in checkpoint skeleton: {skeleton!r:.80}")


def save_state(directory: pathlib.Path, stem: str, state, extra: dict | None = None) -> None:
    """`state` (nested tensors and scalars) as `<stem>.safetensors` + `<stem>.json`; `extra` goes in the JSON."""
    from safetensors.torch import save_file

    tensors, skeleton = flatten(state)
    save_file(tensors, str(directory / f"{stem}.safetensors"))
    _write_json(directory / f"{stem}.json", {"skeleton": skeleton, "extra": extra or {}})


def load_state(directory: pathlib.Path, stem: str, fresh=None) -> tuple[object, dict]:
    """(state, extra) saved by `save_state`; a clear CheckpointError for anything missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_json(directory / f"{stem}.json")
    try:
        tensors = load_file(str(directory / f"{stem}.safetensors"))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot read {directory / stem}.safetensors: {error}") from error
    if not isinstance(meta, dict) or "skeleton" not in meta:
        raise CheckpointError(f"{directory / stem}.json is not a state file")
    return unflatten(meta["skeleton"], tensors, fresh), meta.get("extra", {})


def read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} is missing (incomplete checkpoint?)") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from error


def _write_json(path: pathlib.Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def write_state_json(directory: pathlib.Path, state: dict) -> None:
    """The checkpoint's last file; its presence marks the checkpoint complete."""
    _write_json(directory / "state.json", {"format_version": FORMAT_VERSION, **state})


def complete_checkpoints(path: str | pathlib.Path) -> list[pathlib.Path]:
    """`path` itself when it is a checkpoint; else the complete ones (state.json written) of a run's `checkpoints/`
    folder or of a run folder, newest first. CheckpointError when there is none."""
    path = pathlib.Path(path)
    if (path / "state.json").exists():
        return [path]
    for folder in (path / "checkpoints", path):
        complete = sorted(p for p in folder.glob("update_*") if (p / "state.json").exists()) if folder.is_dir() else []
        if complete:
            return complete[::-1]
    raise CheckpointError(f"no complete checkpoint at {path} (expected state.json in it or in checkpoints/update_*)")


def resolve(path: str | pathlib.Path) -> pathlib.Path:
    """A checkpoint directory from itself, a run's `checkpoints/` folder or a run folder (latest complete one)."""
    return complete_checkpoints(path)[0]


def check_compatible(state: dict, expected: dict) -> None:
    """One clear error when a checkpoint does not fit the run: other format, task, ranks, ZeRO stage..."""
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {state.get('format_version')} != supported {FORMAT_VERSION}")
    wrong = {k: (state.get("run", {}).get(k), v) for k, v in expected.items() if state.get("run", {}).get(k) != v}
    if wrong:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in wrong.items())
        raise CheckpointMismatch(f"checkpoint does not fit this run ({detail}); resume with the same settings")
