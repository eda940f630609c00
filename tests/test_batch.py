"""learner/batch.py: replay rows -> samples (episode order, done, action split) -> padded model inputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from contracts.config import TinyVLMShape
from contracts.schema import StepRecord, encode_png, to_record_batch
from envs.experts import numberline_response
from learner.batch import Sample, TokenTexts, collate, pad_prompt_response, samples_from_table
from learner.sft import tokenizer_corpus
from models.tiny_llava import build_processor
from models.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tok_proc():
    tokenizer = build_tokenizer(tokenizer_corpus("numberline"), TinyVLMShape().vocab_size)
    return tokenizer, build_processor(tokenizer, TinyVLMShape())


def sample(prompt, response, logps, action_start, color=0):
    img = Image.fromarray(np.full((30, 40, 3), color, dtype=np.uint8))
    return Sample.probe(prompt, response, img, behaviour_logprobs=logps, action_start=action_start)


def test_collate_layout(tok_proc):
    tokenizer, processor = tok_proc
    pad = tokenizer.pad_token_id
    samples = [
        sample([10, 11, 12], [20, 21], [-0.1, -0.2], 1, color=0),
        sample([30, 31, 32, 33, 34], [40, 41, 42, 43], [-1.0, -2.0, -3.0, -4.0], 2, color=128),
        sample([50, 51], [], [], 0, color=255),  # empty response: kept, fully masked
    ]
    out = collate(samples, processor.image_processor, pad)
    B, L, R = 3, 9, 4
    assert out["input_ids"].shape == (B, L) and out["attention_mask"].shape == (B, L)
    assert out["logit_index"].shape == (B, R) and out["targets"].shape == (B, R)
    assert out["response_mask"].shape == (B, R) and out["behaviour_logprobs"].shape == (B, R)
    assert out["response_mask"].dtype == torch.bool and out["behaviour_logprobs"].dtype == torch.float32
    assert out["pixel_values"].shape == (B, 3, 112, 112)
    assert out["input_ids"].tolist() == [
        [10, 11, 12, 20, 21] + [pad] * 4,
        [30, 31, 32, 33, 34, 40, 41, 42, 43],
        [50, 51] + [pad] * 7,
    ]
    assert out["attention_mask"].tolist() == [[1] * 5 + [0] * 4, [1] * 9, [1] * 2 + [0] * 7]
    assert out["value_index"].tolist() == [2, 4, 1]  # last prompt position
    assert out["action_start"].tolist() == [1, 2, 0]
    for b, s in enumerate(s.record for s in samples):
        P, n = len(s.prompt_ids), len(s.response_ids)
        assert out["response_mask"][b].tolist() == [True] * n + [False] * (R - n)
        for j in range(n):
            assert out["logit_index"][b, j].item() == P - 1 + j
            # the logit at logit_index predicts the token at logit_index + 1, which is the target
            assert out["input_ids"][b, out["logit_index"][b, j] + 1].item() == out["targets"][b, j].item()
        assert out["targets"][b, :n].tolist() == s.response_ids
        assert out["targets"][b, n:].tolist() == [pad] * (R - n)
        assert out["logit_index"][b].max().item() < P + n  # padding never indexes past the real tokens
        assert out["logit_index"][b].min().item() >= 0
    torch.testing.assert_close(
        out["behaviour_logprobs"],
        torch.tensor([[-0.1, -0.2, 0, 0], [-1.0, -2.0, -3.0, -4.0], [0, 0, 0, 0]]),
    )
    # pixel values follow the sample order: black, grey, white frames differ
    means = out["pixel_values"].mean(dim=(1, 2, 3))
    assert means[0] < means[1] < means[2]


def step(episode_id, i, response_ids, terminated=False, truncated=False, version=0):
    return StepRecord(
        episode_id=episode_id,
        step=i,
        actor_id=0,
        env_index=0,
        seed=1,
        policy_version=version,
        prompt_ids=[7, 8, 9],
        image_png=encode_png(np.zeros((4, 4, 3), np.uint8)),
        response_ids=response_ids,
        behaviour_logprobs=[-0.5] * len(response_ids),
        response_text="",
        action=0,
        action_valid=True,
        parse_status="ok",
        reward=float(i),
        terminated=terminated,
        truncated=truncated,
    )


def test_samples_from_table_order_and_done(tok_proc):
    tokenizer, _ = tok_proc
    rows = [
        step("b", 1, [20], terminated=True),
        step("a", 2, [20], truncated=True),
        step("b", 0, [20]),
        step("a", 0, [20]),
        step("a", 1, [20]),
    ]
    table = pa.Table.from_batches([to_record_batch(rows)])
    samples = samples_from_table(table, TokenTexts(tokenizer))
    assert [(s.record.episode_id, s.record.step) for s in samples] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert [s.done for s in samples] == [False, False, True, False, True]
    assert [s.record.reward for s in samples] == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert all(s.record.prompt_ids == [7, 8, 9] for s in samples)
    assert samples[0].image.size == (4, 4) and samples[0].image.mode == "RGB"


@pytest.mark.parametrize("cot", [True, False])
def test_action_start_on_real_response(tok_proc, cot):
    tokenizer, _ = tok_proc
    text = numberline_response({"current": 4, "target": 1}, 0, cot)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    table = pa.Table.from_batches([to_record_batch([step("x", 0, ids, terminated=True)])])
    (s,) = samples_from_table(table, TokenTexts(tokenizer))
    k = s.action_start
    assert 0 < k < len(ids)
    tail = tokenizer.decode(ids[k:], skip_special_tokens=True)
    head = tokenizer.decode(ids[:k], skip_special_tokens=True)
    first = tokenizer.decode(ids[k : k + 1], skip_special_tokens=True)
    marker = '"action":'
    # the marker begins inside token k: not wholly before it, and token k holds its start
    assert marker not in head
    pos = tail.find(marker)
    assert 0 <= pos < len(first)
    assert tail[pos:].startswith('"action": "-"')


def test_action_start_absent_is_response_length(tok_proc):
    tokenizer, _ = tok_proc
    ids = tokenizer(' {\n "thoughts": "3" \n}', add_special_tokens=False)["input_ids"]
    table = pa.Table.from_batches([to_record_batch([step("x", 0, ids), step("y", 0, [])])])
    samples = samples_from_table(table, TokenTexts(tokenizer))
    assert [s.action_start for s in samples] == [len(ids), 0]


def test_samples_keep_the_stored_row(tok_proc):
    rows = [step("a", 0, [20, 21], truncated=True, version=3)]
    (s,) = samples_from_table(pa.Table.from_batches([to_record_batch(rows)]), TokenTexts(tok_proc[0]))
    assert s.record == rows[0]  # every stored field as written, nothing re-typed by hand
    assert s.done


def test_pad_prompt_response_layout():
    ids, mask = pad_prompt_response([[1, 2, 3], [4]], [[5], [6, 7, 8, 9]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 5, 0], [4, 6, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long
