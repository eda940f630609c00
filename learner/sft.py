"""SFT warm start: build the embedded tiny VLM offline and fine-tune it on env-generated CoT demonstrations.

    python -m learner.sft --task ezpoints     (-> checkpoints/ezpoints-sft; make train builds it when missing)
    python -m learner.sft --task blackjack --samples 2000 --shape.text-layers 2 --out /tmp/bj
    python -m learner.sft --task examples.shapesort.task:TASK

Demonstrations come from episodes played by the task's noisy expert (Task.expert, envs/task.py): the image is
read correctly in the CoT, the action is wrong with probability `action_noise`. The loss covers response tokens
only. Everything task-specific comes from the Task: env, prompt, expert, perception labels, tokenizer corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
import tyro
from PIL import Image

from contracts.config import EnvConfig, ModelConfig, SFTConfig, TinyVLMShape
from contracts.seeds import CORPUS_SEED_BASE, SFT_SEED_BASE
from contracts.validation import ConfigError
from envs.prompts import chat_prompt
from envs.registry import resolve_task, task_config
from envs.task import Expert, Task, TaskError
from learner.batch import pad_prompt_response
from models.families import chat_format, family_of_model, image_token_id
from models.policy import ValueHead, load_policy, save_policy
from models.tiny_llava import build_processor, build_tiny_llava
from models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


def demonstrations(task: str | Task, n: int, noise: float, seed: int, cot: bool = True, chat=chat_prompt):
    """`n` (image, prompt, response, info) tuples from noisy-expert episodes of `task` (a Task or a reference);
    `chat` puts the question into the model's chat template (models/families.py `chat_format`; the embedded
    model's llava_v1 by default).

    The prompt is built from the info the image was rendered with, so each prompt describes the state of that
    very step (an episode's first prompt its own first state). Episode k of `seed` is reset with
    SFT_SEED_BASE + seed * 10**6 + k (contracts/seeds.py): never a training, held-out or corpus seed.
    """
    task = resolve_task(task)
    expert = _expert(task)
    env, rng, out, episode = task.make_env(), np.random.default_rng(seed), [], 0
    while len(out) < n:
        obs, info = env.reset(seed=SFT_SEED_BASE + seed * 10**6 + episode)
        episode += 1
        done = False
        while not done and len(out) < n:
            action = expert.act(info, noise, rng)
            prompt, response = chat(task.prompt(info, cot)), expert.response(info, action, cot)
            out.append((obs, prompt, response, dict(info)))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    return out


def _expert(task: Task) -> Expert:
    if task.expert is None:
        raise TaskError(f"task {task.name} has no SFT expert (Task.expert): give --model.path a checkpoint instead")
    return task.expert


def perception_labels(task: str | Task, info: dict) -> list[int] | None:
    """The symbolic state an image shows, one class label per slot (Task.perception); None without labels."""
    task = resolve_task(task)
    return None if task.perception is None else list(task.perception.labels(info))


def perception_classes(task: str | Task) -> tuple[int, ...]:
    """Number of classes of each slot of `perception_labels` (empty without labels)."""
    task = resolve_task(task)
    return () if task.perception is None else tuple(task.perception.classes)


def frame_statistics(frames: list[np.ndarray], max_frames: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (in [0, 1] units) of the task's frames, for the image processor."""
    sample = np.stack(frames[:max_frames]).reshape(-1, 3) / 255.0  # (N*H*W, 3) float64: float32 sums saturate
    return sample.mean(axis=0), np.maximum(sample.std(axis=0), 1e-3)


def pretrain_vision(
    vlm, frames: list[torch.Tensor], labels: list[list[int]], num_classes: Sequence[int], steps: int, seed: int
) -> float:
    """Supervised pre-training of the randomly initialised CLIP tower on the env's own frames.

    Stands in for CLIP's image-text pre-training, which a hub checkpoint brings and ours cannot: linear heads
    read the state from the MEAN of the patch features the LLM will see, so every image token learns to carry
    it, before SFT asks the LLM to route that information into its answer. `num_classes[s]` is slot s's class
    count (given, not inferred from the labels: a sample that misses the top class must not shrink the head).
    Returns the final training accuracy.
    """
    tower = vlm.model.vision_tower
    hidden = tower.config.hidden_size
    num_slots, width = len(num_classes), max(num_classes)
    # One head of num_slots x width logits; classes a slot does not have are masked out of its softmax.
    # With equal class counts in every slot the mask is empty and this is the plain per-slot softmax.
    invalid = torch.arange(width)[None, :] >= torch.tensor(num_classes)[:, None]  # (slots, width)
    heads = torch.nn.Linear(hidden, num_slots * width)
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    x_all, y_all = torch.stack(frames), torch.tensor(labels)  # (N, 3, H, W), (N, slots)
    if y_all.shape[1] != num_slots or bool((y_all < 0).any()) or bool((y_all >= torch.tensor(num_classes)).any()):
        raise ValueError(f"perception labels outside their classes {tuple(num_classes)}")
    gen, accs = torch.Generator().manual_seed(seed), []
    tower.train()
    for _ in range(steps):
        idx = torch.randint(0, len(frames), (64,), generator=gen)
        feats = tower(pixel_values=x_all[idx], output_hidden_states=True).hidden_states[-1][:, 1:]  # drop CLS
        logits = heads(feats.mean(1)).view(-1, num_slots, width)
        if invalid.any():
            logits = logits.masked_fill(invalid, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, width), y_all[idx].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(float((logits.argmax(-1) == y_all[idx]).float().mean()))
    return float(np.mean(accs[-20:]))


def tokenizer_corpus(task: str | Task) -> list[str]:
    """Every string the task's prompts and answers are made of (the BPE merges are learned from these):
    Task.corpus, or without one `expert_corpus`."""
    task = resolve_task(task)
    return task.corpus() if task.corpus is not None else expert_corpus(task)


CORPUS_EPISODES, CORPUS_NOISE = 200, (0.0, 0.45, 1.0)


def expert_corpus(task: Task, episodes: int = CORPUS_EPISODES) -> list[str]:
    """The default tokenizer corpus: both prompt variants (in the embedded model's chat template) and the expert's
    answers of `episodes` seeded episodes, played at the noise levels of CORPUS_NOISE in turn, so the prompts of
    states a poor policy reaches are in it too."""
    expert, env, rng, texts = _expert(task), task.make_env(), np.random.default_rng(0), []
    for episode in range(episodes):
        _, info = env.reset(seed=CORPUS_SEED_BASE + episode)
        noise, done = CORPUS_NOISE[episode % len(CORPUS_NOISE)], False
        while not done:
            action = expert.act(info, noise, rng)
            for cot in (True, False):
                texts += [chat_prompt(task.prompt(info, cot)), expert.response(info, action, cot)]
            _, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
    return texts


Example = tuple[torch.Tensor, list[int], list[int]]
"""One demonstration as trained on: pixel values (3, H, W), prompt ids (image expanded), response ids + EOS."""


def train_sft(task: str | Task, out_dir: str, model_cfg: ModelConfig, cfg: SFTConfig, cot: bool = True) -> dict:
    """Build the tokenizer and tiny VLM for `task`, pre-train its vision tower (when the task has perception
    labels), fine-tune it on noisy-expert demonstrations and save it (HF format, with a fresh value head) to
    `out_dir`. Returns the run's info."""
    t0 = time.perf_counter()
    task = resolve_task(task)
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(tokenizer_corpus(task), model_cfg.shape.vocab_size)
    vlm = build_tiny_llava(tokenizer, model_cfg.shape, seed=cfg.seed)
    demos = demonstrations(task, cfg.samples, cfg.action_noise, cfg.seed, cot)
    mean, std = frame_statistics([img for img, *_ in demos])
    processor = build_processor(tokenizer, model_cfg.shape, mean, std)
    examples = _examples(demos, processor)
    vision_acc = None
    if task.perception is not None:
        unique = {id(x): (x, perception_labels(task, info)) for (x, _, _), (*_, info) in zip(examples, demos)}
        frames, labels = zip(*unique.values())  # each distinct frame once (the pixel cache shares tensors)
        classes = perception_classes(task)
        vision_acc = pretrain_vision(vlm, list(frames), list(labels), classes, cfg.vision_steps, cfg.seed)
        log.info("vision pre-training: %d steps, state accuracy %.3f", cfg.vision_steps, vision_acc)
    else:
        log.info("task %s has no perception labels: no vision pre-training", task.name)
    losses, reads, step = _fine_tune(vlm, examples, tokenizer, cfg)
    info = {
        "task": task.name,
        "sft_samples": len(examples),
        "action_noise": cfg.action_noise,
        "steps": step,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "reading_accuracy": float(np.mean(reads[-50:])) if reads else None,
        "vision_pretrain_accuracy": vision_acc,
        "seconds": time.perf_counter() - t0,
    }
    save_policy(out_dir, vlm, processor, ValueHead(model_cfg.shape.text_hidden), info)
    log.info("sft done: %s", json.dumps(info))
    return info


def _examples(demos, processor) -> list[Example]:
    """Demonstrations as token ids and pixel values; equal frames share one tensor (few states, few frames)."""
    pixel_cache: dict[bytes, torch.Tensor] = {}

    def pixels(img: np.ndarray) -> torch.Tensor:
        key = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
        if key not in pixel_cache:
            pixel_cache[key] = processor.image_processor(images=Image.fromarray(img), return_tensors="pt")[
                "pixel_values"
            ][0]
        return pixel_cache[key]

    # Prompt ids with the image placeholder expanded, exactly as the processor (and vLLM) expand it.
    prompt_ids = {}
    for _, prompt, _, _ in demos:
        if prompt not in prompt_ids:
            dummy = Image.new("RGB", (300, 300))
            prompt_ids[prompt] = processor(text=prompt, images=dummy)["input_ids"][0]
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token_id
    return [
        (pixels(img), list(prompt_ids[p]), tokenizer(r, add_special_tokens=False)["input_ids"] + [eos])
        for img, p, r, _ in demos
    ]


def tokenized_demonstrations(demos, processor) -> list[tuple[Image.Image, list[int], list[int]]]:
    """`demonstrations` as (image, prompt ids with the image placeholder expanded as the processor and vLLM expand
    it, answer ids + EOS), for a checkpoint's own processor (SFT of a real checkpoint, PPO's demonstration pool)."""
    tokenizer, eos = processor.tokenizer, processor.tokenizer.eos_token_id
    prompt_ids: dict[tuple[str, tuple], list[int]] = {}  # expanded ids depend on the image size (LlavaNext)
    out = []
    for img, prompt, response, _ in demos:
        image, key = Image.fromarray(img), (prompt, img.shape)
        if key not in prompt_ids:
            prompt_ids[key] = [int(i) for i in processor(text=prompt, images=image)["input_ids"][0]]
        out.append((image, prompt_ids[key], tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]))
    return out


