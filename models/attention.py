"""Attention of a bf16 model on CPU in fp32: transformers' SDPA on fp32 copies of query, key and value.

torch 2.13's CPU flash-attention kernel is much slower in bf16 than in fp32: at the embedded model's PPO
micro-batch (32 rows x 4 heads x 270 positions x 32) its backward took 58 against 26 ms a call, and a bf16
learner spent ~30 % of a micro-batch in attention. A micro-batch's forward + backward + step took 0.58 s with
this against 0.70 s without (fp32: 0.96 s; one thread of a Xeon with AMX, medians of 6 interleaved,
2026-12-04). The output is cast back to the model's dtype, so the model around it is unchanged; the softmax
gains fp32 precision. On a GPU, or in fp32, the call is transformers' own SDPA, untouched.
"""

from __future__ import annotations

import torch

FP32_SDPA = "sdpa_fp32_on_cpu"
"""The attention implementation's name in transformers' AttentionInterface."""


def sdpa_fp32_on_cpu(module, query, key, value, attention_mask, **kwargs):
    """transformers' `sdpa_attention_forward`, in fp32 when the inputs are bf16 on CPU. Returns (output, None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.dtype != torch.bfloat16 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # an additive mask: SDPA wants it in the query's dtype
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FP32_SDPA, sdpa_fp32_on_cpu)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)  # the masks SDPA takes, built as for "sdpa"


def use_fp32_attention_on_cpu(vlm) -> None:
    """Switch `vlm` (a transformers model) from SDPA to `FP32_SDPA`, in place; another implementation stays."""
    if vlm.config._attn_implementation != "sdpa":
        return
    _register()
    vlm.set_attn_implementation(FP32_SDPA)
