"""ALFWorld env: rewards, episode end, seeds -> splits, the image, and the official-data path."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

pytest.importorskip("alfworld")

from envs.alfworld.catalogue import GameCatalogue, official_game_files  # noqa: E402
from envs.alfworld.env import EVAL_SEED_BASE, AlfworldEnv  # noqa: E402


@pytest.fixture(scope="module")
def env(alfworld_cache):
    return AlfworldEnv()


def test_oracle_play_wins_with_the_papers_reward(env):
    _, info = env.reset(seed=EVAL_SEED_BASE + 0)
    rewards = []
    for _ in range(50):
        _, r, terminated, truncated, info = env.step(info["expert_command"])
        rewards.append(r)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["won"]
    assert rewards[-1] == pytest.approx(50.0 + 1.0)  # 50 * won + all goal conditions met
    assert all(0.0 <= r <= 1.0 for r in rewards[:-1])  # goal progress only, no penalty: every command legal


def test_illegal_command_costs_one_and_changes_nothing(env):
    _, info = env.reset(seed=EVAL_SEED_BASE + 1)
    before = info["admissible_commands"]
    _, r, terminated, truncated, info = env.step("fly to the moon")
    assert r == pytest.approx(info["goal_progress"] - 1.0) and not info["legal"]
    assert info["feedback"] == "Nothing happens." and info["admissible_commands"] == before
    assert not terminated and not truncated


def test_truncated_after_max_steps(alfworld_cache):
    env = AlfworldEnv(max_steps=3)
    env.reset(seed=EVAL_SEED_BASE + 2)
    ends = [env.step("look")[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


def test_goal_progress_counts_conditions(env):
    """Clean-and-place: cleaning meets one of two conditions before the object is placed."""
    _, info = env.reset(seed=EVAL_SEED_BASE + 2)  # index 2: pick_clean_then_place_in_recep
    assert info["task_type"] == "pick_clean_then_place_in_recep"
    seen = []
    while not info["won"]:
        _, r, _, _, info = env.step(info["expert_command"])
        seen.append(info["goal_progress"])
    assert 0.5 in seen and seen[-1] == 1.0 and seen[0] == 0.0


def test_seeds_pick_splits(env):
    env.reset(seed=EVAL_SEED_BASE + 3)
    unseen = env.traj["scene"]["scene_num"]
    env.reset(seed=12345)
    train = env.traj["scene"]["scene_num"]
    from envs.alfworld.games import split_scenes

    assert unseen in split_scenes("unseen") and train in split_scenes("train")


def test_image_shows_the_agent_and_what_is_held(env):
    obs, info = env.reset(seed=EVAL_SEED_BASE + 0)
    assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
    red = (obs[..., 0] > 200) & (obs[..., 1] < 60) & (obs[..., 2] < 60)
    assert red.any()  # the agent marker
    bar_empty = obs[-30:].copy()
    while not info["held"]:
        obs, _, _, _, info = env.step(info["expert_command"])
    assert not np.array_equal(obs[-30:], bar_empty)  # the held object's name is drawn in the bottom bar


def _official_fixture(root: pathlib.Path, generated: GameCatalogue) -> None:
    """An ALFWORLD_DATA-style tree built from generated games: one valid game per split, plus the kinds of
    folder alfworld's loader must skip (movable, unsolvable, missing game file)."""
    for sub in ("train", "valid_unseen", "valid_seen"):
        src = pathlib.Path(generated.game_file(0)).parent
        dst = root / "json_2.1.1" / sub / src.parent.name / src.name
        shutil.copytree(src, dst)
        skip = root / "json_2.1.1" / sub / "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-1" / "trial_1"
        shutil.copytree(src, skip)
        unsolvable = root / "json_2.1.1" / sub / "unsolvable-1" / "trial_1"
        shutil.copytree(src, unsolvable)
        game = json.loads((unsolvable / "game.tw-pddl").read_text())
        (unsolvable / "game.tw-pddl").write_text(json.dumps({**game, "solvable": False}))
        missing = root / "json_2.1.1" / sub / "missing-1" / "trial_1"
        shutil.copytree(src, missing)
        (missing / "game.tw-pddl").unlink()


def test_official_data_path_uses_alfworlds_loading_rules(alfworld_cache, tmp_path):
    _official_fixture(tmp_path, GameCatalogue("unseen", data_root=""))
    for split in ("train", "seen", "unseen"):
        files = official_game_files(str(tmp_path), split)
        assert len(files) == 1 and "movable" not in files[0] and "unsolvable" not in files[0]
    env = AlfworldEnv(data_root=str(tmp_path))
    _, info = env.reset(seed=EVAL_SEED_BASE + 7)
    assert env.gamefile.startswith(str(tmp_path / "json_2.1.1" / "valid_unseen"))
    while not info["won"]:
        _, _, terminated, _, info = env.step(info["expert_command"])
    assert terminated


def test_official_data_missing_games_is_a_clear_error(tmp_path):
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no solvable games"):
        GameCatalogue("train", data_root=str(tmp_path))


def test_task_text_has_no_trailing_period(env):
    """The prompt writes "Your task is to {task}." itself (the first run's prompts read "countertop..")."""
    _, info = env.reset(seed=EVAL_SEED_BASE + 4)
    assert info["task"] and not info["task"].endswith(".") and info["task"] in info["feedback"]
