"""The models the benchmarks run: the project's default policy and a ~100M-parameter variant built from a config.

The variant keeps the default's tokenizer, image processor and image size (so prompts and frames are the same
token for token) and scales the Llama text model and the CLIP tower up. It is random-initialised: its answers
are not valid actions, but its speed is what the benchmarks measure. Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import pathlib

from contracts.config import TinyVLMShape

BIG_SHAPE = TinyVLMShape(
    text_hidden=768,
    text_layers=12,
    text_heads=12,  # head_dim 64: one of vLLM's CPU attention sizes
    text_intermediate=2560,
    vision_hidden=384,
    vision_layers=4,
    vision_heads=6,
)
"""~100M parameters (GPT-2-small-like text model): the default's image size, patch size and vocabulary."""


def count_parameters(model_path: str | pathlib.Path) -> int:
    """Parameters stored in a checkpoint's safetensors files (value head excluded), read from their headers."""
    from safetensors import safe_open

    total = 0
    for file in sorted(pathlib.Path(model_path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                total += math.prod(f.get_slice(key).get_shape())
    return total


def build_variant(base_path: str, out_path: str | pathlib.Path, shape: TinyVLMShape = BIG_SHAPE, seed: int = 0) -> str:
    """A random-init LLaVA of `shape` with `base_path`'s tokenizer and processor, saved once (reused after)."""
    from transformers import AutoProcessor

    from models.policy import ValueHead, save_policy
    from models.tiny_llava import build_tiny_llava

    out = pathlib.Path(out_path)
    stamp = out / "bench_variant.json"
    wanted = {"base": str(pathlib.Path(base_path).resolve()), "shape": vars(shape), "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return str(out)
    processor = AutoProcessor.from_pretrained(base_path)
    model = build_tiny_llava(processor.tokenizer, shape, seed=seed)
    save_policy(out, model, processor, ValueHead(shape.text_hidden))
    stamp.write_text(json.dumps(wanted, indent=2))
    return str(out)
