"""actors/engines.py: both engines return the processed log-probs a plain HF forward gives for the same tokens.

The manual reference (tests/logprob_reference.py): one full forward on prompt_ids + response_ids,
log_softmax(logits / T) with the banned special ids at -inf, read at the positions that predict the response tokens.
"""

from __future__ import annotations

import copy
import gc

import numpy as np
import pytest
import torch
from logprob_reference import MAX_NEW, T, batch, expanded_ids, manual_logprobs
from PIL import Image

from actors.engines import Generation, HFEngine, end_at_first_action
from models.families import FAMILIES
from models.policy import load_policy
from models.tokenizer import banned_token_ids

vllm_key = FAMILIES["llava"].vllm_key


@pytest.fixture(scope="module")
def hf_engine(tiny_model_path):
    return HFEngine(tiny_model_path, T, MAX_NEW, seed=0)


def test_banned_ids_are_all_specials_but_eos(hf_engine):
    tok = hf_engine.tokenizer
    banned = banned_token_ids(tok)
    assert tok.eos_token_id not in banned
    assert set(banned) == set(tok.all_special_ids) - {tok.eos_token_id}
    assert {tok.pad_token_id, tok.bos_token_id, tok.convert_tokens_to_ids("<image>")} <= set(banned)


def test_hf_engine_logprobs_equal_manual_forward(hf_engine):
    prompts, images = batch()
    gens = hf_engine.generate(prompts, images)
    assert len(gens) == 2
    banned = set(banned_token_ids(hf_engine.tokenizer))
    for gen, prompt, image in zip(gens, prompts, images):
        assert gen.prompt_ids == expanded_ids(hf_engine.processor, prompt, image)  # padding stripped
        assert 0 < len(gen.response_ids) == len(gen.logprobs) <= MAX_NEW
        assert not banned & set(gen.response_ids)
        assert gen.text == hf_engine.tokenizer.decode(gen.response_ids, skip_special_tokens=True)
        ref = manual_logprobs(hf_engine.vlm, hf_engine.processor, gen.prompt_ids, gen.response_ids, image)
        np.testing.assert_allclose(gen.logprobs, ref, atol=1e-4)
    assert len(gens[0].prompt_ids) > len(gens[1].prompt_ids)


def test_hf_engine_never_samples_banned_ids_even_when_they_dominate(hf_engine):
    """Push every banned id's logit up by 50: unbanned sampling would pick one almost every time."""
    banned = banned_token_ids(hf_engine.tokenizer)

    def boost(module, inputs, output):
        output = output.clone()
        output[..., banned] += 50.0
        return output

    handle = hf_engine.vlm.lm_head.register_forward_hook(boost)
    try:
        prompts, images = batch()
        gens = hf_engine.generate(prompts, images)
        pixels = hf_engine.processor.image_processor(images=[Image.fromarray(images[0])], return_tensors="pt")
        device = hf_engine.device  # the CPU here, CUDA on a GPU host
        ids = torch.tensor([gens[0].prompt_ids], device=device)
        with torch.no_grad():
            logits = hf_engine.vlm(input_ids=ids, pixel_values=pixels["pixel_values"].to(device)).logits[0, -1]
        assert int(logits.argmax()) in banned  # the boost really makes a banned id the favourite
        for gen, image in zip(gens, images):
            assert len(gen.response_ids) > 0 and not set(banned) & set(gen.response_ids)
            ref = manual_logprobs(hf_engine.vlm, hf_engine.processor, gen.prompt_ids, gen.response_ids, image)
            np.testing.assert_allclose(gen.logprobs, ref, atol=1e-4)
    finally:
        handle.remove()


def _chars(text: str) -> Generation:
    """A generation whose tokens are its characters (code points), log-prob -i for token i."""
    return Generation([1, 2], [ord(c) for c in text], [-float(i) for i in range(len(text))], text)


def _decode(ids: list[int]) -> str:
    return "".join(map(chr, ids))


