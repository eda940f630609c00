"""Tiny random checkpoints of the real VLM families, in the hub's layout, for offline tests and benchmarks.

    python -m models.tiny_families llava_next /tmp/tiny-llava-next      # or llava, qwen2_vl, qwen2_5_vl

Each checkpoint is built from the family's transformers config classes with its own tokenizer (byte-level BPE
trained on the tasks' strings plus the family's special tokens), its own processor and chat template, and is
saved the way the hub stores it (llava-hf CLIP towers under `vision_tower.vision_model.*`). Nothing is
downloaded. The sizes are tiny but every architectural part is there: LlavaNext's anyres tiling with
`image_grid_pinpoints` and unpadding, Qwen's windowed vision tower, 2x2 patch merger and M-RoPE.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch

from models.families import FAMILIES as FAMILIES_BY_TYPE

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl")

# The hub templates' shape, reduced to what the tasks need: one user turn of [image, text], then the answer.
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    " [/INST]{% else %} {{ m['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _tokenizer(family: str, vocab_size: int = 1024):
    """Byte-level BPE on the tasks' strings with the family's special tokens (ids are the family's own order)."""
    from transformers import PreTrainedTokenizerFast

    from envs.experts import numberline_corpus
    from models.tokenizer import train_bpe

    qwen = family.startswith("qwen")
    specials = QWEN_SPECIALS if qwen else ["<unk>", "<s>", "</s>", "<image>", "<pad>", "[INST]", "[/INST]"]
    tok = train_bpe(numberline_corpus(), vocab_size, specials)
    if qwen:
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="<|endoftext|>",
            eos_token="<|im_end|>",
            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
            model_max_length=4096,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=4096,
    )


def _text_kwargs(tokenizer) -> dict:
    # head_dim 32: one of the sizes vLLM's CPU attention supports.
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def _clip(image_size: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=14,
        projection_dim=64,
    )


def _llava_processor_kwargs(chat_template: str) -> dict:
    """What LLaVA-1.5 and LlavaNext processors share: 14-px patches, CLIP's CLS token dropped, `<image>`."""
    return dict(
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        image_token="<image>",
        chat_template=chat_template,
    )


def _llava(tokenizer):
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    config = LlavaConfig(
        vision_config=_clip(112),
        text_config=LlamaConfig(**_text_kwargs(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=64,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112}, do_convert_rgb=True
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, **_llava_processor_kwargs(LLAVA_TEMPLATE)
    )
    return LlavaForConditionalGeneration(config), processor


def _llava_next(tokenizer):
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    pinpoints = [[112, 224], [224, 112], [224, 224]]  # llava-v1.6's 336-px grid, scaled to a 112-px tile
    config = LlavaNextConfig(
        vision_config=_clip(112),
        text_config=MistralConfig(**_text_kwargs(tokenizer), sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 112},
        crop_size={"height": 112, "width": 112},
        image_grid_pinpoints=pinpoints,
        do_convert_rgb=True,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, **_llava_processor_kwargs(MISTRAL_TEMPLATE)
    )
    return LlavaNextForConditionalGeneration(config), processor


def _qwen(tokenizer, version: str):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = {**_text_kwargs(tokenizer), "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
    text["rope_parameters"]["mrope_section"] = [4, 6, 6]  # sums to head_dim / 2 = 16
    vision = dict(depth=2, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "qwen2_5_vl":
        from transformers import (
            Qwen2_5_VLConfig as Config,
        )
        from transformers import (
            Qwen2_5_VLForConditionalGeneration as Model,
        )
        from transformers import (
            Qwen2_5_VLProcessor as Processor,
        )

        vision |= dict(intermediate_size=128, out_hidden_size=128, fullatt_block_indexes=[1], window_size=56)
    else:
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision |= dict(embed_dim=64, mlp_ratio=2, hidden_size=128)
    config = Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    pixels = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}  # a 300x300 frame becomes 196x196: 49 tokens
    image_processor = Qwen2VLImageProcessor(**pixels)
    video_processor = Qwen2VLVideoProcessor(**pixels)
    processor = Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_TEMPLATE,
    )
    return Model(config), processor


def build(family: str, path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a tiny random `family` checkpoint to `path` (fp32 weights, hub key layout)."""
    from safetensors.torch import load_file, save_file

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    tokenizer = _tokenizer(family)
    if family == "llava":
        model, processor = _llava(tokenizer)
    elif family == "llava_next":
        model, processor = _llava_next(tokenizer)
    else:
        model, processor = _qwen(tokenizer, family)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    path = pathlib.Path(path)
    model.float().save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    if family.startswith("llava"):  # the hub's CLIP layout (transformers 5.19 writes it without vision_model.)
        weights = path / "model.safetensors"
        state = load_file(weights)
        rename = FAMILIES_BY_TYPE[family].vllm_key
        save_file({rename(k): v for k, v in state.items()}, weights, metadata={"format": "pt"})
    (path / "tiny_family.json").write_text(json.dumps({"family": family, "seed": seed}))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("path")
    args = parser.parse_args()
    print(build(args.family, args.path))
