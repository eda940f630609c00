"""The one typed schema for everything that crosses an actor boundary.

- `StepRecord`: one env step as the rollout actor saw it; a list of them travels as an Arrow record batch
  (`STEP_SCHEMA`) from rollout actors to the replay store and from the store to learner ranks.
- `WeightsPayload`: full policy weights from learner rank 0 to every rollout actor, as numpy arrays (zero-copy
  through Ray's object store) with a checksum the receiver verifies.
- Metrics travel as `dict[str, float]` with prefixes `rollout/`, `learner/`, `replay/`, `timing/`, `eval/`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
from PIL import Image


@dataclass
class StepRecord:
    episode_id: str
    """Globally unique: "<actor>-<env>-<episode counter>"."""
    step: int
    """Index of this step inside its episode (0-based)."""
    actor_id: int
    env_index: int
    seed: int
    """Seed the episode was reset with (held-out seeds never appear in training)."""
    policy_version: int
    """Version of the weights that generated the response."""
    prompt_ids: list[int]
    """Exact prompt token ids the engine ran, image placeholders expanded."""
    image_png: bytes
    """The observation image (lossless PNG, HxWx3 uint8)."""
    response_ids: list[int]
    """Sampled response token ids (EOS included when produced)."""
    behaviour_logprobs: list[float]
    """Per response token: log softmax(logits / T), the engine's processed log-prob of the sampled token."""
    response_text: str
    action: int
    """Env action that was executed (random when the text was invalid)."""
    action_valid: bool
    parse_status: str
    """"ok", "no_match", "ambiguous" or "not_text"."""
    reward: float
    terminated: bool
    truncated: bool


STEP_SCHEMA = pa.schema(
    [
        ("episode_id", pa.string()),
        ("step", pa.int32()),
        ("actor_id", pa.int32()),
        ("env_index", pa.int32()),
        ("seed", pa.int64()),
        ("policy_version", pa.int64()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("image_png", pa.binary()),
        ("response_ids", pa.list_(pa.int32())),
        ("behaviour_logprobs", pa.list_(pa.float32())),
        ("response_text", pa.string()),
        ("action", pa.int32()),
        ("action_valid", pa.bool_()),
        ("parse_status", pa.string()),
        ("reward", pa.float32()),
        ("terminated", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)
assert [f.name for f in fields(StepRecord)] == STEP_SCHEMA.names, "StepRecord and STEP_SCHEMA must agree"


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


@dataclass
class WeightsPayload:
    version: int
    names: list[str]
    """HF parameter names, in the order of `arrays`."""
    arrays: list[np.ndarray]
    """float32 arrays (bf16 would travel as an int16 view; not needed on CPU)."""
    checksum: str

    @staticmethod
    def build(version: int, named: list[tuple[str, np.ndarray]]) -> WeightsPayload:
        names = [n for n, _ in named]
        arrays = [np.ascontiguousarray(a) for _, a in named]
        return WeightsPayload(version, names, arrays, weights_checksum(names, arrays))

    def verify(self) -> None:
        got = weights_checksum(self.names, self.arrays)
        if got != self.checksum:
            raise ValueError(f"weights v{self.version}: checksum {got[:12]} != sender's {self.checksum[:12]}")

    def summary(self) -> dict:
        """Everything but the arrays (asdict would deep-copy every weight first)."""
        return {
            "version": self.version,
            "names": list(self.names),
            "checksum": self.checksum,
            "num_bytes": int(sum(a.nbytes for a in self.arrays)),
        }


def weights_checksum(names: list[str], arrays: list[np.ndarray]) -> str:
    """blake2b over names, shapes, dtypes and raw bytes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for name, arr in zip(names, arrays, strict=True):
        h.update(f"{name}|{arr.shape}|{arr.dtype}".encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.hexdigest()
