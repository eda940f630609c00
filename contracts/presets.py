"""Named presets of the run config (contracts/config.py) and the command line that picks one and overrides it.

    python -m cluster.train blackjack --ppo.cot-coef 0.1

A preset is a function returning a `Config`; `PRESETS` names them for the CLI. Task defaults (envs/registry.py)
apply on top of a preset where it keeps a generic value (contracts/task_defaults.py).
"""

from __future__ import annotations

from contracts.config import Config, LoRAConfig, SFTConfig


def _embedded() -> Config:
    """The PPO settings every built-in task shares with the embedded tiny VLM, sized to learn on 2 CPU cores.

    Two 1-thread learner ranks beside the throttled rollout actor, micro-batches of 32 (64 per optimizer step, as
    one rank's 16 x 4; bench §13). Against the late collapse (README): unclipped value loss, advantage std floor
    0.5, an unparsable answer costs 1 in the learner."""
    cfg = Config()
    cfg.learner.world_size, cfg.learner.cpus_per_rank = 2, 0.5
    cfg.ppo.micro_batch, cfg.ppo.grad_accum = 32, 1
    cfg.ppo.value_clip, cfg.ppo.adv_std_floor, cfg.ppo.invalid_penalty = 0.0, 0.5, 1.0
    return cfg


def numberline() -> Config:
    """The paper's NumberLine with the embedded tiny VLM, within an hour on 2 CPU cores: the shared settings plus
    the demonstration loss at 5 (no unparsable rollout step on either training seed; 0.12 / 0.33 without), a
    bf16 learner beside the fp32 vLLM (attention kept in fp32: 0.995 on both training seeds, README) and 3 PPO
    epochs instead of the paper's 4 (the learner is the loop's bottleneck; both training seeds still >= 0.98,
    README), measured on NumberLine only so far; the previous default's side of bench §13 runs
    none of the three."""
    cfg = _embedded()
    cfg.ppo.demo_coef = 5.0
    cfg.learner.dtype = "bfloat16"
    cfg.ppo.epochs = 3
    return cfg


def _card_task(task: str, samples: int, vision_steps: int) -> Config:
    """A card task with the embedded tiny VLM: the shared settings, and SFT sized for the task.

    Kept from NumberLine: λ 0.5 (the paper's gym_cards value) and 256 env steps per update (the paper's 1024 for
    EZPoints, Points24 and 512 for Blackjack would need ~55 min of rollout for 25 updates at ~8 env steps/s).
    max_new_tokens: the task's longest expert answer plus ~40 %, as NumberLine's 96 is for its 56 (envs/builtin.py).
    """
    cfg = _embedded()
    cfg.env.task = task
    cfg.sft.samples = samples
    cfg.sft.vision_steps = vision_steps  # ~0.1 s a step
    return cfg


def ezpoints() -> Config:
    """EZPoints. CoT answers <= 91 tokens. SFT 10000 samples x 2 epochs (624 steps, ~10.6 min on 2 cores): 5000 left
    the loss at 0.038 and the thoughts unfaithful (SFT 0.015, RL 0.79; README). Vision: 200 steps read both ranks."""
    return _card_task("ezpoints", samples=10000, vision_steps=200)


def points24() -> Config:
    """Points24. Expert CoT answers are at most 125 tokens (96 on average; the formula is quoted twice). SFT as
    EZPoints (~430-token sequences, ~1.1 s a step, the solver for every demonstration): ~8 min. Vision
    pre-training: four small cards read at 0.92 after 200 steps (measured), so twice that."""
    return _card_task("points24", samples=5000, vision_steps=400)


def blackjack() -> Config:
    """Blackjack. Vision pre-training sat at chance ~300 steps, then read the cards (0.96-1.0 per card at 500;
    measured): 1000 steps. 8000 SFT samples left a third of the CoT totals wrong (3-card hands 0.20): twice that."""
    return _card_task("blackjack", samples=2 * SFTConfig.samples, vision_steps=1000)


