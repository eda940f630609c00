"""examples/shapesort: the example task outside envs/ (its env, expert, parser and success rule), and 2 PPO updates
of it end to end through `python -m cluster.train --env.task examples.shapesort.task:TASK` (slow)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from envs.registry import check_task, resolve_task, task_config
from examples.shapesort.env import BIN_OF, BINS, ITEMS, RGB, ShapeSortEnv
from examples.shapesort.task import TASK, all_sorted, best_bin, noisy_bin, parse
from learner.sft import demonstrations, perception_classes, perception_labels, tokenizer_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = "examples.shapesort.task:TASK"


def test_same_seed_same_episode(assert_same_seed_same_rollout):
    assert_same_seed_same_rollout(ShapeSortEnv, 7, [0, 1, 2, 2, 1, 0, 1, 1, 0])


def test_the_expert_sorts_every_item_and_the_rule_is_the_colour():
    env = ShapeSortEnv()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        rewards, done = [], False
        while not done:
            assert best_bin(info) == BIN_OF[info["color"]]
            _, reward, done, truncated, info = env.step(best_bin(info))
            rewards.append(reward)
            assert not truncated
        assert rewards == [1.0] * ITEMS and all_sorted(rewards, True, info) and info["sorted"] == ITEMS


def test_one_wrong_bin_is_a_lost_game():
    assert not all_sorted([1.0, 1.0, -1.0, 1.0], True, {}) and not all_sorted([1.0, 1.0], False, {})


def test_noise_is_the_error_rate_with_one_confuser_per_state():
    _, info = ShapeSortEnv().reset(seed=3)
    rng = np.random.default_rng(0)
    bins = [noisy_bin(info, 0.45, rng) for _ in range(2000)]
    assert set(bins) == {best_bin(info), (best_bin(info) + 1) % 3}
    assert 0.41 < np.mean([b != best_bin(info) for b in bins]) < 0.49


@pytest.mark.parametrize("cot", [True, False])
def test_answers_are_json_and_parse_to_their_action(cot):
    classes = perception_classes(REF)
    for *_, answer, info in demonstrations(REF, 80, 0.45, 0, cot):
        name = json.loads(answer)["action"]
        out = parse(answer, BINS, np.random.default_rng(0))
        assert out.valid and BINS[out.action] == name
        assert all(0 <= x < n for x, n in zip(perception_labels(REF, info), classes, strict=True))
        if cot:
            assert json.loads(answer)["item"] == f"{info['color']} {info['shape']}"


def test_the_parser_falls_back_to_a_random_invalid_action():
    rng = np.random.default_rng(0)
    for text in ("", "the left one", '"action": "up"', None):
        out = parse(text, BINS, rng)
        assert not out.valid and 0 <= out.action < len(BINS)
    assert parse('"action": "left" ... "action": "right"', BINS, rng).action == BINS.index("right")


def test_the_image_shows_the_item_and_the_prompt_does_not_tell():
    obs, info = ShapeSortEnv().reset(seed=1)
    assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
    assert tuple(obs[80, 150]) == RGB[info["color"]]  # the item's centre
    assert TASK.prompt(info, True) == TASK.prompt({}, True)  # the item is only in the image


def test_the_task_resolves_checks_and_brings_its_defaults():
    check_task(resolve_task(REF), 10**12)
    cfg, task = task_config(["--env.task", REF])
    assert task is TASK and cfg.model.path == "checkpoints/shapesort-sft" and cfg.sft.samples == 3000
    assert cfg.rollout.max_new_tokens == 80
    corpus = tokenizer_corpus(REF)
    assert corpus == tokenizer_corpus(REF) and TASK.prompt({}, False) in "".join(corpus)


@pytest.mark.slow
def test_shapesort_trains_two_updates_end_to_end(tmp_path):
    args = [sys.executable, "-m", "cluster.train", "tiny", "--env.task", REF, "--model.path", str(tmp_path / "sft")]
    args += ["--sft.samples", "128", "--model.shape.text-layers", "1", "--run.out-dir", str(tmp_path / "runs")]
    args += ["--run.name", "ss"]
    ray_dirs = set(pathlib.Path(tempfile.gettempdir()).glob("rl4vlm-ray-*"))
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    left = set(pathlib.Path(tempfile.gettempdir()).glob("rl4vlm-ray-*")) - ray_dirs
    assert not left and "Ray logs" not in done.stderr, left  # a clean run removes its Ray temp dir
    run = tmp_path / "runs" / "ss"
    result = json.loads((run / "eval.json").read_text())
    assert result["task"] == REF and result["updates"] == 2 and result["train_env_steps"] > 0
    assert 0.0 <= result["sft_success"] <= 1.0 and 0.0 <= result["final_success"] <= 1.0
    assert (run / "learning_curve.png").is_file()
    assert json.loads((run / "config.json").read_text())["env"]["task"] == REF
