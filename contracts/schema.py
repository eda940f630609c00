"""The one typed schema for the step rows that cross actor boundaries.

- `StepRecord`: one env step as the rollout actor saw it; a list of them travels as an Arrow record batch
  (`STEP_SCHEMA`, derived from StepRecord's annotations) from rollout actors to the replay store and from the
  store to learner ranks.
- Weights travel as `models.weight_sync.WeightsPayload` (numpy arrays through Ray's object store, with a
  checksum the receiver verifies); models/weight_sync.py tells that path from export to the engine's reload.
- Metrics travel as `dict[str, float]` with prefixes `rollout/`, `learner/`, `replay/`, `timing/`, `eval/`.
"""

from __future__ import annotations

import io
import typing
from dataclasses import dataclass, fields
from typing import Annotated

import numpy as np
import pyarrow as pa
from PIL import Image

# Python types alone do not say how wide a column is: these carry the Arrow type into the annotation.
Int32 = Annotated[int, pa.int32()]
Int64 = Annotated[int, pa.int64()]
Float32 = Annotated[float, pa.float32()]
Int32List = Annotated[list[int], pa.list_(pa.int32())]
Float32List = Annotated[list[float], pa.list_(pa.float32())]
_ARROW = {str: pa.string(), bytes: pa.binary(), bool: pa.bool_()}
"""The Arrow type of the plain annotations (no width to choose)."""


@dataclass
class StepRecord:
    episode_id: str
    """Unique in a run: "<actor>-<env>-<episode counter>", the actor as "<id>r<k>" for its k-th replacement."""
    step: Int32
    """Index of this step inside its episode (0-based)."""
    actor_id: Int32
    env_index: Int32
    seed: Int64
    """Seed the episode was reset with (held-out seeds never appear in training; contracts/seeds.py)."""
    policy_version: Int64
    """Version of the weights that generated the response."""
    prompt_ids: Int32List
    """Exact prompt token ids the engine ran, image placeholders expanded."""
    image_png: bytes
    """The observation image (lossless PNG, HxWx3 uint8)."""
    response_ids: Int32List
    """Sampled response token ids (EOS included when produced)."""
    behaviour_logprobs: Float32List
    """Per response token: log softmax(logits / T), the engine's processed log-prob of the sampled token."""
    response_text: str
    action: Int32
    """Env action that was executed (random when the text was invalid)."""
    action_valid: bool
    parse_status: str
    """"ok", "no_match", "ambiguous" or "not_text"."""
    reward: Float32
    terminated: bool
    truncated: bool


def _arrow_type(hint) -> pa.DataType:
    if typing.get_origin(hint) is Annotated:
        return typing.get_args(hint)[1]
    return _ARROW[hint]


def _schema_of(cls) -> pa.Schema:
    hints = typing.get_type_hints(cls, include_extras=True)  # the annotations are strings (future import)
    return pa.schema([(f.name, _arrow_type(hints[f.name])) for f in fields(cls)])


STEP_SCHEMA = _schema_of(StepRecord)


def to_record_batch(steps: list[StepRecord]) -> pa.RecordBatch:
    columns = {name: [getattr(s, name) for s in steps] for name in STEP_SCHEMA.names}
    return pa.RecordBatch.from_pydict(columns, schema=STEP_SCHEMA)


def from_table(table: pa.Table | pa.RecordBatch) -> list[StepRecord]:
    return [StepRecord(**row) for row in table.to_pylist()]


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
