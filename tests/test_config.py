"""contracts/config.py: presets validate, tyro CLI overrides, validate() errors, JSON save."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contracts.config import PRESETS, Config, numberline, parse_cli, tiny


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    _, cfg = PRESETS[name]
    assert isinstance(cfg, Config)
    assert cfg.validate() is cfg


def test_tiny_preset_values():
    cfg = tiny()
    assert cfg.env.envs_per_actor == 4 and cfg.ppo.steps_per_update == 16 and cfg.run.total_updates == 2
    assert numberline().ppo.steps_per_update == Config().ppo.steps_per_update != 16  # tiny left defaults alone


def test_parse_cli_overrides():
    cfg = parse_cli(["tiny", "--ppo.lr", "0.001", "--learner.world-size", "2"])
    assert cfg.ppo.lr == pytest.approx(0.001)
    assert cfg.learner.world_size == 2
    # untouched fields keep the preset's values
    assert cfg.ppo.steps_per_update == 16 and cfg.env.envs_per_actor == 4 and cfg.learner.zero_stage == 2


def test_parse_cli_preset_only_and_no_leak_between_calls():
    default_lr = tiny().ppo.lr
    assert default_lr != 0.5
    backend = tiny().rollout.backend
    other = "hf" if backend == "vllm" else "vllm"
    assert parse_cli(["tiny", "--ppo.lr", "0.5", "--rollout.backend", other]).rollout.backend == other
    cfg = parse_cli(["tiny"])
    assert cfg.ppo.lr == default_lr
    assert cfg.rollout.backend == backend
    assert PRESETS["tiny"][1].ppo.lr == default_lr
    nl = parse_cli(["numberline", "--run.mode", "sync"])
    assert nl.run.mode == "sync" and nl.ppo.steps_per_update == numberline().ppo.steps_per_update


@pytest.mark.parametrize("task", ["ezpoints", "points24", "blackjack"])
def test_card_task_presets_from_the_cli(task):
    cfg = parse_cli([task])  # what `make train TASK=<task>` runs
    assert cfg.env.task == task and cfg.model.path == f"checkpoints/{task}-sft"
    assert parse_cli(["tiny", "--env.task", task]).env.task == task


def test_parse_cli_rejects_bad_choice():
    with pytest.raises(SystemExit):
        parse_cli(["tiny", "--rollout.backend", "tgi"])


def test_bad_zero_stage_raises_clear_error():
    cfg = tiny()
    cfg.learner.zero_stage = 4
    with pytest.raises(ValueError, match=r"zero_stage must be 1, 2 or 3, not 4"):
        cfg.validate()
    with pytest.raises(ValueError, match="zero_stage"):
        parse_cli(["tiny", "--learner.zero-stage", "4"])


def test_validate_collects_every_problem():
    cfg = tiny()
    cfg.learner.zero_stage = 0
    cfg.rollout.temperature = 0.0
    cfg.sft.action_noise = 1.5
    with pytest.raises(ValueError) as err:
        cfg.validate()
    msg = str(err.value)
    assert "zero_stage" in msg and "temperature" in msg and "action_noise" in msg


def test_validate_world_size_needs_enough_steps():
    cfg = tiny()
    most = cfg.ppo.steps_per_update // cfg.ppo.micro_batch  # every rank needs one micro-batch
    cfg.learner.world_size = most
    cfg.validate()
    cfg.learner.world_size = most + 1
    with pytest.raises(ValueError, match="steps_per_update"):
        cfg.validate()


def test_save_roundtrip(tmp_path):
    cfg = parse_cli(["tiny", "--ppo.lr", "0.001", "--learner.world-size", "2"])
    path = tmp_path / "config.json"
    cfg.save(path)
    data = json.loads(path.read_text())
    assert data == dataclasses.asdict(cfg)
    assert data["ppo"]["lr"] == pytest.approx(0.001)
    assert data["learner"]["world_size"] == 2
    assert data["model"]["shape"]["image_size"] == 112  # nested dataclass inside a sub-config
    assert set(data) == {"env", "model", "sft", "rollout", "replay", "ppo", "learner", "run"}
