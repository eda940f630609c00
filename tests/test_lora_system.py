"""LoRA through the whole system (slow: Ray, vLLM, 2 DeepSpeed ranks), on the embedded model and every tiny
family: a LoRA update, an adapter push whose engine log-probs equal the learner's (adapter applied), a
same-version re-push that leaves no stale prefix cache, a wrong adapter caught by the engine-side probe, resume
with LoRA giving the same next update as an uninterrupted learner, and the driver end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from contracts.config import LoRAConfig
from contracts.presets import tiny
from models.families import FAMILIES

pytestmark = pytest.mark.slow

FP32_TOL = 1e-4  # as tests/test_real_vlms.py: vLLM and the HF forward agree to ~1e-6 in fp32
R8 = LoRAConfig(rank=8, dropout=0.0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model_path):
    from models.tiny_families import build

    paths = {name: str(build(name, tmp_path_factory.mktemp(name))) for name in FAMILIES}
    return paths | {"embedded": tiny_model_path}


def _lora_cfg(world_size: int = 2, zero_stage: int = 2):
    cfg = tiny()
    cfg.model.lora = R8
    cfg.learner.world_size, cfg.learner.zero_stage = world_size, zero_stage
    cfg.ppo.lr, cfg.ppo.epochs = 1e-2, 2  # B starts at 0: a tiny LoRA update needs a large step to show
    cfg.ppo.value_warmup_updates = 0  # the update must move the policy
    cfg.rollout.max_restarts = 1
    return cfg


def _prompt_and_image(model_path: str):
    from transformers import AutoProcessor

    from envs import make_env
    from envs.prompts import task_prompt
    from models.families import chat_format

    obs, info = make_env("numberline").reset(seed=123)
    return chat_format(AutoProcessor.from_pretrained(model_path))(task_prompt("numberline", info)), obs


def _gap(system, image, gen) -> float:
    """Max |engine − learner| processed log-prob of `gen`'s tokens (every rank joins: ZeRO-3 gathers)."""
    import ray
    from PIL import Image

    calls = [l.logprobs.remote(gen.prompt_ids, gen.response_ids, Image.fromarray(image)) for l in system.learners]
    return float(np.max(np.abs(np.array(gen.logprobs) - np.array(ray.get(calls)[0]))))


def _update(system, cfg, version: int) -> list[dict]:
    import ray

    shards = None
    while shards is None:
        ray.get(system.actors[0].collect.remote())
        shards = ray.get(system.store.take.remote(cfg.ppo.steps_per_update, version, cfg.learner.world_size))
    return ray.get([l.update.remote(s, version) for l, s in zip(system.learners, shards)])


def _load(system) -> dict:
    """Run the pool until the pushed loads are done; the last load's metrics."""
    system.pool.drain()
    return system.pool.stats()


def _weight_bytes(path: str) -> int:
    from models.families import load_vlm

    return sum(p.numel() * 4 for p in load_vlm(path).parameters())


@pytest.mark.parametrize(("family", "zero_stage"), [*((f, 2) for f in sorted(FAMILIES)), ("embedded", 3)])
def test_lora_update_push_parity_and_same_version_repush(ray_cluster, checkpoints, family, zero_stage):
    import ray

    from cluster.launch import launch, push_weights, shutdown

    path, cfg = checkpoints[family], _lora_cfg(zero_stage=zero_stage)
    system = launch(cfg, path)
    prompt, image = _prompt_and_image(path)
    first = ray.get(system.actors[0].score.remote(prompt, image))
    before = _gap(system, image, first)
    memory = ray.get(system.learners[0].memory.remote())
    metrics = _update(system, cfg, 0)
    assert all(np.isfinite(m["learner/policy_loss"]) for m in metrics)
    pushed = push_weights(system, 1)
    verified = _load(system)
    after = _gap(system, image, ray.get(system.actors[0].score.remote(prompt, image)))
    moved = _gap(system, image, first)  # the SFT engine's log-probs against the LoRA-updated learner
    # The same version again with other weights (a second update): the engine must serve the new ones, not a
    # prefix cached under the first push (the prompt is longer than a KV block: its first block is cached).
    _update(system, cfg, 1)
    push_weights(system, 1)
    _load(system)
    again = _gap(system, image, ray.get(system.actors[0].score.remote(prompt, image)))
    shutdown(system)
    full = _weight_bytes(path)
    print(
        f"\n{family} ZeRO-{zero_stage}: gap before {before:.2e}, after push {after:.2e}, re-push {again:.2e}, moved "
        f"{moved:.2e}; push {pushed['learner/push_bytes'] / 1e3:.0f} kB of {full / 1e3:.0f} kB "
        f"(merged {pushed['learner/push_merged_bytes'] / 1e3:.0f} kB), probe gap {verified['rollout/probe_gap']:.1e} "
        f"in {verified['rollout/weight_verify_s'] * 1e3:.0f} ms; trainable {memory['learner/trainable_params']:.0f}"
    )
    assert before <= FP32_TOL and after <= FP32_TOL and again <= FP32_TOL
    assert moved > 10 * FP32_TOL, f"the update barely moved the policy ({moved:.2e})"
    assert verified["rollout/weight_mismatches"] == 0 and verified["rollout/probe_gap"] < 1e-4
    limit = 0.25 if family not in ("llava", "embedded") else 0.4  # LLaVA-1.5 style sends its tower merged
    assert pushed["learner/push_bytes"] < limit * full


