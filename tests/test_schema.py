"""contracts/schema.py: StepRecord <-> Arrow roundtrip, lossless PNG, and the weights payload checksum."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest

from contracts.schema import (
    STEP_SCHEMA,
    StepRecord,
    WeightsPayload,
    decode_png,
    encode_png,
    from_table,
    to_record_batch,
)


def make_steps() -> list[StepRecord]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    return [
        StepRecord(
            episode_id="0-1-2",
            step=0,
            actor_id=0,
            env_index=1,
            seed=123456789012,  # needs int64
            policy_version=3,
            prompt_ids=[5, 6, 7, 3, 3],
            image_png=encode_png(img),
            response_ids=[10, 11, 2],
            behaviour_logprobs=[-0.1, -2.123456789, -1e-6],
            response_text='{"action": "+"}',
            action=1,
            action_valid=True,
            parse_status="ok",
            reward=-1.0,
            terminated=False,
            truncated=False,
        ),
        StepRecord(
            episode_id="0-1-2",
            step=1,
            actor_id=0,
            env_index=1,
            seed=123456789012,
            policy_version=4,
            prompt_ids=[5, 6],
            image_png=b"\x00\x01raw bytes\xff",
            response_ids=[],  # an empty response survives the roundtrip
            behaviour_logprobs=[],
            response_text="",
            action=0,
            action_valid=False,
            parse_status="no_match",
            reward=1.0,
            terminated=True,
            truncated=False,
        ),
    ]


def test_schema_field_names_match_steprecord():
    assert STEP_SCHEMA.names == [f.name for f in dataclasses.fields(StepRecord)]
    assert STEP_SCHEMA.field("image_png").type == pa.binary()
    assert STEP_SCHEMA.field("seed").type == pa.int64()


def test_record_batch_roundtrip_all_fields():
    steps = make_steps()
    batch = to_record_batch(steps)
    assert isinstance(batch, pa.RecordBatch)
    assert batch.num_rows == 2 and batch.schema == STEP_SCHEMA
    for back in (from_table(batch), from_table(pa.Table.from_batches([batch]))):
        assert len(back) == len(steps)
        for got, want in zip(back, steps):
            for f in dataclasses.fields(StepRecord):
                g, w = getattr(got, f.name), getattr(want, f.name)
                if f.name == "behaviour_logprobs":
                    assert len(g) == len(w)
                    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(g, w))
                elif f.name == "reward":
                    assert math.isclose(g, w, rel_tol=1e-6)
                else:
                    assert g == w, f.name
                    assert type(g) is type(w), f.name
    assert from_table(batch)[0].image_png == steps[0].image_png


def test_record_batch_rejects_out_of_range_int32():
    step = make_steps()[0]
    step.step = 2**40  # int32 column
    with pytest.raises((pa.ArrowInvalid, OverflowError)):
        to_record_batch([step])


def test_png_lossless_random_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(decode_png(data))
    assert back.dtype == np.uint8 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


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


def test_weights_payload_summary():
    payload = WeightsPayload.build(2, named_arrays())
    s = payload.summary()
    assert "arrays" not in s
    assert s["num_bytes"] == (12 + 3 + 4) * 4
    assert s["version"] == 2 and s["names"] == payload.names and s["checksum"] == payload.checksum
    assert len(payload.arrays) == 3  # summary does not strip the payload itself
