"""Weight sync, learner -> rollout actors: the whole path of a weight push, in the order it runs.

1. Export (learner rank 0, `LearnerWorker.export_weights`): `export_arrays(vlm)` copies every parameter out
   as a float32 numpy array under its vLLM name (the family's `vllm_key`, models/families.py; under ZeRO-3
   the learner gathers the full weights around this call), and `WeightsPayload.build` adds the checksum.
2. Transport (driver, `cluster/launch.py` `push_weights` and `RolloutPool.push`): the payload stays in Ray's
   object store; the driver hands its object ref to every actor (it never holds the weights itself). Each
   actor loads it behind its running `collect`, and new or replacement actors load the latest one first.
3. Receive (`RolloutActor.load_weights`): `receive(payload)` verifies the checksum (a corrupt payload raises
   before anything is loaded) and views the arrays as named torch tensors, without a copy.
4. Apply (the engine's `load_weights`): `load_into_vllm` reloads vLLM in place and drops its caches;
   `load_into_hf` checks that the names match the model exactly, then copies.

Metrics: `timing/weight_push_s` (driver: export until the payload is ready, and the loads queued) and
`timing/weight_load_s` (actor: verify + apply).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from models.families import family_of_model

NamedTensors = list[tuple[str, torch.Tensor]]


@dataclass
class WeightsPayload:
    version: int
    """The policy version the actor tags its later samples with."""
    names: list[str]
    """vLLM parameter names, in the order of `arrays`."""
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


def weights_checksum(names: list[str], arrays: list[np.ndarray]) -> str:
    """blake2b over names, shapes, dtypes and raw bytes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for name, arr in zip(names, arrays, strict=True):
        h.update(f"{name}|{arr.shape}|{arr.dtype}".encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return h.hexdigest()


# ---- learner side ----------------------------------------------------------------------------------------------
def export_arrays(vlm: torch.nn.Module) -> list[tuple[str, np.ndarray]]:
    """(vLLM name, float32 host copy) of every parameter: copies, because the learner keeps training them."""
    rename = family_of_model(vlm).vllm_key
    return [(rename(n), p.detach().cpu().float().numpy().copy()) for n, p in vlm.named_parameters()]


# ---- rollout side ----------------------------------------------------------------------------------------------
def receive(payload: WeightsPayload) -> NamedTensors:
    """Verify the checksum, then the arrays as (vLLM name, tensor) pairs sharing their memory."""
    payload.verify()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arrays from the object store are read-only views; the engines copy
        return [(n, torch.from_numpy(a)) for n, a in zip(payload.names, payload.arrays, strict=True)]


def load_into_vllm(llm, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """In-place reload of a running `vllm.LLM`, no restart (the CPU backend repacks the weights inside)."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named)})
    # Cached prefixes and encoder outputs belong to the old weights (a stale encoder cache kills the engine).
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()


def load_into_hf(vlm: torch.nn.Module, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy into a transformers model (names back to HF's with the family's `hf_key`); all or nothing."""
    hf_key = family_of_model(vlm).hf_key
    state = {hf_key(k): v for k, v in named}
    own = dict(vlm.named_parameters())
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:  # checked before copying anything: a bad payload must not half-load
        raise ValueError(f"weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
