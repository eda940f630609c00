"""contracts/schema.py: StepRecord <-> Arrow roundtrip (the schema derived from its annotations), lossless PNG.

The weights payload is models/weight_sync.py (tests/test_weight_sync.py)."""

from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts.schema import STEP_SCHEMA, StepRecord, decode_png, encode_png, from_table, to_record_batch

# The Arrow types the rows have always had (spilled Parquet and checkpointed replay files hold them).
WIRE_TYPES = {
    "episode_id": pa.string(),
    "step": pa.int32(),
    "actor_id": pa.int32(),
    "env_index": pa.int32(),
    "seed": pa.int64(),
    "policy_version": pa.int64(),
    "prompt_ids": pa.list_(pa.int32()),
    "image_png": pa.binary(),
    "response_ids": pa.list_(pa.int32()),
    "behaviour_logprobs": pa.list_(pa.float32()),
    "response_text": pa.string(),
    "action": pa.int32(),
    "action_valid": pa.bool_(),
    "parse_status": pa.string(),
    "reward": pa.float32(),
    "terminated": pa.bool_(),
    "truncated": pa.bool_(),
}


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


def test_derived_schema_keeps_the_wire_types_through_ipc_and_parquet(tmp_path):
    """The schema derived from StepRecord's annotations is the wire schema, field for field, and a batch
    written as Arrow IPC (checkpoints) and Parquet (the store's spill) reads back with it, the same records and
    the Python types the annotations name."""
    assert STEP_SCHEMA.names == [f.name for f in dataclasses.fields(StepRecord)] == list(WIRE_TYPES)
    assert [(f.name, f.type) for f in STEP_SCHEMA] == list(WIRE_TYPES.items())
    batch = to_record_batch(make_steps())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    pq.write_table(pa.Table.from_batches([batch]), tmp_path / "steps.parquet")
    hints = typing.get_type_hints(StepRecord)  # Annotated stripped: the Python type of each field
    for table in (pa.ipc.open_file(sink.getvalue()).read_all(), pq.read_table(tmp_path / "steps.parquet")):
        assert table.schema.equals(STEP_SCHEMA)
        records = from_table(table)
        assert records == from_table(batch)
        for record in records:
            for name, hint in hints.items():
                assert isinstance(getattr(record, name), typing.get_origin(hint) or hint), name


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