def alfworld() -> Config:
    """ALFWorld text games (generated offline unless ALFWORLD_DATA holds the official ones), embedded tiny VLM.

    λ (ppo.cot_coef) 0.2, the paper's ALFWorld value. Prompts carry the scene text and every admissible command:
    up to ~720 tokens in this tokenizer (350 on average; measured over corpus episodes), so the model takes
    2048 positions. Evaluation plays 30 of the 120 generated unseen-floor-plan games (5 per task type). Steps cost
    ~0.05 s and prompts are ~3x a card task's, so fewer env copies, samples and updates fit 2 cores. λ,
    max_new_tokens 80 (answers <= 56 tokens) and 128 steps per update are the task's (envs/alfworld/task.py)."""
    cfg = _embedded()
    cfg.env.task = "alfworld"
    cfg.env.envs_per_actor = 8
    cfg.model.shape.max_positions = 2048
    cfg.run.total_updates = 8
    cfg.run.eval_every = 0
    cfg.run.eval_episodes = 30  # 5 unseen games per task type: an episode the policy loses runs all 50 steps
    # 1000 samples x 2 epochs (62 steps) left the loss at 2.5 and 98 % of answers unparsable (measured): the
    # model must learn to copy a command out of a ~400-token prompt, so more passes over fewer, cleaner demos.
    cfg.sft.samples = 2000
    cfg.sft.epochs = 6
    cfg.sft.action_noise = 0.2
    cfg.ppo.invalid_penalty = 0.0  # the env itself gives -1 for a command that is not admissible (spec §8.6)
    return cfg


def paper_lora() -> Config:
    """The paper's PPO with LoRA for a real checkpoint of a supported family (spec §1, §2.2): r 128, α 256,
    dropout 0.05 on every linear layer incl. the vision tower and projector, Adam lr 1e-5 cosine to 1e-9,
    grad-norm 0.01, micro-batch 1 x 128 accumulation, 512 env steps per learner rank, 256 new tokens, bf16.
    Set --model.path to the SFT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf fine-tuned on the task)."""
    cfg = Config()
    cfg.model.path = "checkpoints/numberline-llava-next-sft"
    cfg.model.dtype = "bfloat16"
    cfg.model.lora = LoRAConfig(rank=128, alpha=256.0, dropout=0.05, targets="all")
    cfg.learner.world_size = 2
    cfg.ppo.lr, cfg.ppo.end_lr, cfg.ppo.max_grad_norm = 1e-5, 1e-9, 0.01
    cfg.ppo.micro_batch, cfg.ppo.grad_accum, cfg.ppo.steps_per_update = 1, 128, 1024
    cfg.rollout.max_new_tokens = 256
    return cfg


def tiny() -> Config:
    """Seconds-scale settings for tests: a few envs, short responses, tiny updates."""
    cfg = Config()
    cfg.env.envs_per_actor = 4
    cfg.rollout.steps_per_call = 2
    cfg.rollout.max_new_tokens = 48
    cfg.ppo.steps_per_update = 16
    cfg.ppo.micro_batch, cfg.ppo.grad_accum, cfg.ppo.epochs = 4, 2, 1
    cfg.run.total_updates = 2
    cfg.run.eval_episodes = 4
    cfg.run.eval_every = 0
    cfg.sft.samples = 256
    cfg.sft.epochs = 1
    return cfg


PRESETS = {
    "embedded": (
        "The built-in tasks' shared settings for the embedded tiny VLM and nothing task-specific: where a task of "
        "your own starts (docs/tasks.md).",
        _embedded(),
    ),
    "numberline": ("NumberLine, embedded tiny VLM, SFT then PPO (the `make train` default).", numberline()),
    "ezpoints": ("EZPoints (two cards, formula = 12), embedded tiny VLM, SFT then PPO.", ezpoints()),
    "points24": ("Points24 (four cards, formula = 24), embedded tiny VLM, SFT then PPO.", points24()),
    "blackjack": ("Blackjack against the dealer, embedded tiny VLM, SFT then PPO.", blackjack()),
    "alfworld": ("ALFWorld text games (six task types), embedded tiny VLM, SFT then PPO.", alfworld()),
    "paper_lora": ("The paper's LoRA PPO (r 128, α 256) for a real checkpoint: pass --model.path.", paper_lora()),
    "tiny": ("A seconds-scale run for tests and smoke checks.", tiny()),
}


def parse_cli(args: list[str] | None = None, task_defaults=None) -> Config:
    """The preset named first in `args` (or the task's), the task's defaults (contracts/task_defaults.py) and the
    flags, validated. tyro exits 2 on an unknown flag or a wrong type; a value out of range raises ConfigError
    (a ValueError) listing every problem, which cluster/train.py prints one per line before exiting with 2."""
    import tyro

    from contracts.task_defaults import presets_for

    args, presets = presets_for(PRESETS, args, task_defaults, Config())
    return tyro.extras.overridable_config_cli(presets, args=args).validate()
