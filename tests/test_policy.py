"""models/policy.py: tokenizer, tiny LLaVA save/load (vLLM layout), key renames, policy+value forward."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from contracts.config import TinyVLMShape
from envs.experts import numberline_response
from envs.prompts import chat_prompt, task_prompt
from learner.sft import tokenizer_corpus
from models.families import FAMILIES
from models.policy import VALUE_HEAD_FILE, PolicyWithValue, ValueHead, load_policy, save_policy
from models.tiny_llava import build_processor, build_tiny_llava
from models.tokenizer import EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN, build_tokenizer

SHAPE = TinyVLMShape()

vllm_key, hf_key = FAMILIES["llava"].vllm_key, FAMILIES["llava"].hf_key


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(tokenizer_corpus("numberline"), SHAPE.vocab_size)


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    vlm = build_tiny_llava(tokenizer, SHAPE, seed=0)
    torch.manual_seed(1)
    head = ValueHead(SHAPE.text_hidden)
    save_policy(path, vlm, build_processor(tokenizer, SHAPE), head, {"note": "test"})
    return path, vlm, head


def texts():
    out = [chat_prompt(task_prompt("numberline", {}, cot)) for cot in (True, False)]
    out += [numberline_response({"current": c, "target": t}, a, True) for c, t, a in [(0, 5, 1), (4, 2, 0)]]
    return out + [numberline_response({"current": 3, "target": 1}, 0, False)]


def test_tokenizer_is_lossless(tokenizer):
    for s in texts():
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == s


def test_digits_are_single_tokens(tokenizer):
    digit_ids = set()
    for d in "0123456789":
        ids = tokenizer(d, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, d
        digit_ids.add(ids[0])
        assert ids[0] in tokenizer(f"x{d}{d}5", add_special_tokens=False)["input_ids"]
    assert len(digit_ids) == 10
    assert len(tokenizer("12345", add_special_tokens=False)["input_ids"]) == 5


def test_special_tokens_have_ids(tokenizer):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, PAD_TOKEN, EOS_TOKEN)}
    assert len(set(ids.values())) == 3
    assert all(i is not None and i != tokenizer.unk_token_id for i in ids.values())
    assert tokenizer.pad_token_id == ids[PAD_TOKEN] and tokenizer.eos_token_id == ids[EOS_TOKEN]
    assert tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"] == [ids[IMAGE_TOKEN]]
    assert len(tokenizer) <= SHAPE.vocab_size


def test_saved_layout_is_vllm_style(saved):
    path, _, _ = saved
    keys = list(load_file(path / "model.safetensors"))
    vision = [k for k in keys if "vision_tower." in k]
    assert vision and all("vision_tower.vision_model." in k for k in vision)
    assert [p.name for p in path.glob("*.safetensors")] == ["model.safetensors"]
    assert (path / VALUE_HEAD_FILE).is_file()
    assert json.loads((path / "policy_info.json").read_text()) == {"note": "test"}
    assert (path / "config.json").is_file()


def test_load_policy_roundtrip(saved):
    path, vlm, head = saved
    vlm2, processor, head2 = load_policy(path)
    sd1, sd2 = vlm.state_dict(), vlm2.state_dict()
    assert set(sd1) == set(sd2)
    names = [
        "model.vision_tower.embeddings.patch_embedding.weight",
        "model.language_model.embed_tokens.weight",
        "model.multi_modal_projector.linear_1.weight",
        "lm_head.weight",
    ]
    for n in names:
        assert torch.equal(sd1[n], sd2[n]), n
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    for k, v in head.state_dict().items():
        assert torch.equal(v, head2.state_dict()[k]), k
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == vlm2.config.image_token_id
    _, _, none_head = load_policy(path, with_value_head=False)
    assert none_head is None


def test_load_policy_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "nope")


def test_load_policy_corrupt_weights(saved, tmp_path):
    src, _, _ = saved
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x13garbage, not safetensors" * 8)
    with pytest.raises(RuntimeError, match="cannot load policy checkpoint") as err:
        load_policy(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    "hf, vllm",
    [
        (
            "model.vision_tower.embeddings.patch_embedding.weight",
            "model.vision_tower.vision_model.embeddings.patch_embedding.weight",
        ),
        ("vision_tower.encoder.layers.0.mlp.fc1.bias", "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"),
        (
            "model.language_model.layers.0.self_attn.q_proj.weight",
            "model.language_model.layers.0.self_attn.q_proj.weight",
        ),
        ("lm_head.weight", "lm_head.weight"),
    ],
)
def test_vllm_key_and_hf_key_are_inverse(hf, vllm):
    assert vllm_key(hf) == vllm
    assert hf_key(vllm) == hf
    assert vllm_key(vllm) == vllm  # already renamed: unchanged


def test_policy_with_value_forward(tokenizer):
    torch.manual_seed(0)
    vlm = build_tiny_llava(tokenizer, SHAPE, seed=0)
    model = PolicyWithValue(vlm, ValueHead(SHAPE.text_hidden)).eval()
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    B, n_img = 2, SHAPE.image_tokens
    assert n_img == 64
    text = tokenizer(" ASSISTANT: {", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[5, 6] + [image_id] * n_img + text] * B)
    L = ids.shape[1]
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    ids[1, -2:] = tokenizer.pad_token_id
    pixel_values = torch.randn(B, 3, SHAPE.image_size, SHAPE.image_size)
    with torch.no_grad():
        logits, values = model(ids, mask, pixel_values, torch.tensor([L - 1, L - 3]))
    assert logits.shape == (B, L, len(tokenizer))
    assert values.shape == (B,)
    assert torch.isfinite(logits).all() and torch.isfinite(values).all()
    with torch.no_grad():  # the value is read at value_index of the last hidden layer
        out = vlm(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, output_hidden_states=True)
        h = out.hidden_states[-1][torch.arange(B), torch.tensor([L - 1, L - 3])]
        torch.testing.assert_close(values, model.value_head(h))
        torch.testing.assert_close(logits, out.logits)
    # the image matters: another frame changes the text logits after it
    with torch.no_grad():
        logits2, _ = model(ids, mask, torch.randn(B, 3, SHAPE.image_size, SHAPE.image_size), torch.tensor([L - 1, 1]))
    assert not torch.allclose(logits[:, -1], logits2[:, -1])
