"""The embedded default VLM: a tiny LLaVA (CLIP vision tower + Llama text model) built offline from a config.

It is a standard `LlavaForConditionalGeneration` with a byte-level BPE tokenizer trained on the tasks' own
strings (models/tokenizer.py). Nothing is downloaded; it is saved in HF format (models/policy.py) that
transformers and vLLM both load.
"""

from __future__ import annotations

import torch

from contracts.config import TinyVLMShape
from models.tokenizer import IMAGE_TOKEN


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
