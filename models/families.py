"""Per-family model code in one place: which VLM architectures the system runs and what each one needs.

A family is chosen from the checkpoint's `config.json` (`model_type`), never from its path. For each family
this file says: the transformers class (through `AutoModelForImageTextToText`, which maps model_type to it),
the image inputs the learner must replay so it scores a sample under exactly what vLLM ran, how HF parameter
names map to the names vLLM's loader takes in a weight push, and the chat format of prompts.

- `llava`: the embedded default and llava-hf/llava-1.5-*. Image inputs: pixel_values (B,3,H,W). Push names:
  the CLIP tower under `vision_tower.vision_model.` (llava-hf's layout, which vLLM's loader expects).
- `llava_next`: llava-hf/llava-v1.6-mistral-7b-hf, the paper's model. pixel_values (B,tiles,3,h,w) and
  image_sizes (B,2) (HF pads tiles to the batch maximum and unpads by image_sizes). Push names as llava.
- `qwen2_vl`, `qwen2_5_vl`: Qwen/Qwen2-VL-*, Qwen/Qwen2.5-VL-*. pixel_values (patches, C·T·P·P),
  image_grid_thw (B,3) and mm_token_type_ids (B,L) for M-RoPE. Push names unchanged.

Adding a family: one `Family` entry below plus its tiny checkpoint in models/tiny_families.py and a test.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _clip_tower_key(name: str) -> str:
    """HF name -> vLLM's: llava-hf stores CLIP towers under `vision_tower.vision_model.`; transformers does not."""
    head, sep, tail = name.partition("vision_tower.")
    if sep and not tail.startswith("vision_model."):
        return f"{head}vision_tower.vision_model.{tail}"
    return name


def _same(name: str) -> str:
    return name


@dataclass(frozen=True)
class Family:
    model_type: str
    image_keys: tuple[str, ...]
    """Processor outputs the model's forward takes besides input ids (the learner replays them per sample)."""
    mrope: bool = False
    """3-D M-RoPE (Qwen): the forward needs `mm_token_type_ids` (1 at image tokens) over prompt + response, or
    transformers 5.19 silently falls back to 1-D positions (log-prob gap 9e-3 against vLLM, measured)."""
    vllm_key: Callable[[str], str] = _same
    """HF parameter name -> the name vLLM's weight loader takes."""

    def hf_key(self, name: str) -> str:
        """Inverse of `vllm_key` (the name the in-memory transformers model uses)."""
        return name.replace("vision_tower.vision_model.", "vision_tower.", 1) if self.vllm_key is not _same else name

    def image_inputs(self, image_processor, images: list, input_ids: torch.Tensor, image_token_id: int) -> dict:
        """Model inputs for `images` (one per row of `input_ids` (B, L)), exactly as the processor makes them."""
        out = image_processor(images=images, return_tensors="pt")
        inputs = {k: out[k] for k in self.image_keys}
        if self.mrope:
            inputs["mm_token_type_ids"] = (input_ids == image_token_id).to(torch.int32)  # (B, L)
        return inputs


EXTRA_IMAGE_KEYS = ("image_sizes", "image_grid_thw", "mm_token_type_ids")
"""Image inputs a forward may take besides pixel_values (the learner passes those present in a batch)."""

FAMILIES = {
    "llava": Family("llava", ("pixel_values",), vllm_key=_clip_tower_key),
    "llava_next": Family("llava_next", ("pixel_values", "image_sizes"), vllm_key=_clip_tower_key),
    "qwen2_vl": Family("qwen2_vl", ("pixel_values", "image_grid_thw"), mrope=True),
    "qwen2_5_vl": Family("qwen2_5_vl", ("pixel_values", "image_grid_thw"), mrope=True),
}


class UnsupportedModelError(ValueError):
    """The checkpoint's model_type is not one of FAMILIES."""


def family_of_model(vlm) -> Family:
    """The family of a loaded transformers model."""
    return FAMILIES[vlm.config.model_type]


def read_config(path: str | pathlib.Path) -> dict:
    config = pathlib.Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path} (config.json missing)")
    return json.loads(config.read_text())


def family_of(path: str | pathlib.Path) -> Family:
    """The family of the checkpoint at `path`, from its config.json; one clear error if it is not supported."""
    model_type = read_config(path).get("model_type")
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model {path}: model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def text_config(config: dict) -> dict:
    """The language model's part of a VLM config (Qwen2-VL's older configs keep it at the top level)."""
    return config.get("text_config") or config


def max_positions(path: str | pathlib.Path) -> int:
    """Longest sequence the checkpoint's language model takes."""
    return int(text_config(read_config(path)).get("max_position_embeddings", 1024))


def image_token_id(config) -> int:
    """The id of the image placeholder token (LLaVA: image_token_index; Qwen: image_token_id)."""
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    raise UnsupportedModelError(f"{type(config).__name__} names no image token id")


def hidden_size(vlm) -> int:
    """Width of the language model's last hidden state (the value head's input)."""
    return int(vlm.config.get_text_config().hidden_size)


def load_vlm(path: str | pathlib.Path, dtype: torch.dtype = torch.float32):
    """The transformers model of the checkpoint's family (its class comes from config.json's model_type)."""
    from transformers import AutoModelForImageTextToText

    family_of(path)  # unsupported families fail here with the list of supported ones
    return AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).eval()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, not {name!r}")
    return DTYPES[name]


def chat_format(processor) -> Callable[[str], str]:
    """question -> prompt text with the image placeholder, in the checkpoint's own chat template.

    Checkpoints without a template (the embedded default) use the paper's llava_v1 template (spec §2.1).
    """
    from envs.prompts import chat_prompt

    template = getattr(processor, "chat_template", None)
    if not template:
        return chat_prompt

    def apply(question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    return apply