def finetune_checkpoint(task: str | Task, base: str, out_dir: str, cfg: SFTConfig, cot: bool = True) -> dict:
    """SFT of an existing HF checkpoint of any supported family (models/families.py) on the task's noisy-expert
    demonstrations, in the checkpoint's own chat template and image inputs (the paper SFTs LLaVA-1.6 before
    PPO). No vision pre-training: a real checkpoint brings its own. Saves to `out_dir` with a value head."""
    t0 = time.perf_counter()
    task = resolve_task(task)
    torch.manual_seed(cfg.seed)
    vlm, processor, value_head = load_policy(base)
    family, token = family_of_model(vlm), image_token_id(vlm.config)
    demos = demonstrations(task, cfg.samples, cfg.action_noise, cfg.seed, cot, chat=chat_format(processor))
    tokenizer = processor.tokenizer
    examples = tokenized_demonstrations(demos, processor)

    def inputs(batch, pad_id: int) -> dict[str, torch.Tensor]:
        text = _sft_text_inputs(batch, pad_id)
        return text | family.image_inputs(processor.image_processor, [x for x, _, _ in batch], text["input_ids"], token)

    losses, reads, step = _fine_tune(vlm, examples, tokenizer, cfg, inputs)
    info = {
        "task": task.name,
        "base": str(base),
        "sft_samples": len(examples),
        "action_noise": cfg.action_noise,
        "steps": step,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "reading_accuracy": float(np.mean(reads[-50:])) if reads else None,
        "seconds": time.perf_counter() - t0,
    }
    save_policy(out_dir, vlm, processor, value_head, info)
    log.info("sft done: %s", json.dumps(info))
    return info


