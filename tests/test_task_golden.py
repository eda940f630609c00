"""Same seeds, same transcripts: the built-in tasks give what they gave before the Task API (envs/task.py).

The digests were recorded on the code before the tasks moved behind the Task API (tests/task_transcripts.py
says what each covers). SFT demonstrations, perception labels and the tokenizer corpus are everything the SFT
warm start reads besides its config, so equal digests plus equal preset numbers mean the same SFT checkpoint
and the same SFT-start evaluation; the scripted rollout covers prompts, parsing, rewards, success and seeds.
"""

from __future__ import annotations

import importlib.util

import pytest
from task_transcripts import classes_and_corpus_digest, demonstrations_digest, rollout_digest

GYM = ("numberline", "ezpoints", "points24", "blackjack")
DEMOS = {  # (task, cot): digest of 60 demonstrations (ALFWorld 12) at noise 0.45, sft seed 0
    ("numberline", True): "a3383734e79d3a2f",
    ("numberline", False): "f400826a924f537d",
    ("ezpoints", True): "3f1c4c18c2c3b0af",
    ("ezpoints", False): "70b8b518ed5d068e",
    ("points24", True): "f623d03d9f7fae3d",
    ("points24", False): "4965a18e32de99b8",
    ("blackjack", True): "c256401976f4bda3",  # re-recorded: no noise on hard 12-16 (envs/experts.py, issue 18)
    ("blackjack", False): "f0e1bf098446e8d8",
    ("alfworld", True): "b13694dae06aeae0",
    ("alfworld", False): "1268e15727bb680c",
}
CORPUS = {  # perception classes + the whole tokenizer corpus
    "numberline": "edb039b92e3816bb",
    "ezpoints": "b471e2ae0274708d",
    "points24": "1dc3c0fe6256636e",
    "blackjack": "6a44895d99e5715c",  # re-recorded with those thoughts
    "alfworld": "007253a99a687223",
}
ROLLOUT = {  # (task, cot): a scripted engine's collect (3 envs x 12 steps) and 5 held-out episodes
    ("numberline", True): "a6261fe2f50dafc7",
    ("numberline", False): "539d9b31b13d6cfb",
    ("ezpoints", True): "d5a04f23a72934fc",
    ("ezpoints", False): "4e6a2a50b3b8ef7b",
    ("points24", True): "630334bf1b381a27",
    ("points24", False): "ab1d3009684bdb14",
    ("blackjack", True): "2b0f8e7c1160cc04",
    ("blackjack", False): "9b62ed99f14f0489",
    ("alfworld", True): "a04e2c6a7cc1afe8",
    ("alfworld", False): "fa30cae57d2f8ab7",
}
needs_alfworld = pytest.mark.skipif(importlib.util.find_spec("alfworld") is None, reason="alfworld not installed")
ALF = pytest.param("alfworld", marks=needs_alfworld)


@pytest.mark.parametrize("cot", [True, False])
@pytest.mark.parametrize("task", [*GYM, ALF])
def test_sft_demonstrations_are_unchanged(task, cot, request):
    if task == "alfworld":
        request.getfixturevalue("alfworld_cache")
    assert demonstrations_digest(task, 12 if task == "alfworld" else 60, cot) == DEMOS[(task, cot)]


@pytest.mark.parametrize("task", [*GYM, pytest.param("alfworld", marks=[needs_alfworld, pytest.mark.slow])])
def test_tokenizer_corpus_and_perception_classes_are_unchanged(task, request):
    if task == "alfworld":  # 36 corpus episodes of generated games: ~2 min
        request.getfixturevalue("alfworld_cache")
    assert classes_and_corpus_digest(task) == CORPUS[task]


@pytest.mark.parametrize("cot", [True, False])
@pytest.mark.parametrize("task", [*GYM, ALF])
def test_rollout_transcripts_are_unchanged(task, cot, monkeypatch, request):
    if task == "alfworld":
        request.getfixturevalue("alfworld_cache")
    assert rollout_digest(task, monkeypatch, cot=cot) == ROLLOUT[(task, cot)]


# The numbers each built-in preset resolves to (SFT and PPO read them): recorded with the digests above.
_SFT = {"action_noise": 0.45, "epochs": 2, "batch_size": 32, "lr": 0.001, "seed": 0}
PRESET_NUMBERS = {
    "numberline": (96, 256, 0.5, 1024, 16, {**_SFT, "samples": 8000, "vision_steps": 200}, (25, 200, 10)),
    "ezpoints": (128, 256, 0.5, 1024, 16, {**_SFT, "samples": 10000, "vision_steps": 200}, (25, 200, 10)),
    "points24": (176, 256, 0.5, 1024, 16, {**_SFT, "samples": 5000, "vision_steps": 400}, (25, 200, 10)),
    "blackjack": (128, 256, 0.5, 1024, 16, {**_SFT, "samples": 16000, "vision_steps": 1000}, (60, 500, 20)),
    "alfworld": (
        80, 128, 0.2, 2048, 8, {**_SFT, "samples": 2000, "vision_steps": 200, "epochs": 6, "action_noise": 0.2},
        (8, 30, 0),
    ),
}  # fmt: skip


def resolved(preset: str):
    """The config the driver runs for `python -m cluster.train <preset>` (before the Task API: parse_cli)."""
    from envs.registry import task_config

    return task_config([preset])[0]


@pytest.mark.parametrize("preset", sorted(PRESET_NUMBERS))
def test_built_in_presets_resolve_to_the_same_numbers(preset):
    import dataclasses

    cfg = resolved(preset)
    tokens, steps, cot_coef, positions, envs, sft, run = PRESET_NUMBERS[preset]
    assert cfg.env.task == preset and cfg.model.path == f"checkpoints/{preset}-sft"
    assert (cfg.rollout.max_new_tokens, cfg.ppo.steps_per_update, cfg.ppo.cot_coef) == (tokens, steps, cot_coef)
    assert (cfg.model.shape.max_positions, cfg.env.envs_per_actor) == (positions, envs)
    assert dataclasses.asdict(cfg.sft) == sft
    assert (cfg.run.total_updates, cfg.run.eval_episodes, cfg.run.eval_every) == run
    assert (cfg.env.cot, cfg.env.seed, cfg.env.eval_seed) == (True, 0, 10**12)
    assert cfg.rollout.stop_after_action == (preset == "ezpoints")  # the others' headlines ran without it
    # fp32 like vLLM, but NumberLine's bf16 learner (the only task where bf16 learning is measured, README)
    assert cfg.learner.dtype == ("bfloat16" if preset == "numberline" else "")
    assert cfg.ppo.epochs == (3 if preset == "numberline" else 4)  # NumberLine's 3: measured on two seeds (README)
