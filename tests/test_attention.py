"""models/attention.py: fp32 SDPA inside a bf16 model on CPU, transformers' own SDPA everywhere else."""

from __future__ import annotations

import torch

from models.attention import FP32_SDPA, sdpa_fp32_on_cpu, use_fp32_attention_on_cpu
from models.families import load_vlm


class Layer(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 1


def qkv(dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 9, 32, generator=g).to(dtype) for _ in range(3)]


def test_bf16_inputs_are_attended_in_fp32_and_cast_back():
    q, k, v = qkv(torch.bfloat16)
    out, weights = sdpa_fp32_on_cpu(Layer(), q, k, v, None)
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert out.dtype == torch.bfloat16 and weights is None
    torch.testing.assert_close(out, exact.transpose(1, 2).to(torch.bfloat16), atol=0, rtol=0)  # (B, L, H, D)


def test_fp32_inputs_take_transformers_sdpa_unchanged():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = qkv(torch.float32)
    mask = torch.zeros(2, 1, 9, 9).masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    ours, theirs = sdpa_fp32_on_cpu(Layer(), q, k, v, mask)[0], sdpa_attention_forward(Layer(), q, k, v, mask)[0]
    assert torch.equal(ours, theirs)


def test_a_bf16_model_switched_over_is_closer_to_fp32_and_still_trains(tiny_model_path):
    def logits(model):
        ids = torch.arange(5, 45).reshape(2, 20)
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=None).logits.float()

    reference = logits(load_vlm(tiny_model_path))
    plain, switched = load_vlm(tiny_model_path, torch.bfloat16), load_vlm(tiny_model_path, torch.bfloat16)
    use_fp32_attention_on_cpu(switched)
    assert switched.config._attn_implementation == FP32_SDPA
    assert switched.config.get_text_config()._attn_implementation == FP32_SDPA
    out = logits(switched)
    assert (out - reference).abs().mean() < (logits(plain) - reference).abs().mean()
    out.sum().backward()
    assert switched.get_input_embeddings().weight.grad is not None


def test_a_fp32_model_gives_the_same_logits_and_eager_is_left_alone(tiny_model_path):
    ids = torch.arange(5, 45).reshape(2, 20)
    before, model = load_vlm(tiny_model_path), load_vlm(tiny_model_path)
    use_fp32_attention_on_cpu(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before(input_ids=ids).logits)
    before.set_attn_implementation("eager")
    use_fp32_attention_on_cpu(before)
    assert before.config._attn_implementation == "eager"


def test_a_checkpoint_saved_from_a_switched_model_names_no_attention(tiny_model_path, tmp_path):
    """vLLM and a plain transformers load read the saved config: it must not ask for an implementation they lack."""
    from models.policy import load_policy, save_policy

    vlm, processor, head = load_policy(tiny_model_path)
    use_fp32_attention_on_cpu(vlm)
    save_policy(tmp_path, vlm, processor, head)
    assert FP32_SDPA not in (tmp_path / "config.json").read_text()
    assert load_vlm(tmp_path).config._attn_implementation == "sdpa"
