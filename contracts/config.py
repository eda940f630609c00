"""Every knob of a run: dataclasses with a docstring per field (named presets and the CLI: contracts/presets.py).

    python -m cluster.train numberline --ppo.lr 1e-4 --rollout.num-actors 2

The resolved config is written to runs/<run>/config.json with every run. Each component receives only its
own sub-config. Paper values are noted where we keep them; where the tiny CPU model needs others, it says so.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass, field
from typing import Literal

from contracts import seeds


@dataclass
class TinyVLMShape:
    """Sizes of the embedded default VLM (every field a standard HF config field)."""

    vocab_size: int = 1024
    """BPE vocabulary size of the tokenizer trained on the task strings."""
    text_hidden: int = 128
    """Llama hidden size; head_dim = text_hidden / text_heads must be one vLLM's CPU attention supports (32, 64)."""
    text_layers: int = 4
    """Llama decoder layers."""
    text_heads: int = 4
    """Llama attention heads."""
    text_intermediate: int = 384
    """Llama MLP width."""
    vision_hidden: int = 128
    """CLIP vision hidden size."""
    vision_layers: int = 2
    """CLIP vision encoder layers."""
    vision_heads: int = 4
    """CLIP vision attention heads."""
    image_size: int = 112
    """Side of the square image the vision tower sees (the 300x300 env frame is resized to it)."""
    patch_size: int = 14
    """ViT patch size: (image_size / patch_size)^2 image tokens per frame."""
    max_positions: int = 1024
    """Longest sequence (prompt with image tokens + response); vLLM's max_model_len is read from it."""

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class LoRAConfig:
    """LoRA on the VLM (peft), as the paper trains PPO (spec §2.2): r 128, α 256, dropout 0.05 on every linear
    layer of the language model, the vision tower and the projector; lm_head excluded. The value head is always
    trained in full and its loss flows into the shared LoRA trunk. A push then sends only the adapter
    (models/lora.py says which parts vLLM applies and which are merged and sent as weights)."""

    rank: int = 0
    """LoRA rank r; 0 = full fine-tuning of every parameter (the embedded model's default)."""
    alpha: float = 0.0
    """LoRA α (the update is scaled by α / r); 0 = 2 x rank, the paper's ratio (α 256 at r 128)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch's input while training (paper 0.05); scoring runs without it."""
    targets: Literal["all", "projector", "language"] = "all"
    """Which linear layers get adapters, as the paper's --train-vision: all = language model + vision tower +
    projector (the paper's setting); projector = language model + projector; language = language model only."""


@dataclass
class EnvConfig:
    task: str = "numberline"
    """The task: a built-in (numberline, ezpoints, points24, blackjack, alfworld; each has a preset of that name),
    a name installed packages register (entry points rl4vlm.tasks), or package.module:attr (docs/tasks.md)."""
    cot: bool = True
    """Chain-of-thought prompt (paper) or the action-only prompt (the "w/o CoT" ablation)."""
    envs_per_actor: int = 16
    """Env copies per rollout actor; each step runs them all through one batched generate call."""
    seed: int = 0
    """Base of the training seeds; each episode is reset with a fresh seed derived from it."""
    eval_seed: int = seeds.EVAL_SEED_BASE
    """Base of the held-out evaluation seeds (training seeds stay below it; `validate` checks)."""
    max_consecutive_failures: int = 20
    """Stop the run when this many episodes of one rollout actor fail in a row (a task hook raised: env reset or
    step, prompt, parser); a failed episode is dropped, counted and logged, and the run goes on."""


@dataclass
class ModelConfig:
    path: str = "checkpoints/numberline-sft"
    """Policy checkpoint PPO starts from (HF format). Built by SFT when missing and `build_if_missing`."""
    build_if_missing: bool = True
    """Run SFT into `path` when missing: from `base` if set, else on the embedded tiny VLM it builds."""
    base: str = ""
    """HF checkpoint of a supported family (models/families.py) that SFT starts from when `path` is missing;
    empty = the embedded tiny VLM. Set sft.lr for its size (the default is the tiny model's)."""
    shape: TinyVLMShape = field(default_factory=TinyVLMShape)
    """Sizes of the embedded default VLM (ignored for an existing checkpoint)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute of vLLM, and of the learner unless learner.dtype is set (bf16: DeepSpeed keeps fp32
    master weights). Every supported family (models/families.py) runs in both."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA instead of full fine-tuning (rank > 0); the `paper_lora` preset has the paper's values."""


