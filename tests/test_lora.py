"""LoRA without Ray or vLLM (CPU, seconds): what is adapted per family, what a push sends and what it weighs,
the HF engine's merge of an adapter push, the engine-side probe check, merged export, LoRA checkpoints and the
config's rules. The whole system with LoRA (2 ranks, vLLM, resume): tests/test_lora_system.py (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.config import LoRAConfig
from contracts.presets import tiny
from contracts.validation import problems
from models import lora
from models.families import FAMILIES
from models.weight_sync import (
    Probe,
    WeightsMismatchError,
    WeightsPayload,
    check_probe,
    export_arrays,
    probe_inputs,
    receive,
)

R8 = LoRAConfig(rank=8, dropout=0.0)


@pytest.fixture(scope="module")
def family_paths(tmp_path_factory):
    from models.tiny_families import build

    return {name: str(build(name, tmp_path_factory.mktemp(name))) for name in FAMILIES}


def adapted(path: str, cfg: LoRAConfig = R8, seed: int = 3):
    """The checkpoint's VLM with adapters whose B is random (a fresh B = 0 would hide every mistake)."""
    from models.families import load_vlm

    peft_vlm = lora.apply_lora(load_vlm(path), cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_vlm.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return peft_vlm


def probe_logprobs(vlm, processor, text: str, image: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Raw log p(token_i | < i) of `text` under `vlm`, i >= 1 (what the engines' `score_probe` return)."""
    from PIL import Image

    from models.families import family_of_model, image_token_id

    frame = Image.fromarray(image)
    ids = processor(text=[text], images=[frame], return_tensors="pt")["input_ids"]
    inputs = family_of_model(vlm).image_inputs(processor.image_processor, [frame], ids, image_token_id(vlm.config))
    with torch.no_grad():
        logits = vlm(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits[0, :-1].float()
    return ids[0].tolist(), torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0].numpy()


# ---- what is adapted ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_targets_follow_the_papers_train_vision(family_paths, family):
    from models.families import load_vlm

    vlm = load_vlm(family_paths[family])
    linear = [n for n, m in vlm.named_modules() if isinstance(m, torch.nn.Linear)]
    every = lora.target_modules(vlm, "all")
    assert set(every) == {n for n in linear if n != "lm_head"}  # every linear layer but lm_head
    assert {lora.part_of(n) for n in every} == {"language", "projector", "tower"}
    assert {lora.part_of(n) for n in lora.target_modules(vlm, "projector")} == {"language", "projector"}
    assert {lora.part_of(n) for n in lora.target_modules(vlm, "language")} == {"language"}


def test_fresh_adapters_are_the_same_function_and_only_they_train(tiny_model_path):
    from models.families import load_vlm

    base = load_vlm(tiny_model_path)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
    peft_vlm = lora.apply_lora(base, LoRAConfig(rank=4)).eval()
    with torch.no_grad():
        after = peft_vlm(input_ids=ids).logits
    assert torch.equal(before, after)  # B = 0
    trainable = {n for n, p in peft_vlm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    again = lora.apply_lora(load_vlm(tiny_model_path), LoRAConfig(rank=4))
    a = dict(peft_vlm.named_parameters())
    assert all(torch.equal(a[n], p) for n, p in again.named_parameters() if ".lora_A." in n)  # same on every rank
    assert lora.alpha(LoRAConfig(rank=4)) == 8.0 and lora.alpha(LoRAConfig(rank=4, alpha=3.0)) == 3.0


# ---- what a push sends --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_push_is_the_adapter_and_merged_layers_only_where_vllm_cannot_apply(family_paths, family):
    peft_vlm = adapted(family_paths[family])
    named, config, merged = lora.export_adapter(peft_vlm)
    full = sum(a.nbytes for _, a in export_arrays(peft_vlm.get_base_model()) if ".lora_" not in _)
    pushed = sum(a.nbytes for _, a in named)
    parts = {lora.part_of(n) for n in merged}
    assert parts == ({"projector", "tower"} if family == "llava" else set())
    assert config["r"] == 8 and config["lora_alpha"] == 16.0
    adapters = [n for n, _ in named if lora.is_adapter_name(n)]
    assert all(n.startswith("base_model.model.") for n in adapters)
    if family.startswith("llava"):  # CLIP adapter names in the hub's layout, or vLLM drops them silently
        towers = [n for n in adapters if "vision_tower" in n] + [n for n, _ in named if "vision_tower" in n]
        assert towers and all("vision_tower.vision_model." in n for n in towers)
    print(f"{family}: push {pushed / 1e3:.0f} kB of {full / 1e3:.0f} kB ({pushed / full:.1%}), {len(merged)} merged")
    if family != "llava":  # the embedded-style LLaVA-1.5 also sends its merged tower
        assert pushed < full / 4


def test_hf_engine_merges_an_adapter_push_into_what_peft_computes(family_paths):
    """LLaVA-1.5 style: the language adapter merged by the engine, tower and projector sent merged."""
    from actors.engines import HFEngine

    path = family_paths["llava"]
    peft_vlm = adapted(path)
    named, config, _ = lora.export_adapter(peft_vlm)
    engine = HFEngine(path, temperature=0.2, max_new_tokens=8)
    text, image, ids, start = probe_inputs(engine.processor)
    base_ids, base_lp = engine.score_probe(text, image)
    for _ in range(2):  # twice: the second push merges into W0 again, not into the first push's weights
        engine.load_weights(receive(WeightsPayload.build(1, named, config)), config)
    got_ids, got = engine.score_probe(text, image)
    want_ids, want = probe_logprobs(peft_vlm, engine.processor, text, image)
    assert got_ids == want_ids == base_ids == ids
    assert np.max(np.abs(np.array(got) - want)) < 1e-5
    assert np.max(np.abs(np.array(base_lp) - want)) > 1e-2  # the adapter moved the policy


# ---- the probe ----------------------------------------------------------------------------------------------
def test_probe_check_passes_within_tolerance_and_names_a_mismatch():
    probe = Probe("t", np.zeros((4, 4, 3), np.uint8), [1, 2, 3, 4], 2, [-1.0, -2.0], 1e-3)
    assert check_probe(probe, [1, 2, 3, 4], [-9.0, -1.0005, -2.0]) == pytest.approx(5e-4)
    with pytest.raises(WeightsMismatchError, match="differ .* by 0.5"):
        check_probe(probe, [1, 2, 3, 4], [-9.0, -1.5, -2.0])
    with pytest.raises(WeightsMismatchError, match="other token ids"):
        check_probe(probe, [1, 2, 3, 5], [-9.0, -1.0, -2.0])
    with pytest.raises(WeightsMismatchError):
        check_probe(probe, [1, 2, 3, 4], [-9.0, float("nan"), -2.0])


def test_probe_is_in_the_chat_template_and_its_response_follows_the_prompt(family_paths):
    from transformers import AutoProcessor

    for path in family_paths.values():
        processor = AutoProcessor.from_pretrained(path)
        text, image, ids, start = probe_inputs(processor)
        assert image.shape == (300, 300, 3) and 0 < start < len(ids)
        assert processor.tokenizer.decode(ids[start:]).strip().endswith('"action": "+"}')


def test_payload_checksum_covers_adapter_and_probe():
    named = [("base_model.model.x.lora_A.weight", np.ones((2, 3), np.float32))]
    probe = Probe("t", np.zeros((2, 2, 3), np.uint8), [1, 2], 1, [-1.0], 1e-3)
    payload = WeightsPayload.build(1, named, {"r": 2, "lora_alpha": 4.0}, probe=probe)
    payload.verify()
    assert payload.nbytes == 24
    payload.probe.logprobs[0] = -0.5  # a forged probe would let a wrong engine pass
    with pytest.raises(ValueError, match="checksum"):
        payload.verify()
    plain = WeightsPayload.build(1, named)
    assert plain.checksum != payload.checksum and plain.adapter is None


# ---- merged export and LoRA checkpoints -----------------------------------------------------------------------
def test_merged_checkpoint_is_a_plain_model_with_the_adapter_in_it(family_paths, tmp_path):
    from transformers import AutoProcessor

    from models.families import load_vlm
    from models.policy import save_policy

    path = family_paths["llava_next"]
    peft_vlm, processor = adapted(path), AutoProcessor.from_pretrained(path)
    save_policy(tmp_path / "merged", peft_vlm, processor, None)
    plain = load_vlm(tmp_path / "merged")
    assert not lora.is_lora(plain)
    text, image, _, _ = probe_inputs(processor)
    _, want = probe_logprobs(peft_vlm, processor, text, image)
    _, got = probe_logprobs(plain, processor, text, image)
    assert np.max(np.abs(got - want)) < 1e-5
    from safetensors import safe_open

    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k or "base_layer" in k for k in keys)
    assert any("vision_tower.vision_model." in k for k in keys)  # the hub layout vLLM loads


def test_lora_checkpoint_names_its_base_and_loads_back_trainable(family_paths, tmp_path):
    from transformers import AutoProcessor

    from models.policy import ValueHead, load_policy, save_lora_policy

    path = family_paths["qwen2_5_vl"]
    peft_vlm, processor = adapted(path), AutoProcessor.from_pretrained(path)
    head = ValueHead(peft_vlm.config.get_text_config().hidden_size)
    save_lora_policy(tmp_path / "ck", peft_vlm, processor, head, path, {"policy_version": 3})
    assert not list((tmp_path / "ck").glob("*.safetensors"))  # the base is not copied
    assert lora.base_path(tmp_path / "ck") == str(pathlib_resolve(path))
    vlm, _, head2 = load_policy(tmp_path / "ck")
    want = {n: p for n, p in peft_vlm.named_parameters()}
    got = dict(vlm.named_parameters())
    assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)
    assert {n for n, p in vlm.named_parameters() if p.requires_grad} == {
        n for n, p in peft_vlm.named_parameters() if p.requires_grad
    }
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), head2.state_dict().values()))


