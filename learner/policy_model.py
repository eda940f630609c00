"""The policy VLM: the embedded tiny LLaVA built offline, its tokenizer, and the value head.

The embedded default is a standard `LlavaForConditionalGeneration` (CLIP vision tower + Llama text model) made
from a config, with a byte-level BPE tokenizer trained here on the tasks' own strings. Nothing is downloaded.
It is saved in HF format (safetensors) that transformers and vLLM both load, so real checkpoints (llava-hf,
Qwen2-VL) follow the same path on GPU hosts.

`PolicyWithValue` wraps the VLM with the paper's value head: an MLP on the final hidden state of the last
prompt token (spec §2.3). Policy and value share the trunk; the value head never leaves the learner.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch
from torch import nn

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
# In a sub-folder: vLLM loads every top-level *.safetensors of a checkpoint as model weights.
VALUE_HEAD_FILE = "value_head/value_head.safetensors"


@dataclass
class TinyVLMShape:
    """Sizes of the embedded default VLM (every field a standard HF config field)."""

    vocab_size: int = 1024
    """BPE vocabulary size of the tokenizer trained on the task strings."""
    text_hidden: int = 128
    """Llama hidden size; head_dim = text_hidden / text_heads must be one vLLM's CPU attention supports (32, 64)."""
    text_layers: int = 4
    """Llama decoder layers."""
    text_heads: int = 4
    """Llama attention heads."""
    text_intermediate: int = 384
    """Llama MLP width."""
    vision_hidden: int = 128
    """CLIP vision hidden size."""
    vision_layers: int = 2
    """CLIP vision encoder layers."""
    vision_heads: int = 4
    """CLIP vision attention heads."""
    image_size: int = 112
    """Side of the square image the vision tower sees (the 300x300 env frame is resized to it)."""
    patch_size: int = 14
    """ViT patch size: (image_size / patch_size)^2 image tokens per frame."""
    max_positions: int = 1024
    """Longest sequence (prompt with image tokens + response); vLLM's max_model_len is read from it."""

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def build_tokenizer(corpus: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on `corpus` (lossless decode; one token per digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits split one by one so "10" and "24" are always made of the same digit tokens.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=4096,
    )


def build_tiny_llava(tokenizer, shape: TinyVLMShape, seed: int = 0):
    """A randomly initialised LLaVA of the given shape, wired to `tokenizer`'s special ids."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_hidden * 2,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=shape.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=shape.image_tokens,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.float().eval()


def build_processor(tokenizer, shape: TinyVLMShape, image_mean=None, image_std=None):
    """CLIP-style processor. Pass the task frames' channel statistics as mean/std: with CLIP's defaults a
    mostly-white frame gives every patch the same large embedding and the digits drown in it (a random tower
    then never learns to read; with the frames' own statistics it does within 50 steps)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    stats = {}
    if image_mean is not None:
        stats = {"image_mean": [float(x) for x in image_mean], "image_std": [float(x) for x in image_std]}
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
        do_convert_rgb=True,
        **stats,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        image_token=IMAGE_TOKEN,
    )


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
