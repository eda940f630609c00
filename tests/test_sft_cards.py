"""learner/sft.py on the card tasks: demonstrations, perception labels, tokenizer corpus, a tiny SFT run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from contracts.config import PRESETS, ModelConfig, SFTConfig, TinyVLMShape
from envs import TASKS, make_env
from envs.experts import EXPERTS, blackjack_expert, ezpoints_expert, points24_expert
from envs.parsing import parse_action
from envs.prompts import chat_prompt, task_prompt
from learner.sft import (
    SFT_SEED_BASE,
    demonstrations,
    perception_classes,
    perception_labels,
    tokenizer_corpus,
    train_sft,
)
from models.policy import VALUE_HEAD_FILE, load_policy
from models.tokenizer import build_tokenizer

CARD_TASKS = ("ezpoints", "points24", "blackjack")
EXPERT = {"ezpoints": ezpoints_expert, "points24": points24_expert, "blackjack": blackjack_expert}


def written_actions(task: str, demos, noise: float, seed: int) -> list[int]:
    """The actions `demonstrations` chose: the same noisy expert on the same infos with the same generator."""
    rng = np.random.default_rng(seed)
    return [EXPERTS[task].noisy_action(info, noise, rng) for *_, info in demos]


@pytest.mark.parametrize("task", CARD_TASKS)
@pytest.mark.parametrize("cot", [True, False])
def test_demonstrations_parse_back_to_the_action_written(task, cot):
    spec, noise = TASKS[task], 0.45
    demos = demonstrations(task, 80, noise, seed=1, cot=cot)
    assert len(demos) == 80
    actions, rng = written_actions(task, demos, noise, 1), np.random.default_rng(0)
    for (_, prompt, response, info), action in zip(demos, actions):
        parsed = parse_action(response, spec.action_names, rng, spec.ten_rule)
        assert parsed.valid and parsed.reason == "ok", response
        assert parsed.action == action
        assert prompt == chat_prompt(task_prompt(task, info, cot))  # the prompt of the state the image shows
        if cot:
            json.loads(response)  # CoT answers are valid JSON
    wrong = np.mean([a != EXPERT[task](info) for a, (*_, info) in zip(actions, demos)])
    assert 0.2 < wrong < 0.7  # noise 0.45 is the error rate


@pytest.mark.parametrize("task", CARD_TASKS)
def test_demonstrations_replay_in_the_env(task):
    """Demonstrations are consecutive env steps of episodes k = 0, 1, ... reset with SFT seeds base + k."""
    seed = 2
    demos = demonstrations(task, 40, 0.3, seed=seed)
    actions, env, episode, done = written_actions(task, demos, 0.3, seed), make_env(task), 0, True
    for (img, prompt, _, info), action in zip(demos, actions):
        if done:
            obs, expected = env.reset(seed=SFT_SEED_BASE + seed * 10**6 + episode)
            episode += 1
            if task != "blackjack":  # each episode's first prompt shows its own, empty formula
                assert expected["formula"] == [] and "the current formula: . " in prompt
        assert expected == info
        np.testing.assert_array_equal(img, obs)
        obs, _, terminated, truncated, expected = env.step(action)
        done = terminated or truncated
    assert episode >= 2


@pytest.mark.parametrize("task", CARD_TASKS)
def test_perception_labels_lie_in_their_classes(task):
    classes = perception_classes(task)
    labels = [perception_labels(task, info) for *_, info in demonstrations(task, 300, 0.45, seed=0)]
    assert all(len(x) == len(classes) for x in labels)
    arr = np.array(labels)
    assert (arr >= 0).all() and (arr < np.array(classes)).all()
    assert len({tuple(x) for x in labels}) > 10  # the labels vary with the state


def test_perception_labels_read_the_cards():
    info = {"cards": [("A", "S"), ("10", "H"), ("K", "D"), ("7", "C")]}
    assert perception_labels("points24", info) == [0, 9, 12, 6]
    assert perception_labels("ezpoints", {"cards": info["cards"][1:3]}) == [9, 12]
    hand = [("2", "S"), ("A", "H"), ("3", "D"), ("4", "C"), ("5", "S")]
    bj = {"player_hand": hand, "dealer_hand": [("Q", "H"), ("9", "S")], "player_sum": 15}
    assert perception_labels("blackjack", bj) == [11, 1, 0, 2, 3, 15]  # the 5th card is off the canvas
    short = {"player_hand": hand[:2], "dealer_hand": [("A", "H"), ("9", "S")], "player_sum": 13}
    assert perception_labels("blackjack", short) == [0, 1, 0, 13, 13, 13]  # 13 = no card
    assert perception_classes("blackjack") == (13, 14, 14, 14, 14, 22)


@pytest.mark.parametrize("task", ["ezpoints", "blackjack", pytest.param("points24", marks=pytest.mark.slow)])
def test_task_tokenizer_covers_prompts_and_answers(task):
    corpus = tokenizer_corpus(task)
    assert corpus == tokenizer_corpus(task)  # seeded: the same tokenizer every time
    for cot in (True, False):
        assert chat_prompt(task_prompt(task, {"formula": []}, cot)) in corpus
    tokenizer = build_tokenizer(corpus, ModelConfig().shape.vocab_size)
    cap = PRESETS[task][1].rollout.max_new_tokens
    for cot in (True, False):
        for _, _, response, _ in demonstrations(task, 150, 1.0, seed=5, cot=cot):  # held-out seeds, near-random play
            ids = tokenizer(response, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids) == response
            assert len(ids) + 1 <= cap * 0.85  # + EOS, with room to spare under rollout.max_new_tokens


@pytest.mark.parametrize("task", ["ezpoints", "blackjack", pytest.param("points24", marks=pytest.mark.slow)])
def test_tiny_sft_run_saves_a_loadable_checkpoint(task, tmp_path):
    out = tmp_path / f"{task}-sft"
    model = ModelConfig(shape=TinyVLMShape(text_layers=1))
    info = train_sft(task, str(out), model, SFTConfig(samples=64, epochs=1, batch_size=16, vision_steps=20))
    for f in ("config.json", "model.safetensors", VALUE_HEAD_FILE, "policy_info.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "policy_info.json").read_text())
    assert saved["task"] == task and saved["sft_samples"] == 64 and saved["steps"] == 4
    assert np.isfinite(saved["final_loss"]) and 0.0 <= info["vision_pretrain_accuracy"] <= 1.0
    vlm, processor, head = load_policy(out)
    assert head is not None and vlm.config.text_config.num_hidden_layers == 1
    answer = demonstrations(task, 1, 0.0, seed=0)[0][2]
    tokenizer = processor.tokenizer
    assert tokenizer.decode(tokenizer(answer, add_special_tokens=False)["input_ids"]) == answer


def test_each_task_has_its_own_checkpoint_and_sft_defaults():
    paths = {PRESETS[t][1].model.path for t in ("numberline", *CARD_TASKS)}
    assert len(paths) == 4
    for task in CARD_TASKS:
        cfg = PRESETS[task][1]
        assert cfg.env.task == task and cfg.model.path == f"checkpoints/{task}-sft"
        assert cfg.ppo.cot_coef == 0.5
        # SFT at most ~10 min on 2 cores: NumberLine's 500 steps of 32 took ~5 min
        assert cfg.sft.samples * cfg.sft.epochs // cfg.sft.batch_size <= 500


def test_sft_main_uses_the_task_preset(monkeypatch, tmp_path):
    """`make sft TASK=x` builds what `make train TASK=x` would: the preset's SFT settings and checkpoint path."""
    from learner import sft

    calls = []
    monkeypatch.chdir(tmp_path)  # main creates the checkpoint's parent folder
    monkeypatch.setattr(sft, "train_sft", lambda *args, **kwargs: calls.append((args, kwargs)))
    sft.main(["--task", "points24"])
    (task, out, model, cfg), kwargs = calls[-1]
    preset = PRESETS["points24"][1]
    assert (task, out, model, cfg, kwargs) == ("points24", preset.model.path, preset.model, preset.sft, {"cot": True})
    sft.main(["--task", "blackjack", "--out", str(tmp_path / "bj"), "--samples", "64"])
    (task, out, _, cfg), _ = calls[-1]
    assert (task, out, cfg.samples, cfg.vision_steps) == ("blackjack", str(tmp_path / "bj"), 64, 1000)
    sft.main([])
    assert calls[-1][0][:2] == ("numberline", "checkpoints/numberline-sft") and calls[-1][0][3] == SFTConfig()
    # Every SFTConfig / TinyVLMShape field is a flag (tyro over the same dataclasses), the preset its default.
    sft.main(["--task", "ezpoints", "--lr", "5e-4", "--shape.text-layers", "1", "--out", str(tmp_path / "ez")])
    (task, out, model, cfg), _ = calls[-1]
    assert cfg == dataclasses.replace(PRESETS["ezpoints"][1].sft, lr=5e-4)
    assert model.shape == TinyVLMShape(text_layers=1) and model.path == out == str(tmp_path / "ez")
    with pytest.raises(SystemExit):
        sft.main(["--task", "no-such-task"])
