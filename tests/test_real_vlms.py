"""Real VLM families through the whole system: tiny random hub-layout checkpoints of llava, llava_next (the
paper's LLaVA-1.6), qwen2_vl and qwen2_5_vl, built offline from transformers config classes.

For each: vLLM generates with an image; the learner's log-probs equal vLLM's under the exact prompt ids and the
family's image inputs; a PPO update on 2 DeepSpeed ranks; a weight push; equality again after it; then the
driver end to end with `--model.path`. bf16 runs the same path for LlavaNext and the embedded model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from contracts.presets import tiny
from models.families import FAMILIES

pytestmark = pytest.mark.slow

# fp32: vLLM and the HF forward agree to ~1e-6 (models/families.py); 1e-4 leaves room for summation order.
FP32_TOL = 1e-4
# bf16: both sides round weights and activations to 8 mantissa bits but run different kernels; on the tiny
# LlavaNext the gap measured 9.8e-3 before and 1.7e-2 after an update (tests print it); the bound is ~3x that.
BF16_TOL = 0.05


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from models.tiny_families import build

    return {name: str(build(name, tmp_path_factory.mktemp(name))) for name in FAMILIES}


def _prompt_and_image(model_path: str):
    from transformers import AutoProcessor

    from envs import make_env
    from envs.prompts import task_prompt
    from models.families import chat_format

    obs, info = make_env("numberline").reset(seed=123)
    return chat_format(AutoProcessor.from_pretrained(model_path))(task_prompt("numberline", info)), obs


def _gap(system, image, gen) -> float:
    """Max |engine − learner| processed log-prob of the tokens of `gen` (every rank joins: ZeRO-3 gathers)."""
    import ray
    from PIL import Image

    calls = [l.logprobs.remote(gen.prompt_ids, gen.response_ids, Image.fromarray(image)) for l in system.learners]
    return float(np.max(np.abs(np.array(gen.logprobs) - np.array(ray.get(calls)[0]))))


def _update_push_and_compare(checkpoint: str, dtype: str, tolerance: float) -> dict:
    import ray

    from cluster.launch import launch, push_weights, shutdown

    cfg = tiny()
    cfg.model.dtype = dtype
    cfg.learner.world_size = 2
    cfg.ppo.lr = 1e-3
    cfg.ppo.value_warmup_updates = 0  # the update must move the policy, or "equal after the push" proves little
    system = launch(cfg, checkpoint)
    prompt, image = _prompt_and_image(checkpoint)
    first = ray.get(system.actors[0].score.remote(prompt, image))
    before = _gap(system, image, first)
    assert len(first.response_ids) > 0 and before <= tolerance, f"before the update: gap {before:.2e}"
    shards = None
    while shards is None:
        ray.get(system.actors[0].collect.remote())
        shards = ray.get(system.store.take.remote(cfg.ppo.steps_per_update, 0, 2))
    metrics = ray.get([l.update.remote(s, 0) for l, s in zip(system.learners, shards)])
    assert all(np.isfinite(m["learner/policy_loss"]) for m in metrics)
    # Importance weights π_prox/π_behaviour: near 1 when the learner sees what the engine ran.
    assert abs(metrics[0]["learner/is_weight_mean"] - 1.0) < (0.02 if dtype == "float32" else 0.2)
    push_weights(system, 1)
    assert ray.get(system.actors[0].policy_version.remote()) == 1
    after = _gap(system, image, ray.get(system.actors[0].score.remote(prompt, image)))
    moved = _gap(system, image, first)  # the old engine's log-probs against the updated learner
    shutdown(system)
    print(f"{checkpoint} {dtype}: gap before {before:.2e}, after the push {after:.2e}")
    assert after <= tolerance, f"after the push: gap {after:.2e}"
    assert moved > 10 * tolerance, f"the update barely moved the policy ({moved:.2e}): the check would prove little"
    return {"before": before, "after": after, **metrics[0]}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_update_push_parity(ray_cluster, checkpoints, family):
    _update_push_and_compare(checkpoints[family], "float32", FP32_TOL)


def test_llava_next_bf16_update_push_parity(ray_cluster, checkpoints):
    _update_push_and_compare(checkpoints["llava_next"], "bfloat16", BF16_TOL)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_driver_runs_the_family_end_to_end(ray_cluster, checkpoints, family, tmp_path):
    from cluster.train import main

    argv = ["tiny", "--model.path", checkpoints[family], "--run.out-dir", str(tmp_path), "--run.name", family]
    result = main([*argv, "--run.total-updates", "2", "--model.no-build-if-missing"])
    assert result["updates"] == 2 and result["policy_version"] == 2
    saved = json.loads((tmp_path / family / "eval.json").read_text())
    assert saved == result
    checkpoint = tmp_path / family / "checkpoint"
    assert json.loads((checkpoint / "config.json").read_text())["model_type"] == family


def test_unsupported_model_fails_before_ray(tmp_path, capsys):
    from cluster.train import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "idefics3"}))
    with pytest.raises(SystemExit, match="idefics3.*supported: llava, llava_next"):
        main(["tiny", "--model.path", str(tmp_path), "--run.out-dir", str(tmp_path / "runs")])


def test_sft_finetunes_an_existing_family_checkpoint(tmp_path):
    from contracts.config import SFTConfig
    from learner.sft import demonstrations, finetune_checkpoint
    from models.policy import load_policy

    """SFT starts from a hub-layout LlavaNext (the paper's family), in its own chat template, and learns."""
    from models.families import chat_format
    from models.tiny_families import build

    base = build("llava_next", tmp_path / "base")
    cfg = SFTConfig(samples=64, epochs=3, batch_size=8, lr=3e-3, vision_steps=0)
    info = finetune_checkpoint("numberline", str(base), str(tmp_path / "sft"), cfg)
    assert info["steps"] == 24 and info["base"] == str(base)
    vlm, processor, value_head = load_policy(tmp_path / "sft")
    assert vlm.config.model_type == "llava_next" and value_head is not None
    assert "[INST]" in chat_format(processor)("q")  # the template travels with the checkpoint
    demos = demonstrations("numberline", 4, 0.0, 0, chat=chat_format(processor))
    assert all(p.startswith("[INST]") for _, p, _, _ in demos)
    assert info["final_loss"] < 0.75 * np.log(len(processor.tokenizer))  # random init starts at ~ln(vocab) = 6.9


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_backend_serves_the_family(checkpoints, family):
    """The HF generate backend on every family: its log-probs equal the learner's scoring of the same tokens."""
    import torch
    from PIL import Image

    from actors.engines import HFEngine
    from learner.batch import Sample, collate
    from learner.step_model import PlainTorchModel, WrappedModelStep
    from models.families import family_of_model, image_token_id
    from models.policy import PolicyWithValue, load_policy
    from models.tokenizer import banned_token_ids

    path = checkpoints[family]
    prompt, image = _prompt_and_image(path)
    engine = HFEngine(path, 0.2, 16, seed=0)
    gens = engine.generate([prompt, prompt], [image, image])  # a batch: left padding must not leak into ids
    vlm, processor, value_head = load_policy(path)
    module = PolicyWithValue(vlm, value_head)
    banned = torch.tensor(banned_token_ids(processor.tokenizer))
    step = WrappedModelStep(PlainTorchModel(module, None, 1, 1.0), None, torch.device("cpu"), banned, 0.2, 0.5)
    samples = [Sample.probe(g.prompt_ids, g.response_ids, Image.fromarray(image)) for g in gens]
    batch = collate(
        samples,
        processor.image_processor,
        processor.tokenizer.pad_token_id,
        family_of_model(vlm),
        image_token_id(vlm.config),
    )
    step.eval_mode()
    with torch.no_grad():
        _, _, token_logp = step.score(batch)
    for b, gen in enumerate(gens):
        assert len(gen.response_ids) > 0
        np.testing.assert_allclose(gen.logprobs, token_logp[b, : len(gen.response_ids)].numpy(), atol=FP32_TOL)