def test_lora_bf16_push_is_verified(ray_cluster, checkpoints):
    """bf16 (DeepSpeed's bf16 module with fp32 master adapters; vLLM bf16 with its LoRA in bf16): the probe passes
    at its bf16 tolerance, and the engine's log-probs stay within test_real_vlms.py's bf16 bound."""
    import ray

    from cluster.launch import launch, push_weights, shutdown

    path, cfg = checkpoints["llava_next"], _lora_cfg()
    cfg.model.dtype = "bfloat16"
    system = launch(cfg, path)
    prompt, image = _prompt_and_image(path)
    _update(system, cfg, 0)
    push_weights(system, 1)
    verified = _load(system)
    after = _gap(system, image, ray.get(system.actors[0].score.remote(prompt, image)))
    shutdown(system)
    print(f"\nbf16 llava_next LoRA: gap after push {after:.2e}, probe gap {verified['rollout/probe_gap']:.2e}")
    assert verified["rollout/weight_mismatches"] == 0 and verified["rollout/probe_gap"] < 5e-2
    assert after < 0.05


def test_wrong_adapter_is_caught_by_the_engine_and_never_trained_on(ray_cluster, checkpoints):
    import ray

    from cluster.launch import launch, push_weights, shutdown
    from models import lora
    from models.weight_sync import WeightsPayload

    cfg = _lora_cfg()
    system = launch(cfg, checkpoints["llava_next"])
    _update(system, cfg, 0)
    push_weights(system, 1)
    _load(system)
    good = ray.get(system.learners[0].export_weights.remote(2))  # ZeRO-2: rank 0 alone exports
    # Every adapter's B scaled: a plausible adapter of the right shapes and a valid checksum, but not the policy
    # the learner's probe was scored under.
    arrays = [a * 3.0 if n.endswith(".lora_B.weight") else a for n, a in zip(good.names, good.arrays)]
    bad = WeightsPayload.build(2, list(zip(good.names, arrays)), good.adapter, good.merged, good.probe)
    assert lora.is_adapter_name(bad.names[0])
    system.pool.push(ray.put(bad), 2)
    with pytest.raises(RuntimeError, match="(?s)restarted more than 1 times.*differ from the learner"):
        system.pool.drain()  # the actor, then its replacement (which loads the same payload), refuse it
    counters = system.pool.counters
    table = ray.get(system.store.export.remote())
    shutdown(system)
    assert counters["weight_mismatches"] == 2 and counters["actor_restarts"] == 2
    versions = set(table.column("policy_version").to_pylist()) if table is not None else set()
    assert versions <= {0, 1}  # nothing collected under the wrong adapter


def _learner(cfg, model_path):
    import ray

    from cluster.launch import free_port
    from learner.learner import LearnerWorker

    args = (0, 1, free_port(), model_path, cfg.ppo, cfg.learner, cfg.run.total_updates, cfg.rollout.temperature)
    return ray.remote(num_cpus=1)(LearnerWorker).remote(*args, lora_cfg=cfg.model.lora)