def pathlib_resolve(path: str):
    import pathlib

    return pathlib.Path(path).resolve()


def test_lora_checkpoint_refuses_a_changed_base(family_paths, tmp_path):
    import shutil

    from transformers import AutoProcessor

    from models.policy import load_policy, save_lora_policy

    base = tmp_path / "base"
    shutil.copytree(family_paths["llava"], base)
    peft_vlm = adapted(str(base))
    save_lora_policy(tmp_path / "ck", peft_vlm, AutoProcessor.from_pretrained(base), None, str(base))
    with open(next(base.glob("*.safetensors")), "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(RuntimeError, match="missing or has changed"):
        load_policy(tmp_path / "ck")


# ---- config -----------------------------------------------------------------------------------------------------
def test_config_rules_for_lora():
    cfg = tiny()
    assert cfg.model.lora.rank == 0  # full fine-tuning stays the default
    cfg.model.lora = LoRAConfig(rank=-1, alpha=-2.0, dropout=1.0)
    found = "\n".join(problems(cfg))
    assert "--model.lora.rank -1" in found and "--model.lora.alpha -2" in found and "--model.lora.dropout 1" in found
    from contracts.presets import PRESETS

    paper = PRESETS["paper_lora"][1]
    assert (paper.model.lora.rank, paper.model.lora.alpha, paper.model.lora.dropout) == (128, 256.0, 0.05)
    assert paper.model.lora.targets == "all" and not problems(paper)