def test_end_at_first_action_keeps_the_prefix_through_the_first_value_only():
    text = '{"thoughts": "x", "action": "+", "action": "3"}'
    cut = end_at_first_action(_chars(text), _decode)
    assert cut.text == '{"thoughts": "x", "action": "+"'
    assert cut.response_ids == _chars(text).response_ids[: len(cut.text)] and cut.prompt_ids == [1, 2]
    assert cut.logprobs == [-float(i) for i in range(len(cut.text))]  # the engine's own log-probs, untouched


@pytest.mark.parametrize("text", ['{"thoughts": "no action here"}', '{"action": "unfinished', '"action": "+"'])
def test_end_at_first_action_leaves_an_answer_without_text_after_a_closed_value_alone(text):
    gen = _chars(text)
    assert end_at_first_action(gen, _decode) is gen


def test_end_at_first_action_reads_the_marker_as_the_parser_does_case_and_spaces():
    assert end_at_first_action(_chars('{"Action":  "-"}'), _decode).text == '{"Action":  "-"'


def test_end_at_first_action_cuts_on_real_tokens(hf_engine):
    """With the tiny model's byte-level BPE: the cut lands on the token holding the closing quote."""
    tokenizer = hf_engine.tokenizer
    text = ' {\n "cards": [2, 10], \n"action": "10" \n}\n "action": "+" }'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    gen = Generation([0], ids, [-0.5] * len(ids), tokenizer.decode(ids, skip_special_tokens=True))
    cut = end_at_first_action(gen, lambda i: tokenizer.decode(i, skip_special_tokens=True))
    assert cut.response_ids == ids[: len(cut.response_ids)] and len(cut.response_ids) < len(ids)
    assert cut.text.count('"action"') == 1 and cut.text.rstrip().rstrip('"\n }').endswith('"action": "10')
    shorter = tokenizer.decode(cut.response_ids[:-1], skip_special_tokens=True)
    assert '"action": "10"' not in shorter  # the shortest such prefix


def test_hf_engine_with_the_stop_rule_ends_at_the_first_action_value(hf_engine):
    """A hook on lm_head forces the answer `{"action": "+", "action": "-"} ...`; the engine keeps only the tokens
    through the one that closes `"+"` (here `",`), with the log-probs the unstopped engine gave them."""
    tokenizer = hf_engine.tokenizer
    forced = tokenizer(' {"action": "+", "action": "-" } ' * 4, add_special_tokens=False)["input_ids"][:MAX_NEW]
    step = [0]

    def force(module, inputs, output):
        output = output.clone()
        output[:, -1, forced[min(step[0], len(forced) - 1)]] += 100.0
        step[0] += 1
        return output

    prompts, images = batch()
    handle = hf_engine.vlm.lm_head.register_forward_hook(force)
    try:
        runs = []
        for stop in (False, True):
            step[0], hf_engine.stop_after_action = 0, stop
            runs.append(hf_engine.generate(prompts[:1], images[:1])[0])
    finally:
        handle.remove()
        hf_engine.stop_after_action = False
    full, cut = runs
    assert full.response_ids == forced  # the hook really writes the answer
    assert cut.response_ids == forced[: len(cut.response_ids)] and cut.text.count('"action"') == 1
    assert cut.text.startswith(' {"action": "+"') and '"+"' not in tokenizer.decode(cut.response_ids[:-1])
    assert cut.logprobs == full.logprobs[: len(cut.response_ids)]


# ---- vLLM (one in-process engine for the module) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_engine(tiny_model_path):
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "OMP_NUM_THREADS": "1",
            "VLLM_LOGGING_LEVEL": "ERROR",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        }.items():
            mp.setenv(key, value)
        set_threads(1)
        from actors.engines import VLLMEngine

        engine = VLLMEngine(tiny_model_path, T, MAX_NEW, seed=0)
        yield engine
    del engine
    gc.collect()
    torch.set_num_threads = set_threads  # vLLM's CPU worker replaces it process-wide with a no-op
    set_threads(threads)


