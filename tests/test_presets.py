"""contracts/presets.py: every preset validates, the tyro CLI picks one and overrides it, task presets."""

from __future__ import annotations

import pytest

from contracts.config import Config
from contracts.presets import PRESETS, numberline, parse_cli, tiny
from contracts.validation import ConfigError


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
    from envs.registry import task_config

    cfg = task_config([task])[0]  # what `make train TASK=<task>` runs
    assert cfg.env.task == task and cfg.model.path == f"checkpoints/{task}-sft"
    tiny_cfg = task_config(["tiny", "--env.task", task])[0]
    assert tiny_cfg.env.task == task and tiny_cfg.model.path == f"checkpoints/{task}-sft"  # the task's checkpoint
    assert parse_cli(["tiny", "--env.task", task]).env.task == task


def test_parse_cli_rejects_bad_choice():
    with pytest.raises(SystemExit):
        parse_cli(["tiny", "--rollout.backend", "tgi"])


def test_parse_cli_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        parse_cli(["tiny", "--ppo.gamma", "2", "--ppo.clip", "0", "--rollout.max-new-tokens", "0"])
    assert [p.split(":")[0] for p in err.value.problems] == [
        "--rollout.max-new-tokens 0",
        "--ppo.gamma 2",
        "--ppo.clip 0",
    ]


def test_bool_fields_are_flags():
    """tyro makes bools into flag pairs (README: `--run.dashboard`, `--env.no-cot`)."""
    assert parse_cli(["tiny", "--run.dashboard"]).run.dashboard is True
    assert parse_cli(["tiny", "--run.dashboard", "--run.no-dashboard"]).run.dashboard is False
    assert parse_cli(["tiny", "--env.no-cot"]).env.cot is False
