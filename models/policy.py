"""The trained policy: any supported VLM plus the paper's value head, and its save/load in HF format.

`PolicyWithValue` wraps the VLM with the paper's value head: an MLP on the final hidden state of the last
prompt token (spec §2.3). Policy and value share the trunk; the value head never leaves the learner.
The embedded default model is built in models/tiny_llava.py.
"""

from __future__ import annotations

import json
import pathlib

import torch
from torch import nn

# In a sub-folder: vLLM loads every top-level *.safetensors of a checkpoint as model weights.
VALUE_HEAD_FILE = "value_head/value_head.safetensors"


class ValueHead(nn.Module):
    """MLP hidden -> 1, read at the last prompt token (spec §2.3: 4096→1024→512→1 scaled to our width)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B,)
        return self.net(h).squeeze(-1)


class PolicyWithValue(nn.Module):
    """The trained module: the VLM plus its value head, one forward for log-probs and values."""

    def __init__(self, vlm: nn.Module, value_head: ValueHead):
        super().__init__()
        self.vlm = vlm
        self.value_head = value_head

    def forward(self, input_ids, attention_mask, pixel_values, value_index, detach_value: bool = False):
        """input_ids (B, L) = prompt + response, right-padded; value_index (B,) = last prompt position.

        Returns logits (B, L, V) and values (B,). `detach_value` keeps value gradients out of the trunk.
        """
        out = self.vlm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            output_hidden_states=True,
            use_cache=False,
        )
        last_hidden = out.hidden_states[-1]  # (B, L, H)
        h = last_hidden[torch.arange(input_ids.shape[0]), value_index]  # (B, H)
        return out.logits, self.value_head(h.detach() if detach_value else h)


def vllm_key(name: str) -> str:
    """HF name -> the name vLLM 0.32's Llava loader expects (CLIP tower keys need `vision_model.`)."""
    head, sep, tail = name.partition("vision_tower.")
    if sep and not tail.startswith("vision_model."):
        return f"{head}vision_tower.vision_model.{tail}"
    return name


def hf_key(name: str) -> str:
    """Inverse of `vllm_key`: the name transformers' in-memory model uses."""
    return name.replace("vision_tower.vision_model.", "vision_tower.", 1)


def save_policy(path: str | pathlib.Path, vlm, processor, value_head: ValueHead | None, extra: dict | None = None):
    """Save HF-format weights (renamed for vLLM), tokenizer/processor files and the value head."""
    from safetensors.torch import load_file, save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vlm.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    weights = path / "model.safetensors"
    state = load_file(weights)
    save_file({vllm_key(k): v.contiguous() for k, v in state.items()}, weights, metadata={"format": "pt"})
    if value_head is not None:
        (path / VALUE_HEAD_FILE).parent.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, path / VALUE_HEAD_FILE)
    if extra:
        (path / "policy_info.json").write_text(json.dumps(extra, indent=2))


def load_policy(path: str | pathlib.Path, with_value_head: bool = True):
    """Load (vlm, processor, value_head) from a directory written by `save_policy` or any HF LLaVA checkpoint.

    A missing value head (e.g. a hub checkpoint) gets a fresh one; a broken file raises a clear error.
    """
    from safetensors.torch import load_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = pathlib.Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no policy checkpoint at {path} (config.json missing)")
    try:
        vlm = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(path)
        value_head = None
        if with_value_head:
            value_head = ValueHead(vlm.config.text_config.hidden_size)
            vh_file = path / VALUE_HEAD_FILE
            if vh_file.exists():
                value_head.load_state_dict(load_file(vh_file))
    except Exception as e:  # corrupt or incompatible files: one clear message, not a deep stack
        raise RuntimeError(f"cannot load policy checkpoint {path}: {type(e).__name__}: {e}") from e
    return vlm, processor, value_head
