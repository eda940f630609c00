"""Weight sync, learner -> rollout actors: the whole path of a weight push, in the order it runs.

1. Export (learner rank 0, `LearnerWorker.export_weights`): full fine-tuning: `export_arrays(vlm)` copies every
   parameter out as a float32 numpy array under its vLLM name (the family's `vllm_key`, models/families.py);
   LoRA: only the adapter (models/lora.py `export_adapter`, plus the merged weights of the parts vLLM cannot
   apply). Under ZeRO-3 the learner gathers what it reads around this call. The learner scores the fixed
   `Probe` under the pushed weights, and `WeightsPayload.build` adds the checksum.
2. Transport (driver, `cluster/launch.py` `push_weights` and `RolloutPool.push`): the payload stays in Ray's
   object store; the driver hands its object ref to every actor (it never holds the weights itself). Each
   actor loads it behind its running `collect`, and new or replacement actors load the latest one first.
3. Receive (`RolloutActor.load_weights`): `receive(payload)` verifies the checksum (a corrupt payload raises
   before anything is loaded) and views the arrays as named torch tensors, without a copy.
4. Apply (the engine's `load_weights`): `load_into_vllm` reloads vLLM in place and drops its caches;
   `load_adapter_into_vllm` reloads the merged part (if any) and adds the adapter as a new LoRA; the HF engine
   copies (`load_into_hf`, names checked first) or merges the adapter itself (`load_adapter_into_hf`).
5. Verify (`check_probe`): the engine scores the probe (teacher-forced, raw log-probs) and must match the
   learner's log-probs within `PROBE_TOLERANCE`; otherwise `WeightsMismatchError`: the actor stops collecting
   and the pool replaces it (`rollout/weight_mismatches`).

Metrics: `learner/push_bytes` (bytes of the arrays that cross the wire), `timing/weight_push_s` (driver: export
until the payload is ready, and the loads queued), `timing/weight_load_s` (actor: verify + apply + probe),
`timing/weight_verify_s` and `rollout/probe_gap` (the probe alone).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from models.families import family_of_model

NamedTensors = list[tuple[str, torch.Tensor]]


PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
"""Largest |engine - learner| raw log-prob of a probe token that still counts as the same policy. fp32: both
sides agree to ~1e-6 (notes/real-vlms.md), so 1e-3 is summation order with room to spare; bf16: both round to 8
mantissa bits but run different kernels (processed gaps of ~1e-2 at T 0.2 measured, raw ones are ~5x smaller)."""


class WeightsMismatchError(ValueError):
    """The engine does not serve the pushed policy (its probe log-probs differ from the learner's)."""


@dataclass
class Probe:
    """A fixed prompt + response that the engine scores after a load, teacher-forced, in raw log-probs
    (log_softmax(logits), no temperature or token mask: what vLLM's prompt log-probs are)."""

    text: str
    """Prompt (chat template, image placeholder) and response, as one text."""
    image: np.ndarray
    """(H, W, 3) uint8."""
    token_ids: list[int]
    """The text and image tokenized by the learner's processor (the engine must run exactly these)."""
    start: int
    """First scored position (the response's first token)."""
    logprobs: list[float]
    """The learner's log p(token_i | tokens < i) for i >= start, under the pushed weights."""
    tolerance: float


@dataclass
class WeightsPayload:
    version: int
    """The policy version the actor tags its later samples with."""
    names: list[str]
    """vLLM parameter names (or, LoRA, adapter tensor names: models/lora.py), in the order of `arrays`."""
    arrays: list[np.ndarray]
    """float32 arrays (bf16 would travel as an int16 view; not needed on CPU)."""
    checksum: str
    adapter: dict | None = None
    """LoRA: the adapter's peft config (r, lora_alpha, target_modules); None = full weights."""
    merged: list[str] = field(default_factory=list)
    """LoRA: HF names of the adapted layers sent merged as weights (vLLM cannot apply their adapter)."""
    probe: Probe | None = None
    """What the receiving engine must reproduce after the load; None = not verified (hand-made payloads)."""

    @staticmethod
    def build(
        version: int,
        named: list[tuple[str, np.ndarray]],
        adapter: dict | None = None,
        merged: list[str] = (),
        probe: Probe | None = None,
    ) -> WeightsPayload:
        names = [n for n, _ in named]
        arrays = [np.ascontiguousarray(a) for _, a in named]
        checksum = weights_checksum(names, arrays, _meta(adapter, list(merged), probe))
        return WeightsPayload(version, names, arrays, checksum, adapter, list(merged), probe)

    def verify(self) -> None:
        got = weights_checksum(self.names, self.arrays, _meta(self.adapter, self.merged, self.probe))
        if got != self.checksum:
            raise ValueError(f"weights v{self.version}: checksum {got[:12]} != sender's {self.checksum[:12]}")

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: what crosses the wire (`learner/push_bytes`)."""
        return int(sum(a.nbytes for a in self.arrays))


def _meta(adapter: dict | None, merged: list[str], probe: Probe | None) -> bytes:
    """The payload's fields besides the arrays, for the checksum (empty for a plain full-weights payload)."""
    if adapter is None and not merged and probe is None:
        return b""
    probe_meta = None
    if probe is not None:
        probe_meta = [probe.text, probe.token_ids, probe.start, probe.logprobs, probe.tolerance, probe.image.shape]
    head = json.dumps([adapter, merged, probe_meta], sort_keys=True).encode()
    return head + (probe.image.tobytes() if probe is not None else b"")


def weights_checksum(names: list[str], arrays: list[np.ndarray], meta: bytes = b"") -> str:
    """blake2b over names, shapes, dtypes and raw bytes, in order (then the payload's other fields, if any)."""
    h = hashlib.blake2b(digest_size=16)
    for name, arr in zip(names, arrays, strict=True):
        h.update(f"{name}|{arr.shape}|{arr.dtype}".encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    if meta:
        h.update(meta)
    return h.hexdigest()


# ---- learner side ----------------------------------------------------------------------------------------------
def export_arrays(vlm: torch.nn.Module) -> list[tuple[str, np.ndarray]]:
    """(vLLM name, float32 host copy) of every parameter: copies, because the learner keeps training them."""
    rename = family_of_model(vlm).vllm_key
    return [(rename(n), p.detach().cpu().float().numpy().copy()) for n, p in vlm.named_parameters()]


PROBE_QUESTION = "Which number do you see, and which action do you choose?"
PROBE_RESPONSE = '{"current number": "3", "target number": "5", "thoughts": "3 < 5: add one", "action": "+"}'


def probe_inputs(processor, size: int = 300) -> tuple[str, np.ndarray, list[int], int]:
    """(text, image, token ids, first response position) of the probe, in the checkpoint's chat template.

    A fixed random image (the engine's encoder path runs too) and a task-shaped response.
    """
    from PIL import Image

    from models.families import chat_format

    image = np.random.default_rng(20240512).integers(0, 256, (size, size, 3), dtype=np.uint8)
    prompt = chat_format(processor)(PROBE_QUESTION)

    def ids(text: str) -> list[int]:
        return processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt")["input_ids"][0].tolist()

    prompt_ids, token_ids = ids(prompt), ids(prompt + PROBE_RESPONSE)
    start = next((i for i, (a, b) in enumerate(zip(prompt_ids, token_ids)) if a != b), len(prompt_ids))
    return prompt + PROBE_RESPONSE, image, token_ids, start


def check_probe(probe: Probe, token_ids: list[int], logprobs: list[float]) -> float:
    """The largest |engine - learner| raw log-prob over the probe's tokens; WeightsMismatchError past tolerance.

    `token_ids` are the ids the engine ran, `logprobs` its log p(token_i | < i) for every position i >= 1
    (index i - 1), as vLLM's prompt log-probs come.
    """
    if token_ids != probe.token_ids:
        raise WeightsMismatchError(
            f"probe: the engine ran other token ids than the learner ({len(token_ids)} vs {len(probe.token_ids)})"
        )
    served = np.array(logprobs[probe.start - 1 :], dtype=np.float64)
    gap = float(np.max(np.abs(served - np.array(probe.logprobs, dtype=np.float64))))
    if not gap <= probe.tolerance:  # NaN fails too
        raise WeightsMismatchError(
            f"probe: the engine's log-probs differ from the learner's by {gap:.3g} (tolerance {probe.tolerance:g})"
        )
    return gap


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


def load_adapter_into_vllm(llm, named: list[tuple[str, torch.Tensor]], adapter: dict, directory, lora_id: int):
    """Merged weights (if any) reloaded in place, then the adapter added as a new LoRA; returns its LoRARequest.

    A new name, id and folder per load: vLLM keys adapters and cached prefixes by them (the same id with a new
    path silently keeps the old adapter, notes/real-vlms.md). The caller removes the previous adapter. Both
    caches are dropped: a tower adapter changes encoder outputs, and merged weights change everything.
    """
    from vllm.lora.request import LoRARequest

    from models.lora import is_adapter_name, write_adapter

    weights = [(n, t) for n, t in named if not is_adapter_name(n)]
    if weights:  # vLLM removes every adapter after a reload (reset_lora_state): reload first, then add
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
    path = write_adapter(directory, named, adapter)
    request = LoRARequest(f"policy-{lora_id}", lora_id, str(path))
    llm.llm_engine.add_lora(request)
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()
    return request


def load_adapter_into_hf(vlm: torch.nn.Module, named, adapter: dict, base: dict[str, torch.Tensor]) -> None:
    """Merge an adapter push into a transformers model: W = W0 + α/r·B·A for adapted layers, merged weights
    copied. `base` keeps W0 of every adapted weight (filled on first use); all names are checked first."""
    from models.lora import adapter_deltas, is_adapter_name

    hf_key = family_of_model(vlm).hf_key
    deltas = {hf_key(n): d for n, d in adapter_deltas(named, adapter).items()}
    weights = {hf_key(n): t for n, t in named if not is_adapter_name(n)}
    own = dict(vlm.named_parameters())
    unexpected = sorted((deltas.keys() | weights.keys()) - own.keys())
    if unexpected:
        raise ValueError(f"adapter does not fit the model: unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, delta in deltas.items():
            if name not in base:
                base[name] = own[name].detach().clone()
            w0 = base[name]
            own[name].copy_(w0 + delta.to(w0.dtype))
        for name, tensor in weights.items():
            own[name].copy_(tensor)
