"""Checkpoints checked whole without Ray (every listed file at its size and readable, the value head and replay
file included; a damaged newest checkpoint falls back to the previous one), then checkpoint and resume in the
real system: a learner restored from a checkpoint continues exactly where it stopped (same weights after the
next update as an uninterrupted learner), a resumed run continues at the same policy version and counters,
and a corrupt or mismatched checkpoint stops with one clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from contracts.presets import tiny


def fake_run(tmp_path, model_path, updates=(2, 4)) -> list:
    """Checkpoints in the real format (no Ray): a model with its value head, a rank's state, replay, state.json."""
    import pyarrow as pa
    import torch

    from cluster.run_checkpoints import REPLAY_FILE, file_sizes, fingerprint
    from contracts.schema import StepRecord, encode_png, to_record_batch
    from learner.state_files import save_state, write_state_json

    image = encode_png(np.zeros((2, 2, 3), np.uint8))
    ids = dict(episode_id="0-0-0", step=0, actor_id=0, env_index=0, seed=7, policy_version=1)
    tokens = dict(prompt_ids=[1, 2], image_png=image, response_ids=[3], behaviour_logprobs=[-0.1])
    answer = dict(response_text="x", action=1, action_valid=True, parse_status="ok")
    step = StepRecord(**ids, **tokens, **answer, reward=1.0, terminated=True, truncated=False)
    paths = []
    for update in updates:
        path = tmp_path / "run" / "checkpoints" / f"update_{update:06d}"
        shutil.copytree(model_path, path / "model")
        save_state(path, "learner_rank0", {"exp_avg": torch.ones(3)}, {"update": update})
        table = pa.Table.from_batches([to_record_batch([step])])
        with pa.OSFile(str(path / REPLAY_FILE), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        write_state_json(path, {"run": fingerprint(tiny()), "update": update, "files": file_sizes(path)})
        paths.append(path)
    return paths


def truncate(path, keep: int = 40) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("damage", ["replay.arrow", "model/value_head/value_head.safetensors", "model/config.json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_model_path, damage, capsys):
    from cluster.run_checkpoints import load

    older, newest = fake_run(tmp_path, tiny_model_path)
    assert load(str(tmp_path / "run"), tiny())[0] == newest
    truncate(newest / damage)
    directory, state = load(str(tmp_path / "run"), tiny())
    assert directory == older and state["update"] == 2
    out = capsys.readouterr().out
    assert (
        f"checkpoint {newest} is damaged" in out and damage.split("/")[-1] in out and f"falling back to {older}" in out
    )


def test_an_empty_value_head_or_a_missing_file_is_caught(tmp_path, tiny_model_path):
    from safetensors.torch import save_file

    from cluster.run_checkpoints import check_whole
    from learner.state_files import CheckpointError

    (path,) = fake_run(tmp_path, tiny_model_path, updates=(2,))
    head = path / "model" / "value_head" / "value_head.safetensors"
    save_file({}, str(head))
    with pytest.raises(CheckpointError, match="value_head.safetensors"):  # by its size, then by its content
        check_whole(path, tiny())
    (path / "model" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is damaged: missing"):
        check_whole(path, tiny())


def test_a_damaged_checkpoint_asked_for_by_name_names_the_previous_one(tmp_path, tiny_model_path):
    from cluster.run_checkpoints import load
    from learner.state_files import CheckpointError

    older, newest = fake_run(tmp_path, tiny_model_path)
    truncate(newest / "learner_rank0.safetensors")
    with pytest.raises(CheckpointError, match=f"learner_rank0.safetensors.*--run.resume {older}"):
        load(str(newest), tiny())
    truncate(older / "replay.arrow")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*learner_rank0.*replay.arrow"):
        load(str(tmp_path / "run"), tiny())


def test_a_bf16_learner_refuses_an_fp32_learners_checkpoint(tmp_path, tiny_model_path):
    from cluster.run_checkpoints import load
    from learner.state_files import CheckpointMismatch

    _, newest = fake_run(tmp_path, tiny_model_path)
    cfg = tiny()
    cfg.learner.dtype = "bfloat16"  # the same for model.dtype bfloat16 (the learner's dtype is the one that counts)
    with pytest.raises(CheckpointMismatch, match="learner_dtype: checkpoint None vs run 'bfloat16'"):
        load(str(newest), cfg)
    cfg.learner.dtype, cfg.model.dtype = "float32", "bfloat16"  # a bf16 vLLM beside an fp32 learner fits
    assert load(str(newest), cfg)[0] == newest


def _learner(cfg, model_path):
    import ray

    from cluster.launch import free_port
    from learner.learner import LearnerWorker

    args = (0, 1, free_port(), model_path, cfg.ppo, cfg.learner, cfg.run.total_updates, cfg.rollout.temperature)
    return ray.remote(num_cpus=1)(LearnerWorker).remote(*args)


def _weights(learner):
    import ray

    payload = ray.get(learner.export_weights.remote(0))
    return dict(zip(payload.names, payload.arrays))


@pytest.mark.slow
def test_restored_learner_matches_an_uninterrupted_one(ray_cluster, tiny_model_path, tmp_path):
    import ray

    from cluster.launch import launch, shutdown

    cfg = tiny()
    cfg.ppo.value_warmup_updates, cfg.ppo.lr, cfg.ppo.epochs = 0, 1e-3, 2  # the trunk and Adam state move
    system = launch(cfg, tiny_model_path)
    shards = []
    while len(shards) < 2:
        ray.get(system.actors[0].collect.remote())
        if (taken := ray.get(system.store.take.remote(cfg.ppo.steps_per_update, 0, 1))) is not None:
            shards.append(taken[0])
    shutdown(system)

    straight = _learner(cfg, tiny_model_path)
    ray.get([straight.update.remote(shards[0], 0)])
    ray.get([straight.update.remote(shards[1], 1)])
    expected = _weights(straight)

    first = _learner(cfg, tiny_model_path)
    ray.get(first.update.remote(shards[0], 0))
    ray.get(first.save_checkpoint.remote(str(tmp_path / "ckpt")))
    ray.kill(first)
    resumed = _learner(cfg, str(tmp_path / "ckpt" / "model"))
    assert ray.get(resumed.load_checkpoint.remote(str(tmp_path / "ckpt"))) == 1
    ray.get(resumed.update.remote(shards[1], 1))
    got = _weights(resumed)
    moved = max(float(np.abs(expected[k] - _weights_at_start(tiny_model_path)[k]).max()) for k in expected)
    assert moved > 1e-4  # the updates really changed the weights
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6, err_msg=name)
    for handle in (straight, resumed):
        ray.kill(handle)


def _weights_at_start(model_path):
    from models.families import FAMILIES
    from models.policy import load_policy

    vllm_key = FAMILIES["llava"].vllm_key

    vlm, _, _ = load_policy(model_path)
    return {vllm_key(n): p.detach().numpy() for n, p in vlm.named_parameters()}


@pytest.mark.slow
def test_resume_continues_at_the_same_policy_version(ray_cluster, tiny_model_path, tmp_path):
    from cluster.train import main

    base = ["tiny", "--model.path", tiny_model_path, "--run.out-dir", str(tmp_path), "--run.checkpoint-every", "1"]
    first = main([*base, "--run.name", "r", "--run.total-updates", "2"])
    assert first["policy_version"] == 2
    checkpoints = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert checkpoints == ["update_000001", "update_000002"]
    state = json.loads((tmp_path / "r" / "checkpoints" / "update_000002" / "state.json").read_text())
    assert state["version"] == 2 and state["update"] == 2 and state["total_steps"] > 0

    resumed = main([*base, "--run.total-updates", "3", "--run.resume", str(tmp_path / "r")])
    assert resumed["resumed_from"].endswith("update_000002")
    print(f"\nresume: {resumed['resume_s']} s from the command to a system ready to train")
    assert resumed["updates"] == 3 and resumed["policy_version"] == 3
    assert resumed["sft_success"] == first["sft_success"]  # carried over, not re-measured
    rows = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    after = [r for r in rows if r["update"] == 3 and "learner/policy_version" in r]
    assert after and after[0]["learner/policy_version"] == 3
    assert after[0]["rollout/total_env_steps"] > state["total_steps"]  # counters continue, not restart


@pytest.mark.slow
def test_bad_checkpoints_stop_with_one_clear_error(ray_cluster, tiny_model_path, tmp_path):
    from cluster.train import main
    from learner.state_files import CheckpointError

    base = ["tiny", "--model.path", tiny_model_path, "--run.out-dir", str(tmp_path), "--run.checkpoint-every", "1"]
    main([*base, "--run.name", "src", "--run.total-updates", "1", "--run.eval-episodes", "1"])
    ckpt = tmp_path / "src" / "checkpoints" / "update_000001"
    with pytest.raises(CheckpointError, match="zero_stage: checkpoint 2 vs run 3"):
        main([*base, "--learner.zero-stage", "3", "--run.resume", str(ckpt)])
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "learner_rank0.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="learner_rank0.safetensors"):
        main([*base, "--run.resume", str(broken)])
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        main([*base, "--run.resume", str(tmp_path / "nothing-here")])