def _adapter(learner, version: int) -> dict[str, np.ndarray]:
    import ray

    payload = ray.get(learner.export_weights.remote(version))
    return dict(zip(payload.names, payload.arrays))


def test_resume_with_lora_gives_the_same_next_update(ray_cluster, checkpoints, tmp_path):
    import ray

    from cluster.launch import launch, shutdown
    from models import lora

    cfg = _lora_cfg(world_size=1)
    cfg.model.lora = LoRAConfig(rank=8, dropout=0.05)  # dropout draws from the RNG the checkpoint restores
    path = checkpoints["embedded"]
    system = launch(cfg, path)
    shards = []
    while len(shards) < 2:
        ray.get(system.actors[0].collect.remote())
        if (taken := ray.get(system.store.take.remote(cfg.ppo.steps_per_update, 0, 1))) is not None:
            shards.append(taken[0])
    shutdown(system)

    straight = _learner(cfg, path)
    ray.get(straight.update.remote(shards[0], 0))
    ray.get(straight.update.remote(shards[1], 1))
    expected = _adapter(straight, 2)
    first = _learner(cfg, path)
    ray.get(first.update.remote(shards[0], 0))
    ray.get(first.save_checkpoint.remote(str(tmp_path / "ckpt")))
    ray.kill(first)
    model = tmp_path / "ckpt" / "model"
    assert lora.is_lora_checkpoint(model) and not list(model.glob("*.safetensors"))  # adapter, not the base
    resumed = _learner(cfg, str(model))
    assert ray.get(resumed.load_checkpoint.remote(str(tmp_path / "ckpt"))) == 1
    ray.get(resumed.update.remote(shards[1], 1))
    got = _adapter(resumed, 2)
    assert max(float(np.abs(a).max()) for n, a in expected.items() if n.endswith("lora_B.weight")) > 1e-3
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=name)
    for handle in (straight, resumed):
        ray.kill(handle)


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_driver_trains_lora_end_to_end_with_adapter_sized_pushes(ray_cluster, checkpoints, family, tmp_path):
    from cluster.train import main
    from models.families import load_vlm

    path = checkpoints[family]
    argv = ["tiny", "--model.path", path, "--run.out-dir", str(tmp_path), "--run.name", family, "--model.lora.rank"]
    argv += ["8", "--model.no-build-if-missing", "--run.checkpoint-every", "1"]
    result = main([*argv, "--run.total-updates", "2"])
    assert result["updates"] == 2 and result["policy_version"] == 2
    if family == "llava_next":  # resume from the LoRA checkpoint (adapter + optimizer, the base by path)
        resumed = main([*argv, "--run.total-updates", "3", "--run.resume", str(tmp_path / family)])
        assert resumed["resumed_from"].endswith("update_000002") and resumed["policy_version"] == 3
    rows = [json.loads(line) for line in (tmp_path / family / "history.jsonl").read_text().splitlines()]
    pushes = [r["learner/push_bytes"] for r in rows if "learner/push_bytes" in r]
    full = _weight_bytes(path)
    assert len(pushes) >= 2 and all(b < full / 4 for b in pushes), (pushes, full)
    assert all(r.get("rollout/weight_mismatches", 0) == 0 for r in rows)
    merged = tmp_path / family / "checkpoint"  # the final checkpoint: a plain model, the adapter merged in
    assert json.loads((merged / "config.json").read_text())["model_type"] == family
    assert not (merged / "adapter").exists() and load_vlm(merged).config.model_type == family
    # vLLM loads it as a plain model too (no LoRA), and serves what transformers computes from it.
    from actors.engines import HFEngine, VLLMEngine
    from models.weight_sync import probe_inputs

    hf = HFEngine(str(merged), 0.2, 8)
    text, image, ids, _ = probe_inputs(hf.processor)
    hf_ids, hf_logprobs = hf.score_probe(text, image)
    vllm_ids, vllm_logprobs = VLLMEngine(str(merged), 0.2, 8).score_probe(text, image)
    assert vllm_ids == hf_ids == ids
    assert np.max(np.abs(np.array(vllm_logprobs) - np.array(hf_logprobs))) < FP32_TOL