@dataclass
class SFTConfig:
    samples: int = 8000
    """Demonstration steps generated from the env (random states, correct reading, noisy action)."""
    action_noise: float = 0.45
    """Probability that a demonstration's action is the wrong one (state-independent), leaving room for RL."""
    vision_steps: int = 200
    """Supervised pre-training steps of the vision tower on env frames (stands in for CLIP pre-training)."""
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0


@dataclass
class RolloutConfig:
    backend: Literal["vllm", "hf"] = "vllm"
    """Inference engine: vLLM (default) or HF transformers generate (hosts without vLLM; baseline)."""
    num_actors: int = 1
    """Rollout actors (each owns envs_per_actor envs and one engine)."""
    temperature: float = 0.2
    """Sampling temperature (paper 0.2). Log-probs are taken from logits / temperature on both sides."""
    max_new_tokens: int = 96
    """Response cap (paper 256; our byte-level BPE answers need ~40 tokens)."""
    stop_after_action: bool = False
    """End a response at the close of its first `"action": "..."` value (a sampler stop rule, actors/engines.py)."""
    steps_per_call: int = 4
    """Env steps per env in one `collect` call; the learner can push weights between calls."""
    cpus_per_actor: float = 1.0
    """Ray CPUs reserved per rollout actor (its engine runs one OMP thread)."""
    gpus_per_actor: float = 0.0
    """GPUs per rollout actor (e.g. 1, or 0.5 to pack two engines on a GPU); 0 on CPU hosts."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each rollout actor needs, e.g. {"rollout_node": 1} to keep them on env/CPU nodes."""
    gpu_memory_utilization: float = 0.0
    """Share of its GPU's memory vLLM may take (weights + KV cache); 0 = 0.85 x gpus_per_actor. CPU hosts: unused."""
    cpu_kv_cache_gb: float = 1.0
    """KV cache of a vLLM engine on a CPU host, in GiB (VLLM_CPU_KVCACHE_SPACE)."""
    max_model_len: int = 0
    """Longest prompt + response vLLM schedules; 0 = the checkpoint's max positions, at most 4096 (the tasks'
    prompts stay under ~1k tokens incl. image tokens; a 32k window would only reserve KV cache)."""
    max_restarts: int = 20
    """Crashed rollout actors are replaced automatically, at most this many times per run."""
    max_backlog_updates: float = 1.0
    """Throttle: an idle actor starts another collect only while the store plus the running collects hold fewer
    unused env steps than this many PPO updates need (below 1 counts as 1); 0 = off, rollout runs flat out (on
    2 cores ~86 % of NumberLine's steps were then evicted or dropped unused: docs/bench/report.md, section 7)."""


@dataclass
class ReplayConfig:
    capacity_steps: int = 2048
    """Most steps held; a full store evicts its oldest episodes to take a new chunk (counted). At least
    ppo.steps_per_update plus one collect's env.envs_per_actor x rollout.steps_per_call (`validate` checks)."""
    max_policy_lag: int = 1
    """Episodes with a step more than this many versions behind the learner are dropped (counted)."""
    spill_dir: str = ""
    """If set, every chunk the store accepts is also written there as Parquet (an archive of the run)."""


