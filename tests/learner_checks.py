"""What the learner tests share (tests/test_ppo_update.py on a toy, tests/test_learner.py on the tiny LLaVA):
StepRecords with the bookkeeping no learner code reads filled in, and which weights an update moved."""

from __future__ import annotations

import torch
from torch import nn

from contracts.schema import StepRecord


def record(**fields) -> StepRecord:
    """A StepRecord with the bookkeeping fields no learner code reads filled in (the answer parsed)."""
    bookkeeping = {"actor_id": 0, "env_index": 0, "seed": 0, "response_text": "", "action": 0, "action_valid": True}
    return StepRecord(**{**bookkeeping, "parse_status": "ok", **fields})


def params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}