@pytest.fixture(scope="module")
def hf_reference(tiny_model_path):
    vlm, processor, _ = load_policy(tiny_model_path, with_value_head=False)
    return vlm, processor


def check_against(vlm, processor, gens, prompts, images, atol=2e-3):
    banned = set(banned_token_ids(processor.tokenizer))
    for gen, prompt, image in zip(gens, prompts, images):
        assert gen.prompt_ids == expanded_ids(processor, prompt, image)
        assert 0 < len(gen.response_ids) == len(gen.logprobs) <= MAX_NEW
        assert not banned & set(gen.response_ids)
        ref = manual_logprobs(vlm, processor, gen.prompt_ids, gen.response_ids, image)
        np.testing.assert_allclose(gen.logprobs, ref, atol=atol)


@pytest.mark.slow
def test_vllm_prompt_ids_and_logprobs_equal_hf_forward(vllm_engine, hf_reference):
    prompts, images = batch()
    gens = vllm_engine.generate(prompts, images)
    assert len(gens) == 2
    check_against(*hf_reference, gens, prompts, images)


@pytest.mark.slow
def test_vllm_texts_are_what_its_own_incremental_detokenizer_writes(vllm_engine):
    """The engine samples without vLLM's per-token detokenizer and decodes each response once: for any tokens,
    the text vLLM writes with its detokenizer on (off: batch-16 generates 1.06-1.14x faster, README), but
    for an unfinished UTF-8 character that ends a cut-off response: vLLM holds it back, the one decode writes
    U+FFFD for it, as HFEngine does (this random model's byte soup has them; a trained one's answers did not)."""
    prompts, images = batch()
    assert vllm_engine.params.detokenize is False
    own = vllm_engine.generate(prompts, images)
    params, vllm_engine.params = vllm_engine.params, copy.deepcopy(vllm_engine.params)
    vllm_engine.params.detokenize = True
    try:
        requests = [{"prompt": p, "multi_modal_data": {"image": Image.fromarray(i)}} for p, i in zip(prompts, images)]
        outs = vllm_engine.llm.generate(requests, vllm_engine.params, use_tqdm=False)
    finally:
        vllm_engine.params = params
    for gen, out in zip(own, outs, strict=True):
        assert len(gen.response_ids) > 5 and gen.text == vllm_engine.decode(gen.response_ids)
        text, ids = out.outputs[0].text, out.outputs[0].token_ids
        assert text and vllm_engine.decode(ids).removesuffix("\ufffd") == text.removesuffix("\ufffd")


@pytest.mark.slow
def test_vllm_load_weights_in_place(vllm_engine, hf_reference):
    vlm, processor = hf_reference
    prompts, images = batch()
    before = vllm_engine.generate(prompts[:1], images[:1])  # warms the prefix and encoder caches
    changed = copy.deepcopy(vlm)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    named = [(vllm_key(n), p.detach().clone()) for n, p in changed.named_parameters()]
    assert any(n.startswith("model.vision_tower.vision_model.") for n, _ in named)
    try:
        vllm_engine.load_weights(named)
        after = vllm_engine.generate(prompts, images)
        check_against(changed, processor, after, prompts, images)
        stale = manual_logprobs(vlm, processor, after[0].prompt_ids, after[0].response_ids, images[0])
        assert np.max(np.abs(stale - np.array(after[0].logprobs))) > 0.1  # the weights really changed
    finally:  # back to the checkpoint's weights, so the engine is as the fixture made it
        vllm_engine.load_weights([(vllm_key(n), p.detach().clone()) for n, p in vlm.named_parameters()])
    restored = vllm_engine.generate(prompts[:1], images[:1])
    check_against(vlm, processor, restored, prompts[:1], images[:1])
    assert before[0].prompt_ids == restored[0].prompt_ids
