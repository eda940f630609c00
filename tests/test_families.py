"""models/families.py and models/tiny_families.py: family from config.json, push names, image inputs, chat format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.families import (
    FAMILIES,
    UnsupportedModelError,
    chat_format,
    family_of,
    image_token_id,
    max_positions,
    torch_dtype,
)
from models.policy import PolicyWithValue, ValueHead, load_policy
from models.tiny_families import build


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_path(request, tmp_path_factory):
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


def test_family_comes_from_config_not_path(tmp_path):
    path = tmp_path / "llava-v1.6-mistral-looking-name"  # the original code picked the class from the path
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert family_of(path).model_type == "qwen2_5_vl"


def test_unsupported_family_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "idefics3"}))
    with pytest.raises(UnsupportedModelError, match="idefics3.*llava, llava_next, qwen2_vl, qwen2_5_vl"):
        family_of(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        family_of(tmp_path / "missing")


def test_push_names_round_trip():
    llava = FAMILIES["llava"]
    assert llava.vllm_key("model.vision_tower.encoder.layers.0.mlp.fc1.weight") == (
        "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    )
    assert llava.vllm_key("model.vision_tower.vision_model.post_layernorm.bias").count("vision_model") == 1
    name = "model.vision_tower.embeddings.patch_embedding.weight"
    assert llava.hf_key(llava.vllm_key(name)) == name
    qwen = FAMILIES["qwen2_5_vl"]
    assert qwen.vllm_key("model.visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"


def test_dtype_names():
    assert torch_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="float16"):
        torch_dtype("float16")


def test_tiny_checkpoint_loads_as_its_family(family_path):
    """Each hub-layout tiny checkpoint loads through load_policy with the right class and a value head."""
    name, path = family_path
    vlm, processor, value_head = load_policy(path)
    assert vlm.config.model_type == name
    assert type(vlm).__name__.lower().replace("_", "").startswith(name.replace("_", ""))
    assert max_positions(path) == 2048
    assert isinstance(value_head, ValueHead)
    prompt = chat_format(processor)("What is the card?")
    assert prompt.count(processor.image_token) == 1  # the engine and the processor expand it, not the template


def test_family_image_inputs_score_a_batch(family_path):
    """The learner's image inputs for a batch of two frames give the same logits as each frame alone."""
    name, path = family_path
    family = FAMILIES[name]
    vlm, processor, value_head = load_policy(path)
    model = PolicyWithValue(vlm, value_head)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)) for _ in range(2)]
    prompt = chat_format(processor)("Which action?")
    enc = processor(text=[prompt] * 2, images=images, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    token = image_token_id(vlm.config)
    inputs = family.image_inputs(processor.image_processor, images, ids, token)
    assert set(inputs) - {"mm_token_type_ids"} == set(family.image_keys)
    with torch.no_grad():
        pixel = inputs.pop("pixel_values")
        logits, values = model(ids, mask, pixel, mask.sum(-1) - 1, **inputs)
        single = family.image_inputs(processor.image_processor, images[:1], ids[:1], token)
        alone, _ = model(ids[:1], mask[:1], single.pop("pixel_values"), mask[:1].sum(-1) - 1, **single)
    assert values.shape == (2,)
    assert torch.allclose(logits[0], alone[0], atol=1e-4)
    assert not torch.allclose(logits[0, -1], logits[1, -1])  # the image matters


def test_embedded_model_keeps_the_papers_llava_v1_template(tiny_model_path):
    """The embedded checkpoint has no chat template, so its prompts (and transcripts) stay the paper's."""
    from transformers import AutoProcessor

    from envs.prompts import chat_prompt

    processor = AutoProcessor.from_pretrained(tiny_model_path)
    assert chat_format(processor) is chat_prompt
