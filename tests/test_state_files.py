"""learner/state_files.py: nested state <-> safetensors + JSON, and one clear error for every bad checkpoint."""

from __future__ import annotations

import enum
import json

import pytest
import torch

from learner.state_files import (
    FORMAT_VERSION,
    CheckpointError,
    check_compatible,
    flatten,
    load_state,
    resolve,
    save_state,
    unflatten,
    write_state_json,
)


class Stage(int, enum.Enum):  # DeepSpeed keeps enum members like this in its optimizer state
    TWO = 2


def optimizer_like_state():
    return {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}, 1: {"exp_avg": torch.ones(2, 2)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "foreach": None, "params": [0, 1], "amsgrad": False}],
        "zero_stage": Stage.TWO,
        "ds_version": "0.19.8",
        "partition": [torch.zeros(5)],
    }


def test_flatten_round_trip_keeps_types_and_takes_opaque_parts_from_fresh():
    state = optimizer_like_state()
    tensors, skeleton = flatten(state)
    skeleton = json.loads(json.dumps(skeleton))  # the skeleton really is JSON
    rebuilt = unflatten(skeleton, tensors, fresh=optimizer_like_state())
    assert set(rebuilt["state"]) == {0, 1}  # int keys stay ints
    assert torch.equal(rebuilt["state"][0]["exp_avg"], torch.arange(4.0))
    assert rebuilt["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert rebuilt["param_groups"][0]["foreach"] is None and rebuilt["ds_version"] == "0.19.8"
    assert rebuilt["zero_stage"] is Stage.TWO  # not saved: taken from the freshly built optimizer
    assert torch.equal(rebuilt["partition"][0], torch.zeros(5))


def test_opaque_part_without_a_fresh_counterpart_is_an_error():
    tensors, skeleton = flatten({"scaler": object()})
    with pytest.raises(CheckpointError, match="object"):
        unflatten(skeleton, tensors, fresh={})


def test_save_and_load_state(tmp_path):
    save_state(tmp_path, "learner_rank0", optimizer_like_state(), extra={"updates": 7})
    state, extra = load_state(tmp_path, "learner_rank0", fresh=optimizer_like_state())
    assert extra == {"updates": 7}
    assert torch.equal(state["state"][1]["exp_avg"], torch.ones(2, 2))


@pytest.mark.parametrize("damage", ["truncate_tensors", "garbage_json", "missing_json", "missing_tensors"])
def test_damaged_state_files_give_a_checkpoint_error(tmp_path, damage):
    save_state(tmp_path, "learner_rank0", optimizer_like_state())
    tensors, meta = tmp_path / "learner_rank0.safetensors", tmp_path / "learner_rank0.json"
    if damage == "truncate_tensors":
        tensors.write_bytes(tensors.read_bytes()[:40])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "missing_json":
        meta.unlink()
    else:
        tensors.unlink()
    with pytest.raises(CheckpointError):
        load_state(tmp_path, "learner_rank0", fresh=optimizer_like_state())


def test_resolve_finds_the_newest_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    for update in (5, 10, 15):
        (run / "checkpoints" / f"update_{update:06d}").mkdir(parents=True)
    for update in (5, 10):  # update 15 has no state.json: it was cut off while being written
        write_state_json(run / "checkpoints" / f"update_{update:06d}", {"update": update})
    assert resolve(run).name == "update_000010"
    assert resolve(run / "checkpoints").name == "update_000010"
    assert resolve(run / "checkpoints" / "update_000005").name == "update_000005"
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve(tmp_path / "elsewhere")


def test_incompatible_checkpoint_names_every_mismatch():
    state = {"format_version": FORMAT_VERSION, "run": {"task": "numberline", "zero_stage": 2}}
    check_compatible(state, {"task": "numberline", "zero_stage": 2})
    with pytest.raises(CheckpointError, match="task: checkpoint 'numberline' vs run 'ezpoints'.*zero_stage"):
        check_compatible(state, {"task": "ezpoints", "zero_stage": 3})
    with pytest.raises(CheckpointError, match="format"):
        check_compatible({**state, "format_version": 99}, {"task": "numberline"})
