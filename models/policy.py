"""The trained policy: any supported VLM plus the paper's value head, and its save/load in HF format.

`PolicyWithValue` wraps the VLM with the paper's value head: an MLP on the final hidden state of the last
prompt token (spec §2.3). Policy and value share the trunk; the value head never leaves the learner.
The embedded default model is built in models/tiny_llava.py. With LoRA (models/lora.py) `vlm` is the peft
wrapper around it; a LoRA checkpoint (`save_lora_policy`) holds the adapter, value head and processor and
names its frozen base, which it does not copy.
"""

from __future__ import annotations

import json
import pathlib

import torch
from torch import nn

from models import lora
from models.families import family_of, hidden_size, load_vlm

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

    def forward(
        self,
        input_ids,
        attention_mask,
        pixel_values,
        value_index,
        detach_value: bool = False,
        logits_from: int = 0,
        **image_inputs,
    ):
        """input_ids (B, L) = prompt + response, right-padded; value_index (B,) = last prompt position.

        `image_inputs` are the family's other image inputs (models/families.py: LlavaNext `image_sizes`, Qwen
        `image_grid_thw` and `mm_token_type_ids`). Returns logits (B, L - logits_from, V) of positions
        logits_from.. (the LM head's matmul and the log-softmax skip the prompt: a PPO update needs only the
        response's) and values (B,). `detach_value` keeps value gradients out of the trunk.
        """
        keep = torch.arange(logits_from, input_ids.shape[1], device=input_ids.device) if logits_from else 0
        out = self.vlm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=keep,
            **image_inputs,
        )
        last_hidden = out.hidden_states[-1]  # (B, L, H)
        h = last_hidden[torch.arange(input_ids.shape[0]), value_index]  # (B, H)
        return out.logits, self.value_head(h.detach() if detach_value else h)


def save_policy(
    path: str | pathlib.Path,
    vlm,
    processor,
    value_head: ValueHead | None,
    extra: dict | None = None,
    state_dict: dict | None = None,
):
    """Save HF-format weights (in the layout vLLM loads), tokenizer/processor files and the value head.

    A LoRA model is saved merged, as a plain checkpoint (`state_dict` = models/lora.py `merged_state_dict`).
    """
    from safetensors.torch import load_file, save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if lora.is_lora(vlm):
        state_dict = state_dict if state_dict is not None else lora.merged_state_dict(vlm)
        vlm = vlm.get_base_model()
    vlm.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    processor.save_pretrained(path)
    family = family_of(path)
    for weights in sorted(path.glob("*.safetensors")):  # a large model is saved in shards
        state = load_file(weights)
        renamed = {family.vllm_key(k): v.contiguous() for k, v in state.items()}
        if list(renamed) != list(state):
            save_file(renamed, weights, metadata={"format": "pt"})
    index = path / "model.safetensors.index.json"
    if index.exists():  # the shard index names every key: rename there too
        data = json.loads(index.read_text())
        data["weight_map"] = {family.vllm_key(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    _save_head_and_info(path, value_head, extra)


def _save_head_and_info(path: pathlib.Path, value_head: ValueHead | None, extra: dict | None) -> None:
    from safetensors.torch import save_file

    if value_head is not None:
        (path / VALUE_HEAD_FILE).parent.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, path / VALUE_HEAD_FILE)
    if extra:
        (path / "policy_info.json").write_text(json.dumps(extra, indent=2))


def save_lora_policy(path, peft_vlm, processor, value_head: ValueHead | None, base: str, extra: dict | None = None):
    """A LoRA checkpoint: config, processor, adapter (peft format), value head, and where the base is.

    `load_policy` reads it back as the same trainable model; the base weights are not copied (a 7B base is
    ~15 GB; the run's SFT checkpoint stays where it is and is checked by its files' sizes).
    """
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    peft_vlm.get_base_model().config.save_pretrained(path)
    processor.save_pretrained(path)
    lora.save_adapter_checkpoint(path, peft_vlm, base)
    _save_head_and_info(path, value_head, extra)


def load_policy(path: str | pathlib.Path, with_value_head: bool = True, dtype: torch.dtype = torch.float32):
    """Load (vlm, processor, value_head) from a directory written by `save_policy` or `save_lora_policy` (vlm
    is then the base with its trainable adapter) or any HF checkpoint of a supported family (models/families.py).

    A missing value head (e.g. a hub checkpoint) gets a fresh one; a broken file raises a clear error.
    """
    from safetensors.torch import load_file
    from transformers import AutoProcessor

    path = pathlib.Path(path)
    family_of(path)  # missing or unsupported: its own clear error, not wrapped below
    try:
        vlm = load_vlm(_checked_base(path), dtype)
        if lora.is_lora_checkpoint(path):
            vlm = lora.load_adapter_checkpoint(vlm, path)
        processor = AutoProcessor.from_pretrained(path)
        value_head = None
        if with_value_head:
            value_head = ValueHead(hidden_size(vlm)).to(dtype)
            vh_file = path / VALUE_HEAD_FILE
            if vh_file.exists():
                value_head.load_state_dict(load_file(vh_file))
    except Exception as e:  # corrupt or incompatible files: one clear message, not a deep stack
        raise RuntimeError(f"cannot load policy checkpoint {path}: {type(e).__name__}: {e}") from e
    return vlm, processor, value_head


def _checked_base(path: pathlib.Path) -> str:
    """The weights folder of `path` (a LoRA checkpoint's base), after checking a LoRA base is the one it had."""
    base = lora.base_path(path)
    if base != str(path):
        expected = json.loads((path / lora.BASE_FILE).read_text()).get("weight_files")
        if expected is not None and lora.weight_files(base) != expected:
            raise FileNotFoundError(f"the base {base} of LoRA checkpoint {path} is missing or has changed")
    return base