def _fine_tune(vlm, examples: list, tokenizer, cfg: SFTConfig, inputs=None) -> tuple[list[float], list[float], int]:
    """cfg.epochs shuffled passes of teacher-forced cross-entropy on the response tokens, one-cycle LR.

    Returns the loss and reading accuracy of every step, and the number of steps.
    """
    # The first two digits of an answer are usually its reading of the image (the built-in tasks: the numbers or
    # card values it sees): their teacher-forced accuracy tells whether the vision path learned anything, which
    # the loss alone hides (for an answer without digits it is simply not measured).
    digit_ids = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    steps = cfg.epochs * (len(examples) // cfg.batch_size)
    opt = torch.optim.AdamW(vlm.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.05)
    vlm.train()
    rng, losses, reads, step = np.random.default_rng(cfg.seed), [], [], 0
    for _ in range(cfg.epochs):
        order = rng.permutation(len(examples))
        for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            batch = [examples[j] for j in order[i : i + cfg.batch_size]]
            out = vlm(**(inputs or _sft_inputs)(batch, tokenizer.pad_token_id))
            if (read := _reading_accuracy(out.logits.detach(), batch, digit_ids)) is not None:
                reads.append(read)
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(vlm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(out.loss.item())
            step += 1
            if step % 50 == 0:
                log.info(
                    "sft step %d/%d loss %.4f reading acc %.3f",
                    step,
                    steps,
                    np.mean(losses[-50:]),
                    np.mean(reads[-50:]) if reads else float("nan"),
                )
    vlm.eval()
    return losses, reads, step


def _sft_inputs(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """The embedded VLM's keyword inputs for a batch (pixel values stacked, (B, 3, H, W))."""
    return _sft_text_inputs(batch, pad_id) | {"pixel_values": torch.stack([x for x, _, _ in batch])}


def _sft_text_inputs(batch: list, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels (B, L): the response ids, -100 (ignored) on prompt and padding.

    Laid out by the PPO learner's padding (learner/batch.py), so SFT and PPO score the same sequences.
    """
    prompts, responses = [p for _, p, _ in batch], [r for _, _, r in batch]
    ids, mask = pad_prompt_response(prompts, responses, pad_id)  # (B, L) each
    positions = torch.arange(ids.shape[1]).unsqueeze(0)  # (1, L)
    is_response = (positions >= torch.tensor([len(p) for p in prompts]).unsqueeze(1)) & mask.bool()  # (B, L)
    labels = ids.masked_fill(~is_response, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _reading_accuracy(logits: torch.Tensor, batch, digit_ids: set[int]) -> float | None:
    """Teacher-forced argmax accuracy on the first two digit tokens of each answer (its reading)."""
    hits = total = 0
    for b, (_, p, r) in enumerate(batch):
        positions = [j for j, t in enumerate(r) if t in digit_ids][:2]
        for j in positions:
            hits += int(logits[b, len(p) + j - 1].argmax()) == r[j]
            total += 1
    return hits / total if total else None  # None: no answer of the batch has a digit


@dataclass
class SFTCommand:
    """Build the tiny VLM for a task and fine-tune it on noisy-expert demonstrations. Every default is what
    `python -m cluster.train --env.task TASK` resolves (preset and task defaults), so `make sft` builds what
    `make train` would."""

    task: str = EnvConfig.task
    """Task whose run config gives the defaults of every other flag (`--help` after `--task` shows them): a
    built-in name, an installed task's name or package.module:attr (docs/tasks.md)."""
    out: str = ""
    """Checkpoint folder (the preset's model.path, where `make train` looks for it)."""
    base: str = ""
    """An HF checkpoint of a supported family to fine-tune (e.g. llava-v1.6-mistral-7b-hf); empty = build the
    embedded tiny VLM. Pass a learning rate for its size (--lr; the default 1e-3 is the tiny model's)."""
    sft: Annotated[SFTConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SFTConfig)
    """SFT settings (flags without a prefix: --samples, --vision-steps, ...)."""
    shape: TinyVLMShape = field(default_factory=TinyVLMShape)


def parse_cli(argv: list[str] | None = None) -> SFTCommand:
    """Two passes of tyro: the first reads only --task, whose run config then supplies the second's defaults."""

    @dataclass
    class TaskOnly:
        task: str = EnvConfig.task

    task = tyro.cli(TaskOnly, args=argv, return_unknown_args=True, add_help=False)[0].task
    try:
        run = task_config(["--env.task", task])[0]
    except (TaskError, ConfigError) as error:  # an unknown or broken task: one line, as the driver prints it
        raise SystemExit(f"error: {error}") from None
    default = SFTCommand(task=task, out=run.model.path, sft=run.sft, shape=run.model.shape)
    return tyro.cli(SFTCommand, args=argv, default=default, description=__doc__)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cmd = parse_cli(argv)
    run = task_config(["--env.task", cmd.task])[0]
    pathlib.Path(cmd.out).parent.mkdir(parents=True, exist_ok=True)
    if cmd.base:
        finetune_checkpoint(cmd.task, cmd.base, cmd.out, cmd.sft, cot=run.env.cot)
        return
    model = dataclasses.replace(run.model, path=cmd.out, shape=cmd.shape)
    train_sft(cmd.task, cmd.out, model, cmd.sft, cot=run.env.cot)


if __name__ == "__main__":
    main()
