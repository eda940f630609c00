"""Replay rows -> padded model inputs. Pure (tokenizer and image processor passed in), CPU-testable.

Every sample is scored under the exact prompt ids its step was generated with (never a re-built prompt,
the original code's bug §11.1), and the CoT/action split is found from its own response tokens.
Shapes: B = samples, L = prompt + response (the whole sequence), R = response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import torch
from PIL import Image

from contracts.schema import StepRecord, decode_png, from_table
from envs.parsing import action_start_index
from models.families import FAMILIES, Family


@dataclass
class Sample:
    """One replay row as the learner scores it: the stored StepRecord plus what is derived from it once."""

    record: StepRecord
    image: Image.Image
    """`record.image_png` decoded (RGB)."""
    action_start: int
    """First response token of the last `"action":` (len(record.response_ids) if absent)."""

    @property
    def done(self) -> bool:
        """The episode ended at this step; truncation counts as termination, as in the paper."""
        return self.record.terminated or self.record.truncated

    @staticmethod
    def from_record(record: StepRecord, token_texts: TokenTexts) -> Sample:
        return Sample(record, decode_png(record.image_png), action_start_index(token_texts(record.response_ids)))

    @staticmethod
    def probe(
        prompt_ids: list[int],
        response_ids: list[int],
        image: Image.Image,
        behaviour_logprobs: list[float] | None = None,
        action_start: int = 0,
    ) -> Sample:
        """A sample with no env step behind it, to score a given response (LearnerWorker.logprobs, tests)."""
        record = StepRecord(
            episode_id="probe",
            step=0,
            actor_id=0,
            env_index=0,
            seed=0,
            policy_version=0,
            prompt_ids=prompt_ids,
            image_png=b"",  # the decoded image is given; nothing reads the PNG of a probe
            response_ids=response_ids,
            behaviour_logprobs=behaviour_logprobs if behaviour_logprobs is not None else [0.0] * len(response_ids),
            response_text="",
            action=0,
            action_valid=True,
            parse_status="ok",
            reward=0.0,
            terminated=True,
            truncated=False,
        )
        return Sample(record, image, action_start)


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
    return [Sample.from_record(s, token_texts) for s in steps]


def pad_prompt_response(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt + response right-padded with `pad_id`: input_ids (B, L) long, attention_mask (B, L) long.

    Shared by PPO's `collate` and SFT (learner/sft.py), so both score a sequence laid out the same way.
    """
    B, L = len(prompts), max(len(p) + len(r) for p, r in zip(prompts, responses))
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[b, : len(p) + len(r)] = torch.tensor(p + r)
        attention_mask[b, : len(p) + len(r)] = 1
    return input_ids, attention_mask


def collate(
    samples: list[Sample], image_processor, pad_id: int, family: Family = FAMILIES["llava"], image_token_id: int = -1
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response ids with the index tensors the loss needs.

    input_ids, attention_mask (B, L); the family's image inputs (models/families.py: pixel_values, plus
    LlavaNext's image_sizes or Qwen's image_grid_thw and mm_token_type_ids (B, L), whose image tokens are
    found by `image_token_id`); value_index (B,) = last prompt position;
    logit_index (B, R) = positions whose logits predict response tokens; targets, response_mask (B, R);
    behaviour_logprobs (B, R); action_start (B,).
    """
    steps = [s.record for s in samples]
    input_ids, attention_mask = pad_prompt_response(
        [s.prompt_ids for s in steps], [s.response_ids for s in steps], pad_id
    )
    B = len(steps)
    R = max(max(len(s.response_ids) for s in steps), 1)
    logit_index = torch.zeros((B, R), dtype=torch.long)
    targets = torch.full((B, R), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.bool)
    behaviour = torch.zeros((B, R), dtype=torch.float32)
    for b, s in enumerate(steps):
        P, n = len(s.prompt_ids), len(s.response_ids)
        logit_index[b] = P - 1  # padding positions point at a real logit; the mask removes them
        logit_index[b, :n] = torch.arange(P - 1, P - 1 + n)
        targets[b, :n] = torch.tensor(s.response_ids, dtype=torch.long)
        response_mask[b, :n] = True
        behaviour[b, :n] = torch.tensor(s.behaviour_logprobs)
    images = family.image_inputs(image_processor, [s.image for s in samples], input_ids, image_token_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        **images,
        "value_index": torch.tensor([len(s.prompt_ids) - 1 for s in steps]),
        "logit_index": logit_index,
        "targets": targets,
        "response_mask": response_mask,
        "behaviour_logprobs": behaviour,
        "action_start": torch.tensor([s.action_start for s in samples]),
    }
