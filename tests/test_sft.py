"""learner/sft.py: noisy-expert demonstrations, perception labels, tokenizer corpus and tiny end-to-end SFT
runs; NumberLine first (with the digests of its measured runs), then the card tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest

from contracts.config import ModelConfig, SFTConfig, TinyVLMShape
from contracts.presets import PRESETS, numberline
from envs import make_env, resolve_task
from envs.experts import blackjack_expert, ezpoints_expert, points24_expert
from envs.numberline import NumberLineEnv
from envs.parsing import parse_action
from envs.prompts import chat_prompt, task_prompt
from envs.registry import task_config
from envs.task import TaskError
from learner.sft import (
    SFT_SEED_BASE,
    demonstrations,
    frame_statistics,
    perception_classes,
    perception_labels,
    pretrain_vision,
    tokenizer_corpus,
    train_sft,
)
from models.policy import VALUE_HEAD_FILE, load_policy
from models.tokenizer import build_tokenizer

ACTIONS = ("-", "+")
STATE = re.compile(r'"current number": "(\d)", \n"target number": "(\d)"')


def state(response: str) -> tuple[int, int]:
    m = STATE.search(response)
    assert m, response
    return int(m.group(1)), int(m.group(2))


def action(response: str) -> int:
    parsed = parse_action(response, ACTIONS, np.random.default_rng(0))
    assert parsed.valid and parsed.reason == "ok", response
    return parsed.action


def episode_starts(demos) -> list[int]:
    """Indices where a new episode begins, from the states the responses read (a move changes current by 1)."""
    starts, prev = [0], None
    for i, (_, _, r, _) in enumerate(demos):
        c, t = state(r)
        if prev is not None:
            pc, pt, pa_ = prev
            expected = pc + (1 if pa_ == 1 else -1)
            moved = (c, t) == (min(max(expected, 0), 5), pt)
            finished = expected == pt
            if finished or not moved:
                starts.append(i)
        prev = (c, t, action(r))
    return starts


@pytest.fixture(scope="module")
def render():
    env = NumberLineEnv()

    def draw(c, t):
        env.current, env.target = c, t
        return env.render()

    return draw


def test_expert_demonstrations_read_the_image(render):
    demos = demonstrations("numberline", 50, noise=0.0, seed=0)
    assert len(demos) == 50
    prompt = chat_prompt(task_prompt("numberline", {}, True))
    for img, p, r, _ in demos:
        assert p == prompt
        c, t = state(r)
        assert c != t
        np.testing.assert_array_equal(img, render(c, t))  # the response reads the state the image shows
        assert action(r) == (1 if c < t else 0)  # expert: step toward the target
        assert f"The current number is {c} and the target number is {t}." in r


def test_demonstrations_deterministic_per_seed():
    a = demonstrations("numberline", 30, noise=0.5, seed=3)
    b = demonstrations("numberline", 30, noise=0.5, seed=3)
    c = demonstrations("numberline", 30, noise=0.5, seed=4)
    assert [d[2] for d in a] == [d[2] for d in b]
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert [d[2] for d in a] != [d[2] for d in c]


def test_full_noise_flips_every_action_from_the_same_start_states():
    good = demonstrations("numberline", 50, noise=0.0, seed=0)
    bad = demonstrations("numberline", 50, noise=1.0, seed=0)
    assert all(action(r) == (0 if state(r)[0] < state(r)[1] else 1) for _, _, r, _ in bad)  # always the wrong way
    # The anti-expert never reaches the target, so its episodes are all truncated at 10 steps; the expert's
    # last |current - target| steps. Episode k is reset with the same seed in both, so its first state is the same.
    bad_starts, good_starts = episode_starts(bad), episode_starts(good)
    assert bad_starts == [0, 10, 20, 30, 40]
    for i in range(len(good_starts) - 1):
        c, t = state(good[good_starts[i]][2])
        assert good_starts[i + 1] - good_starts[i] == abs(c - t)
    for g, b in zip(good_starts, bad_starts):
        assert state(good[g][2]) == state(bad[b][2])
        np.testing.assert_array_equal(good[g][0], bad[b][0])
        assert action(good[g][2]) == 1 - action(bad[b][2])


def test_noise_is_state_independent_rate():
    demos = demonstrations("numberline", 400, noise=0.3, seed=1)
    wrong = np.mean([action(r) != (1 if state(r)[0] < state(r)[1] else 0) for _, _, r, _ in demos])
    assert 0.2 < wrong < 0.4


def test_unknown_task_raises():
    with pytest.raises(TaskError, match="unknown task"):
        demonstrations("no-such-task", 1, 0.0, 0)
    with pytest.raises(TaskError):
        tokenizer_corpus("no-such-task")


def test_tiny_sft_run(tmp_path):
    out = tmp_path / "sft"
    info = train_sft("numberline", str(out), ModelConfig(), SFTConfig(samples=64, epochs=1, batch_size=16))
    for f in ("config.json", "model.safetensors", VALUE_HEAD_FILE, "policy_info.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "policy_info.json").read_text())
    assert saved["sft_samples"] == 64 and saved["steps"] == 4 and saved["task"] == "numberline"
    assert np.isfinite(saved["final_loss"]) and saved["final_loss"] > 0
    assert info["sft_samples"] == 64
    vlm, processor, head = load_policy(out)
    assert head is not None and vlm.config.text_config.hidden_size == ModelConfig().shape.text_hidden
    assert processor.tokenizer.decode(processor.tokenizer("3 is", add_special_tokens=False)["input_ids"]) == "3 is"


def test_demonstration_info_matches_the_answer():
    for _, _, response, info in demonstrations("numberline", 30, noise=0.0, seed=2):
        assert state(response) == (info["current"], info["target"])


def test_frame_statistics_are_exact_on_many_frames():
    # float32 accumulation over ~1e8 values saturates; the statistics must stay exact
    frames = [np.full((300, 300, 3), 255, np.uint8)] * 400 + [np.zeros((300, 300, 3), np.uint8)] * 100
    mean, std = frame_statistics(frames)
    np.testing.assert_allclose(mean, [0.8, 0.8, 0.8], atol=1e-9)
    np.testing.assert_allclose(std, [0.4, 0.4, 0.4], atol=1e-9)


def test_vision_pretraining_learns_to_read_the_frames():
    from PIL import Image

    from models.tiny_llava import build_processor, build_tiny_llava

    demos = demonstrations("numberline", 300, noise=0.45, seed=0)
    unique = {img.tobytes(): (img, info) for img, _, _, info in demos}
    images, infos = zip(*unique.values())
    shape = TinyVLMShape(text_layers=1)
    tokenizer = build_tokenizer(tokenizer_corpus("numberline"), shape.vocab_size)
    processor = build_processor(tokenizer, shape, *frame_statistics(list(images)))
    frames = [
        processor.image_processor(images=Image.fromarray(i), return_tensors="pt")["pixel_values"][0] for i in images
    ]
    labels = [perception_labels("numberline", info) for info in infos]
    classes = perception_classes("numberline")
    assert classes == (6, 6)
    accuracy = pretrain_vision(build_tiny_llava(tokenizer, shape), frames, labels, classes, steps=120, seed=0)
    assert accuracy > 0.9  # chance is ~0.18; CLIP's default normalisation stayed there


# NumberLine's measured runs used exactly these demonstrations, prompts, tokenizer corpus and preset: the card
# tasks must not change them. Digests taken before the per-task table replaced the NumberLine-only code.
NUMBERLINE_REFERENCE = {
    "corpus": "b16cc15fced91189725621e6021eef253ee0667c479e744ad5c80810537e5fc4",
    "responses": "0dd89a20c5b8d328d76b7fbe2832ce8858c7c220019e8a0795ebd6654d8a171e",
    "prompts": "de0630ced09f2b9090b4cea2351e246265922eae712d4bb97f42af9246f92904",
    "infos": "d8995b92740810c36c28be935d1e06f50474397cc3a835f4e567402cdc862b03",
    "images": "03bfdf60e11c8e6f302e0a8adf9543033b71630837f9dcd8395abb7e921c8cfe",
    "config": "061113c1b32914cf0a5285546a6a93bc46bce9ccdc5252d51e9b188637f49ac2",
}


# Config fields added after the measured runs; none changes what those runs did (placement, restarts, resume).
ADDED_AFTER = {
    "model": ("dtype", "base", "lora"),
    "rollout": (
        *("gpus_per_actor", "resources", "max_restarts", "max_backlog_updates"),
        *("gpu_memory_utilization", "cpu_kv_cache_gb", "max_model_len"),  # vLLM memory and length knobs
        "stop_after_action",  # off for NumberLine (issue 18)
    ),
    "learner": ("gpus_per_rank", "resources", "placement_strategy", "dtype"),
    "run": ("checkpoint_every", "keep_checkpoints", "resume", "max_restarts"),
    "env": ("max_consecutive_failures",),
    "ppo": (
        *("invalid_penalty", "value_clip", "adv_std_floor", "value_lr_scale"),  # PPO only (issue 18)
        *("demo_coef", "demo_batch", "demo_samples"),  # the demonstration loss, off by default
    ),
}


CHANGED_AFTER = {  # PPO-side defaults changed since (2 learner ranks, 3 epochs; issue 17): SFT reads none
    "learner": {"world_size": 1, "cpus_per_rank": 1.0},
    "ppo": {"micro_batch": 16, "grad_accum": 4, "epochs": 4},
}


def measured_config() -> dict:
    cfg = dataclasses.asdict(numberline())
    for section, names in ADDED_AFTER.items():
        for name in names:
            cfg[section].pop(name, None)
    for section, values in CHANGED_AFTER.items():
        cfg[section].update(values)
    del cfg["model"]["shape"]["max_positions"]  # added with ALFWorld; NumberLine keeps 1024
    return cfg


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def test_numberline_sft_inputs_are_byte_identical_to_the_measured_runs():
    demos = demonstrations("numberline", 300, 0.45, 0)
    images = hashlib.sha256()
    for img, *_ in demos:
        images.update(repr((img.shape, str(img.dtype))).encode())
        images.update(img.tobytes())
    assert {
        "corpus": digest(tokenizer_corpus("numberline")),
        "responses": digest([d[2] for d in demos]),
        "prompts": digest([d[1] for d in demos]),
        "infos": digest([d[3] for d in demos]),
        "images": images.hexdigest(),
        "config": digest(measured_config()),
    } == NUMBERLINE_REFERENCE
    assert PRESETS["numberline"][1].model.path == "checkpoints/numberline-sft"


# ---- the card tasks ---------------------------------------------------------------------------------
CARD_TASKS = ("ezpoints", "points24", "blackjack")
EXPERT = {"ezpoints": ezpoints_expert, "points24": points24_expert, "blackjack": blackjack_expert}


def written_actions(task: str, demos, noise: float, seed: int) -> list[int]:
    """The actions `demonstrations` chose: the same noisy expert on the same infos with the same generator."""
    rng = np.random.default_rng(seed)
    return [resolve_task(task).expert.act(info, noise, rng) for *_, info in demos]


@pytest.mark.parametrize("task", CARD_TASKS)
@pytest.mark.parametrize("cot", [True, False])
def test_demonstrations_parse_back_to_the_action_written(task, cot):
    spec, noise = resolve_task(task), 0.45
    demos = demonstrations(task, 80, noise, seed=1, cot=cot)
    assert len(demos) == 80
    actions, rng = written_actions(task, demos, noise, 1), np.random.default_rng(0)
    for (_, prompt, response, info), action in zip(demos, actions):
        parsed = spec.parse(response, spec.action_names, rng)
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
    cap = task_config([task])[0].rollout.max_new_tokens
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
    paths = {task_config([t])[0].model.path for t in ("numberline", *CARD_TASKS)}
    assert len(paths) == 4
    for task in CARD_TASKS:
        cfg = task_config([task])[0]
        assert cfg.env.task == task and cfg.model.path == f"checkpoints/{task}-sft"
        assert cfg.ppo.cot_coef == 0.5
        # SFT at most ~11 min on 2 cores: Blackjack's 1000 steps of 32 and 1000 vision steps took 10.9 (2026-12-02)
        assert cfg.sft.samples * cfg.sft.epochs // cfg.sft.batch_size <= 1000


def test_sft_main_uses_the_task_preset(monkeypatch, tmp_path):
    """`make sft TASK=x` builds what `make train TASK=x` would: the preset's SFT settings and checkpoint path."""
    from learner import sft

    calls = []
    monkeypatch.chdir(tmp_path)  # main creates the checkpoint's parent folder
    monkeypatch.setattr(sft, "train_sft", lambda *args, **kwargs: calls.append((args, kwargs)))
    sft.main(["--task", "points24"])
    (task, out, model, cfg), kwargs = calls[-1]
    preset = task_config(["points24"])[0]
    assert (task, out, model, cfg, kwargs) == ("points24", preset.model.path, preset.model, preset.sft, {"cot": True})
    sft.main(["--task", "blackjack", "--out", str(tmp_path / "bj"), "--samples", "64"])
    (task, out, _, cfg), _ = calls[-1]
    assert (task, out, cfg.samples, cfg.vision_steps) == ("blackjack", str(tmp_path / "bj"), 64, 1000)
    sft.main([])
    assert calls[-1][0][:2] == ("numberline", "checkpoints/numberline-sft") and calls[-1][0][3] == SFTConfig()
    # Every SFTConfig / TinyVLMShape field is a flag (tyro over the same dataclasses), the preset its default.
    sft.main(["--task", "ezpoints", "--lr", "5e-4", "--shape.text-layers", "1", "--out", str(tmp_path / "ez")])
    (task, out, model, cfg), _ = calls[-1]
    assert cfg == dataclasses.replace(task_config(["ezpoints"])[0].sft, lr=5e-4)
    assert model.shape == TinyVLMShape(text_layers=1) and model.path == out == str(tmp_path / "ez")
    with pytest.raises(SystemExit):
        sft.main(["--task", "no-such-task"])
