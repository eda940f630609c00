"""models/weight_sync.py without an engine: payload checksum, export under vLLM names, receive, and the two
engine-side loads (vLLM's in-place reload on a recording fake; the HF copy on a small module).

The real engines: tests/test_engines.py (vLLM reload in place), tests/test_rollout_actor.py (HF, through
RolloutActor.load_weights), tests/test_system.py (learner -> vLLM actor through Ray)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from models.weight_sync import (
    WeightsPayload,
    export_arrays,
    load_into_hf,
    load_into_vllm,
    receive,
    weights_checksum,
)


def named_arrays():
    rng = np.random.default_rng(2)
    return [
        ("model.a.weight", rng.standard_normal((4, 3)).astype(np.float32)),
        ("model.a.bias", rng.standard_normal(3).astype(np.float32)),
        ("lm_head.weight", np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2]),  # non-contiguous input
    ]


def test_weights_payload_build_and_verify():
    payload = WeightsPayload.build(7, named_arrays())
    assert payload.version == 7
    assert payload.names == ["model.a.weight", "model.a.bias", "lm_head.weight"]
    assert all(a.flags["C_CONTIGUOUS"] for a in payload.arrays)
    payload.verify()  # no exception
    assert WeightsPayload.build(7, named_arrays()).checksum == payload.checksum  # deterministic
    assert payload.checksum == weights_checksum(payload.names, payload.arrays)


def test_weights_payload_detects_changed_element():
    payload = WeightsPayload.build(1, named_arrays())
    payload.arrays[1] = payload.arrays[1].copy()
    payload.arrays[1][2] += 1e-3
    with pytest.raises(ValueError, match="checksum"):
        payload.verify()


def test_weights_payload_detects_changed_name_and_shape():
    payload = WeightsPayload.build(1, named_arrays())
    payload.names[0] = "model.b.weight"
    with pytest.raises(ValueError, match="checksum"):
        payload.verify()
    payload = WeightsPayload.build(1, named_arrays())
    payload.arrays[0] = payload.arrays[0].reshape(3, 4)  # same bytes, other shape
    with pytest.raises(ValueError, match="checksum"):
        payload.verify()


class TinyVLM(nn.Module):
    """Parameter names like the LLaVA model's: a CLIP tower (renamed for vLLM) and a language model."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.vision_tower = nn.Linear(3, 2)
        self.model.language_model = nn.Linear(2, 2, bias=False)
        self.config = SimpleNamespace(model_type="llava")  # the family is read from the model's config


def test_export_copies_float32_under_vllm_names():
    vlm = TinyVLM()
    named = dict(export_arrays(vlm))
    assert set(named) == {
        "model.vision_tower.vision_model.weight",
        "model.vision_tower.vision_model.bias",
        "model.language_model.weight",
    }
    assert all(a.dtype == np.float32 for a in named.values())
    before = named["model.language_model.weight"].copy()
    with torch.no_grad():
        vlm.model.language_model.weight.add_(1.0)  # the learner trains on: the exported copy must not move
    np.testing.assert_array_equal(named["model.language_model.weight"], before)


def test_receive_verifies_then_shares_the_arrays():
    payload = WeightsPayload.build(3, export_arrays(TinyVLM()))
    for array in payload.arrays:
        array.flags.writeable = False  # as they arrive from Ray's object store
    named = receive(payload)
    assert [n for n, _ in named] == payload.names
    assert all(np.shares_memory(t.numpy(), a) for (_, t), a in zip(named, payload.arrays))
    payload.arrays[0] = payload.arrays[0] + 1.0
    with pytest.raises(ValueError, match="checksum"):
        receive(payload)


def test_hf_load_round_trips_and_refuses_a_payload_that_does_not_fit():
    source, target = TinyVLM(), TinyVLM()
    load_into_hf(target, receive(WeightsPayload.build(1, export_arrays(source))))
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        assert torch.equal(a, b), name
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    changed = [(n, a + 1.0) for n, a in export_arrays(source)]
    for bad in (changed[1:], [*changed, ("model.extra.weight", np.zeros(1, np.float32))]):
        with pytest.raises(ValueError, match="do not fit"):
            load_into_hf(target, receive(WeightsPayload.build(2, bad)))
        assert all(torch.equal(before[n], p) for n, p in target.named_parameters())  # nothing half-loaded


class RecordingLLM:
    """What load_into_vllm calls on `vllm.LLM`, in order."""

    def __init__(self):
        self.calls = []
        self.llm_engine = self

    def collective_rpc(self, method, kwargs):
        self.calls.append((method, [n for n, _ in kwargs["weights_iterator"]]))

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def reset_encoder_cache(self):
        self.calls.append("reset_encoder_cache")


def test_vllm_load_reloads_in_place_then_drops_both_caches():
    llm = RecordingLLM()
    named = receive(WeightsPayload.build(1, export_arrays(TinyVLM())))
    load_into_vllm(llm, named)
    assert llm.calls == [("reload_weights", [n for n, _ in named]), "reset_prefix_cache", "reset_encoder_cache"]
