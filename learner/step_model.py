"""The model side of a PPO update (learner/ppo_update.py `StepModel`) over a DeepSpeed-shaped wrapper.

DeepSpeed's engine and `PlainTorchModel` look the same from here: called like the module, `backward(loss)`
divides by grad_accum, `step()` clips and steps the optimizer at each grad_accum boundary, `train()`/`eval()`.
`WrappedModelStep` turns either into the update's interface, so the learner rank (DeepSpeed) and the tests
and benchmarks (plain torch) score micro-batches with the same code.
"""

from __future__ import annotations

import torch

from contracts.config import PPOConfig
from learner import ppo
from models.families import EXTRA_IMAGE_KEYS


class WrappedModelStep:
    """`StepModel` over a wrapped PolicyWithValue-like module (forward -> logits (B, L, V), values (B,))."""

    def __init__(
        self, wrapped, optimizer, device: torch.device, banned: torch.Tensor, temperature: float, cot_coef: float
    ):
        self.wrapped, self.optimizer, self.device = wrapped, optimizer, device
        self.banned = banned.to(device)
        self.temperature, self.cot_coef = temperature, cot_coef

    def score(self, batch: dict[str, torch.Tensor], detach_value: bool = False):
        """Forward one micro-batch: λ-scaled sequence log-probs (B,), values (B,), token log-probs (B, R).

        Inputs are moved to the module's device; the outputs stay there (the PPO loss needs their gradients).
        """
        batch, response_logits, values = self._forward(batch, detach_value)
        response_logits[..., self.banned] = float("-inf")  # the rollout engine never samples these either
        token_logp = ppo.token_logprobs(response_logits, batch["targets"], self.temperature)
        token_logp = token_logp.masked_fill(~batch["response_mask"], 0.0)  # (B, R)
        seq = ppo.scaled_sequence_logprob(token_logp, batch["response_mask"], batch["action_start"], self.cot_coef)
        return seq, values.float(), token_logp

    def _forward(self, batch: dict[str, torch.Tensor], detach_value: bool = False):
        """(batch on the device, response logits (B, R, V) in fp32, values (B,))."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        extras = {k: batch[k] for k in EXTRA_IMAGE_KEYS if k in batch}  # the family's other image inputs
        first = int(batch["logit_index"].min())  # no logit before the earliest response position is needed
        logits, values = self.wrapped(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            batch["value_index"],
            detach_value,
            logits_from=first,
            **extras,
        )  # (B, L - first, V), (B,)
        idx = (batch["logit_index"] - first).unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (B, R, V)
        return batch, logits.gather(1, idx).float(), values

    def demo_logprobs(self, batch, slot: torch.Tensor, slot_ids: torch.Tensor, slot_mask: torch.Tensor):
        """A demonstration batch's teacher-forced log-probs (B, R) at T = 1 (SFT's loss), banned ids at -inf as in
        `score`, masked to 0 past each response; and log Σ p(slot_ids) at each row's response position `slot`
        (B,; the ids of `slot_ids` (B, K) where `slot_mask`). Both with gradients."""
        batch, response_logits, _ = self._forward(batch)
        response_logits[..., self.banned] = float("-inf")
        logp = torch.log_softmax(response_logits, dim=-1)  # (B, R, V)
        token_logp = logp.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(logp.shape[0], device=logp.device)
        at_slot = logp[rows, slot.to(logp.device).clamp(max=logp.shape[1] - 1)]  # (B, V); no slot: masked later
        legal = at_slot.gather(-1, slot_ids.to(logp.device)).masked_fill(~slot_mask.to(logp.device), float("-inf"))
        return token_logp.masked_fill(~batch["response_mask"], 0.0), legal.logsumexp(-1)

    def raw_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log_softmax(logits) of the response tokens (B, R), no temperature and no token mask: what vLLM's
        prompt log-probs are (the weight-push probe, models/weight_sync.py)."""
        batch, response_logits, _ = self._forward(batch)
        token_logp = ppo.token_logprobs(response_logits, batch["targets"], 1.0)
        return token_logp.masked_fill(~batch["response_mask"], 0.0)

    def backward(self, loss: torch.Tensor) -> None:
        self.wrapped.backward(loss)

    def step(self) -> None:
        self.wrapped.step()

    def set_lr(self, lr: float) -> None:
        """`lr` for the VLM's parameters, scaled per group (`param_groups`: the value head's own multiple)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def train_mode(self) -> None:
        self.wrapped.train()

    def eval_mode(self) -> None:
        self.wrapped.eval()


def param_groups(module: torch.nn.Module, cfg: PPOConfig) -> list[dict]:
    """The trainable parameters of a PolicyWithValue-like module as two optimizer groups: the VLM's (LoRA: its
    adapters) at the scheduled lr, the value head's at cfg.value_lr_scale times it. At the VLM's rate the head
    trailed returns that rise by several units within a few updates (README, late collapse): the KL stop leaves
    an update only a few optimizer steps."""
    head = [p for p in module.value_head.parameters() if p.requires_grad]
    in_head = {id(p) for p in head}
    vlm = [p for p in module.parameters() if p.requires_grad and id(p) not in in_head]
    return [{"params": vlm, "lr_scale": 1.0}, {"params": head, "lr_scale": cfg.value_lr_scale}]


class PlainTorchModel:
    """The part of DeepSpeed's engine the learner uses, in plain torch (fp32, one process)."""

    def __init__(self, module: torch.nn.Module, optimizer, grad_accum: int, max_grad_norm: float):
        self.module, self.optimizer = module, optimizer
        self.grad_accum, self.max_grad_norm = grad_accum, max_grad_norm
        self.micro_steps = 0
        self.optimizer_steps = 0
        self.device = next(module.parameters()).device  # DeepSpeed's engine says where the module is, too

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()  # DeepSpeed scales by 1/gradient_accumulation_steps the same way

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.optimizer_steps += 1
