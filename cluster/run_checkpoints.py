"""Periodic checkpoints of a whole run and resuming from them (`--run.resume <run dir or checkpoint>`).

A checkpoint holds everything the next update depends on: model (with LoRA: the adapter, and where the frozen
base is; models/lora.py) and value head, each learner rank's
optimizer state, update count and RNG states (learner/state_files.py), the episodes the replay store still
held, every rollout actor's seed position and RNG, the policy version and the run's counters. Files are
data only (safetensors, JSON, Arrow IPC). The layout is in learner/state_files.py.

`state.json`, written last, lists every other file with its size. `load` checks a checkpoint whole before any
actor starts: each listed file present at its size, every JSON, safetensors (the value head included) and
the replay Arrow file readable. Resuming from a run folder falls back from a damaged newest checkpoint to
the newest one that passes, and says so.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time

import pyarrow as pa
import ray

from contracts.config import Config
from learner.state_files import (
    CheckpointError,
    CheckpointMismatch,
    check_compatible,
    complete_checkpoints,
    read_json,
    write_state_json,
)
from models.lora import ADAPTER_DIR, base_path, is_lora_checkpoint
from models.policy import VALUE_HEAD_FILE

REPLAY_FILE = "replay.arrow"


def fingerprint(cfg: Config) -> dict:
    """What a checkpoint must share with the run resuming from it (the optimizer layout and the task)."""
    run = {
        "task": cfg.env.task,
        "cot": cfg.env.cot,
        "learner_world_size": cfg.learner.world_size,
        "zero_stage": cfg.learner.zero_stage,
        "shape": dataclasses.asdict(cfg.model.shape),
    }
    if cfg.model.lora.rank:
        run["lora"] = dataclasses.asdict(cfg.model.lora)
    if (dtype := cfg.learner_dtype()) != "float32":  # fp32 checkpoints predate the key
        run["learner_dtype"] = dtype  # a bf16 learner's optimizer state is laid out differently
    return run


def save(system, pool, cfg: Config, run_dir: pathlib.Path, progress: dict) -> pathlib.Path:
    """Write `checkpoints/update_NNNNNN/` and prune to the newest `run.keep_checkpoints`. Returns its path."""
    t0 = time.perf_counter()
    path = run_dir / "checkpoints" / f"update_{progress['update']:06d}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    info = {"policy_version": progress["version"]}
    ray.get([l.save_checkpoint.remote(str(path), info) for l in system.learners])  # collective under ZeRO-3
    table = ray.get(system.store.export.remote())
    if table is not None:
        with pa.OSFile(str(path / REPLAY_FILE), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    handles = pool.handles()  # ask every actor at once: each answers after its running collect
    seeds = dict(zip(map(str, handles), ray.get([h.seed_state.remote() for h in handles.values()])))
    state = {
        "run": fingerprint(cfg),
        **progress,
        "pool_counters": pool.counters,
        "store_counters": ray.get(system.store.stats.remote()),
        "rollout_seeds": seeds,
        "files": file_sizes(path),
    }
    write_state_json(path, state)  # last: marks the checkpoint complete
    for old in complete_checkpoints(path.parent)[cfg.run.keep_checkpoints :]:  # newest first
        shutil.rmtree(old, ignore_errors=True)
    print(f"checkpoint {path} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return path


def load(path: str, cfg: Config) -> tuple[pathlib.Path, dict]:
    """(checkpoint dir, state) of the checkpoint to resume from, checked whole and against `cfg`. `path` is a
    checkpoint, or a run (or its checkpoints/ folder): then the newest complete checkpoint that passes every
    check, with a message for each damaged newer one. CheckpointError when none is usable."""
    candidates = complete_checkpoints(path)
    problems = []
    for directory in candidates:
        try:
            return directory, check_whole(directory, cfg)
        except CheckpointMismatch:
            raise
        except CheckpointError as error:
            if len(candidates) == 1:  # asked for this one: say which older one would do, not pick it silently
                older = [c for c in _siblings(directory) if c.name < directory.name]
                hint = f"; the previous complete checkpoint is {older[0]} (--run.resume {older[0]})" if older else ""
                raise CheckpointError(f"{error}{hint}") from error
            problems.append(str(error))
            older = candidates[candidates.index(directory) + 1 :]
            if older:
                print(f"checkpoint {directory} is damaged ({error}); falling back to {older[0]}", flush=True)
    raise CheckpointError(f"no usable checkpoint at {path}: " + "; ".join(problems))


def _siblings(directory: pathlib.Path) -> list[pathlib.Path]:
    try:
        return complete_checkpoints(directory.parent)
    except CheckpointError:
        return []


def file_sizes(directory: pathlib.Path) -> dict[str, int]:
    """Every file of a checkpoint (but state.json, which lists them) with its size in bytes."""
    files = sorted(f for f in directory.rglob("*") if f.is_file() and f.name != "state.json")
    return {str(f.relative_to(directory)): f.stat().st_size for f in files}


def check_whole(directory: pathlib.Path, cfg: Config) -> dict:
    """The checkpoint's state after checking that it fits `cfg` and every file it lists is there, of its size and
    readable (a bad file must stop the run here, before any actor starts, not in a rank)."""
    state = read_json(directory / "state.json")
    check_compatible(state, fingerprint(cfg))
    for name, size in state.get("files", {}).items():  # checkpoints before the file list: the checks below only
        file = directory / name
        if not file.is_file() or file.stat().st_size != size:
            actual = file.stat().st_size if file.is_file() else "missing"
            raise CheckpointError(f"{file} is damaged: {actual} bytes, {size} written")
        if file.suffix == ".json":
            read_json(file)
    for rank in range(cfg.learner.world_size):
        read_json(directory / f"learner_rank{rank}.json")
        _check_safetensors(directory / f"learner_rank{rank}.safetensors")
    model = directory / "model"
    if not (model / "config.json").exists():
        raise CheckpointError(f"{directory}/model is missing")
    if is_lora_checkpoint(model) != bool(cfg.model.lora.rank):
        raise CheckpointError(
            f"{model} was {'' if is_lora_checkpoint(model) else 'not '}trained with LoRA: resume "
            "with the same --model.lora.* settings"
        )
    if is_lora_checkpoint(model):  # the adapter here, the frozen weights where the run started
        _check_safetensors(model / ADAPTER_DIR / "adapter_model.safetensors")
        if not (pathlib.Path(base_path(model)) / "config.json").exists():
            raise CheckpointError(f"{model}: its LoRA base {base_path(model)} is missing")
    else:
        _check_safetensors(model / "model.safetensors")
    _check_safetensors(model / VALUE_HEAD_FILE)
    if (directory / REPLAY_FILE).exists():
        read_replay(directory / REPLAY_FILE)
    return state


def _check_safetensors(path: pathlib.Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if not list(f.keys()):
                raise CheckpointError(f"{path} holds no tensors")
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{path} is missing or corrupt: {error}") from error


def read_replay(path: pathlib.Path) -> pa.Table:
    try:
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (OSError, pa.ArrowInvalid) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from error


def restore(system, pool, directory: pathlib.Path, state: dict) -> None:
    """Optimizer/RNG state into the learners (which loaded the model from `directory`/model), replay and seeds."""
    ray.get([l.load_checkpoint.remote(str(directory)) for l in system.learners])
    replay = directory / REPLAY_FILE
    if replay.exists():
        table = read_replay(replay)
        counters = {k.removeprefix("replay/"): int(v) for k, v in state["store_counters"].items() if "depth" not in k}
        ray.get(system.store.restore.remote(table, counters))
    handles = pool.handles()
    seeds = {int(i): s for i, s in state["rollout_seeds"].items()}
    ray.get([h.restore_seed_state.remote(seeds[i]) for i, h in handles.items() if i in seeds])
    pool.counters.update(state.get("pool_counters", {}))


def run_dir_of(directory: pathlib.Path) -> pathlib.Path:
    """runs/<run>/checkpoints/update_N -> runs/<run>."""
    return directory.parent.parent
