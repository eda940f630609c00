"""Replay rows -> padded model inputs. Pure (tokenizer and image processor passed in), CPU-testable.

Every sample is scored under the exact prompt ids its step was generated with (never a re-built prompt,
the original code's bug §11.1), and the CoT/action split is found from its own response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import torch

from contracts.schema import decode_png, from_table
from learner.ppo import action_start_index


@dataclass
class Sample:
    episode_id: str
    step: int
    policy_version: int
    prompt_ids: list[int]
    response_ids: list[int]
    behaviour_logprobs: list[float]
    image: object  # PIL image
    reward: float
    done: bool
    action_start: int
    """First response token of the last `"action":` (len(response_ids) if absent)."""


class TokenTexts:
    """Decoded text of single token ids, cached (the split search decodes every response token)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        out = []
        for i in ids:
            if i not in self.cache:
                self.cache[i] = self.tokenizer.decode([i], skip_special_tokens=True)
            out.append(self.cache[i])
        return out


def samples_from_table(table: pa.Table, token_texts: TokenTexts) -> list[Sample]:
    """Rows in episode order; an empty response is kept (its log-prob is 0) so the step still counts."""
    steps = sorted(from_table(table), key=lambda s: (s.episode_id, s.step))
    return [
        Sample(
            episode_id=s.episode_id,
            step=s.step,
            policy_version=s.policy_version,
            prompt_ids=s.prompt_ids,
            response_ids=s.response_ids,
            behaviour_logprobs=s.behaviour_logprobs,
            image=decode_png(s.image_png),
            reward=s.reward,
            done=s.terminated or s.truncated,
            action_start=action_start_index(token_texts(s.response_ids)),
        )
        for s in steps
    ]


def collate(samples: list[Sample], image_processor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response ids with the index tensors the loss needs.

    input_ids, attention_mask (B, L); pixel_values (B, 3, H, W); value_index (B,) = last prompt position;
    logit_index (B, R) = positions whose logits predict response tokens; targets, response_mask (B, R);
    behaviour_logprobs (B, R); action_start (B,).
    """
    B = len(samples)
    L = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    R = max(max(len(s.response_ids) for s in samples), 1)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    logit_index = torch.zeros((B, R), dtype=torch.long)
    targets = torch.full((B, R), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.bool)
    behaviour = torch.zeros((B, R), dtype=torch.float32)
    for b, s in enumerate(samples):
        P, n = len(s.prompt_ids), len(s.response_ids)
        input_ids[b, : P + n] = torch.tensor(s.prompt_ids + s.response_ids)
        attention_mask[b, : P + n] = 1
        logit_index[b] = P - 1  # padding positions point at a real logit; the mask removes them
        logit_index[b, :n] = torch.arange(P - 1, P - 1 + n)
        targets[b, :n] = torch.tensor(s.response_ids, dtype=torch.long)
        response_mask[b, :n] = True
        behaviour[b, :n] = torch.tensor(s.behaviour_logprobs)
    pixel_values = image_processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "value_index": torch.tensor([len(s.prompt_ids) - 1 for s in samples]),
        "logit_index": logit_index,
        "targets": targets,
        "response_mask": response_mask,
        "behaviour_logprobs": behaviour,
        "action_start": torch.tensor([s.action_start for s in samples]),
    }