@dataclass
class PPOConfig:
    gamma: float = 0.9
    """Discount (paper 0.9)."""
    gae_lambda: float = 0.95
    """GAE λ (paper 0.95)."""
    clip: float = 0.1
    """Ratio clip (paper 0.1)."""
    value_clip: float = 0.1
    """Value clip: a value gains nothing from moving more than this from its proximal one (paper 0.1); 0 = none."""
    vf_coef: float = 0.5
    """Value loss coefficient (paper 0.5, on top of the 0.5 inside the value loss)."""
    cot_coef: float = 0.5
    """λ scaling the CoT tokens' log-prob (paper 0.5 for gym_cards, 0.2 for ALFWorld)."""
    epochs: int = 4
    """PPO epochs over each batch (paper 4)."""
    steps_per_update: int = 256
    """Env steps per PPO update, over all learner ranks (paper 512 per GPU)."""
    micro_batch: int = 16
    """Samples per forward/backward on one rank (paper 1)."""
    grad_accum: int = 4
    """Micro-batches per optimizer step."""
    lr: float = 3e-5
    """Adam learning rate (paper 1e-5 for a 7B LoRA)."""
    value_lr_scale: float = 1.0
    """The value head's learning rate as a multiple of `lr`, on the same schedule (1 = the paper's one rate)."""
    end_lr: float = 1e-6
    """Cosine schedule floor, reached after `total_updates`."""
    max_grad_norm: float = 1.0
    """Gradient clipping (paper 0.01 with LoRA; too small for a tiny full model)."""
    value_warmup_updates: int = 2
    """First updates train only the value head on a detached trunk (a random head must not move the policy)."""
    target_kl: float = 0.05
    """Stop an update's remaining epochs once an optimizer step's mean approx. KL exceeds this (all ranks agree)."""
    is_cap: float = 2.0
    """Cap of the truncated importance weight π_prox/π_behav for stale samples."""
    adv_std_floor: float = 0.0
    """Advantages are divided by max(their std, this), in reward units (0 = the paper's std + 1e-5)."""
    invalid_penalty: float = 0.0
    """Taken off a step's reward in the learner when its answer did not parse (0 = the paper's gym_cards)."""
    demo_coef: float = 0.0
    """Weight of the demonstration loss added to every PPO micro-batch's: the teacher-forced cross-entropy of
    `demo_batch` answers drawn from `demo_samples` noiseless expert steps (learner/demos.py) on the tokens every
    legal answer shares, and at the action's name on any legal name (never the demonstrated one: what to do stays
    RL's). 0 = off, the paper's PPO."""
    demo_batch: int = 8
    """Demonstrations per PPO micro-batch when demo_coef > 0 (each costs about a PPO sample's forward + backward)."""
    demo_samples: int = 512
    """Expert steps in each learner rank's demonstration pool, built once at start from the SFT seeds."""


@dataclass
class LearnerConfig:
    world_size: int = 1
    """DeepSpeed ranks, one Ray actor each (gloo on CPU, NCCL on GPU)."""
    zero_stage: int = 2
    """ZeRO stage 1, 2 or 3 (paper 2)."""
    cpus_per_rank: float = 1.0
    """Ray CPUs per learner rank (one bundle of the learners' placement group)."""
    gpus_per_rank: float = 0.0
    """GPUs per learner rank; 1 on GPU clusters (DeepSpeed then uses NCCL)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per learner rank, e.g. {"learner_node": 1}."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """Placement-group strategy of the learner ranks (PACK keeps them on as few nodes as possible)."""
    push_every: int = 1
    """Push weights to the rollout actors every K PPO updates."""
    dtype: Literal["", "float32", "bfloat16"] = ""
    """The learner's own dtype ("" = model.dtype): bf16 beside an fp32 vLLM trains faster on CPUs with
    avx512_bf16; the importance weights absorb the log-prob gap between the two."""


@dataclass
class RunConfig:
    name: str = ""
    """Run folder name under out_dir (default: task and time)."""
    out_dir: str = "runs"
    total_updates: int = 25
    """PPO updates to run (the cosine learning-rate schedule spans them; paper T_max 25)."""
    mode: Literal["async", "sync"] = "async"
    """async: rollout continues while the learner trains; sync: collect, then train, then push."""
    eval_episodes: int = 200
    """Held-out episodes for the SFT-start and final evaluations."""
    eval_every: int = 10
    """Evaluate on held-out seeds every N updates (0 = only at start and end)."""
    time_budget_min: float = 55.0
    """Stop training (then evaluate and save) when this much wall clock has passed."""
    dashboard: bool = False
    """Start the Ray dashboard (metrics export) with a local cluster."""
    checkpoint_every: int = 5
    """Write a resumable checkpoint every N updates under runs/<run>/checkpoints/ (0 = never)."""
    keep_checkpoints: int = 2
    """Keep the newest N resumable checkpoints."""
    max_restarts: int = 3
    """Restarts per run of the replay store, RunControl and the learner group each (cluster/recovery.py)."""
    resume: str = ""
    """Continue a run: its folder or one of its checkpoints (same task, learner ranks and ZeRO stage)."""


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> Config:
        """Raise one clear error for a bad combination rather than failing deep inside an actor: a
        ConfigError (a ValueError) listing every problem, one line each (rules: contracts/validation.py)."""
        from contracts.validation import validate

        return validate(self)

    def learner_dtype(self) -> str:
        """The learner ranks' dtype: learner.dtype, else the engines' model.dtype."""
        return self.learner.dtype or self.model.dtype

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))
