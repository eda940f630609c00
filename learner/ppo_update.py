"""One PPO update of the paper, independent of DeepSpeed, Ray and process groups: `ppo_update`.

The update sees the model only through `StepModel` (score a micro-batch, backward, step, learning rate, mode)
and the other learner ranks only through `AllReduce`. A learner rank (learner/learner.py) passes DeepSpeed
and torch.distributed behind them; a test passes plain torch and `single_process`, and runs the very same
update on CPU. Shapes: N = samples on this rank, B = micro-batch, R = response tokens.

Steps: score the shard once without gradients (proximal log-probs and values), GAE per episode, advantages
normalised over all ranks, then `epochs` passes of clipped PPO over micro-batches. Stale samples are weighted
by the truncated importance ratio π_prox/π_behav against the rollout engine's behaviour log-probs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from contracts.config import PPOConfig
from learner import ppo
from learner.batch import Sample

ReduceOp = Literal["sum", "mean", "max", "min"]
Batch = dict[str, torch.Tensor]


class StepModel(Protocol):
    """What an update needs from the model it trains (learner/step_model.py has the one implementation)."""

    def score(self, batch: Batch, detach_value: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """λ-scaled sequence log-probs (B,), values (B,) and token log-probs (B, R) of a collated micro-batch.

        `detach_value` keeps the value loss's gradient out of the shared trunk (value warm-up).
        """
        ...

    def demo_logprobs(
        self, batch: Batch, slot: torch.Tensor, slot_ids: torch.Tensor, slot_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs (B, R) at T = 1, with gradients, of a collated batch of demonstrations, and the
        log of the summed probability (B,) of the ids `slot_ids` (B, K; `slot_mask` (B, K) marks the real ones)
        at response position `slot` (B,)."""
        ...

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro-batch's loss (scaled by 1/grad_accum)."""
        ...

    def step(self) -> None:
        """End of a micro-batch; every grad_accum-th call clips the gradients and steps the optimizer."""
        ...

    def set_lr(self, lr: float) -> None: ...

    def train_mode(self) -> None: ...

    def eval_mode(self) -> None: ...


class AllReduce(Protocol):
    """Reduce a few floats over all learner ranks; every rank calls it at the same point of the update."""

    def __call__(self, values: list[float], op: ReduceOp = "sum") -> list[float]: ...


PHASES = ("collate", "proximal", "forward", "backward", "optimizer")


@dataclass
class PhaseClock:
    """Seconds an update spent in each of its phases (disjoint): collate, proximal (its no-grad forwards),
    forward (the epochs' forwards and losses), backward, optimizer (`StepModel.step`). Wall clock, as torch's
    CPU ops are synchronous; on a GPU the forward's kernels may be counted in the phase that waits for them."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


def single_process(values: list[float], op: ReduceOp = "sum") -> list[float]:
    """`AllReduce` of a single rank: each value is already its own sum, mean, max and min."""
    return [float(v) for v in values]


@dataclass
class Demonstration:
    """One expert answer of the demonstration loss (PPOConfig.demo_coef; learner/demos.py builds the pool)."""

    sample: Sample
    slot: int
    """Response index where the task's legal answers to this state first differ (the action's name begins);
    the answer's length when they never do."""
    slot_ids: list[int]
    """The token each legal answer has at `slot` (at least one)."""


@dataclass
class ProximalScores:
    """The shard scored under the weights this update starts from, all (N,) on the host."""

    proximal_logp: torch.Tensor
    """λ-scaled sequence log-probs: PPO's ratio is taken against them."""
    proximal_values: torch.Tensor
    """Values: GAE's baseline and the value clip's centre."""
    behaviour_logp: torch.Tensor
    """The same λ-scaled sum over the rollout engine's log-probs (the policy that generated the sample)."""


def proximal_pass(
    model: StepModel,
    samples: list[Sample],
    make_batch: Callable[[list[Sample]], Batch],
    cfg: PPOConfig,
    all_reduce: AllReduce,
    clock: PhaseClock | None = None,
) -> ProximalScores:
    """Score every sample once, without gradients, in micro-batches of cfg.micro_batch."""
    clock = clock or PhaseClock()
    n, mb = len(samples), cfg.micro_batch
    scores = ProximalScores(torch.zeros(n), torch.zeros(n), torch.zeros(n))
    model.eval_mode()
    # Under ZeRO-3 every forward is collective, so all ranks run the same number of them: a rank with a
    # smaller shard repeats its last micro-batch and discards the result.
    num_batches = int(all_reduce([math.ceil(n / mb)], "max")[0])
    with torch.no_grad():
        for k in range(num_batches):
            i = min(k, math.ceil(n / mb) - 1) * mb
            with clock.phase("collate"):
                batch = make_batch(samples[i : i + mb])
            with clock.phase("proximal"):
                seq, values, _ = model.score(batch)
            if k * mb >= n:
                continue
            scores.proximal_logp[i : i + mb], scores.proximal_values[i : i + mb] = seq.cpu(), values.cpu()
            scores.behaviour_logp[i : i + mb] = ppo.scaled_sequence_logprob(
                batch["behaviour_logprobs"], batch["response_mask"], batch["action_start"], cfg.cot_coef
            )
    return scores


@dataclass
class Advantages:
    """GAE advantages normalised over all ranks and the returns, (N,) each, with the raw advantages' spread."""

    normalised: torch.Tensor
    returns: torch.Tensor
    raw_mean: float
    raw_std: float
    """Before normalising: it shrinks towards the value head's error as success saturates."""


def advantages_and_returns(
    samples: list[Sample], proximal_values: torch.Tensor, cfg: PPOConfig, all_reduce: AllReduce
) -> Advantages:
    """GAE per episode (samples are sorted by episode and step), advantages normalised over all ranks: divided by
    max(std, cfg.adv_std_floor). Once success saturates the spread left is mostly the value head's error, and
    dividing by its shrinking std blew that up to unit size (the late collapse, README).

    An unparsable answer's reward is lowered by cfg.invalid_penalty: without it such an answer is worth a random
    legal action, as good as a coin flip wherever the policy is no better than one.
    """
    rewards = torch.tensor([s.record.reward - cfg.invalid_penalty * (not s.record.action_valid) for s in samples])
    dones = torch.tensor([s.done for s in samples])
    advantages, returns = ppo.gae(rewards, proximal_values, dones, cfg.gamma, cfg.gae_lambda)
    total, total_sq, count = all_reduce([advantages.sum(), (advantages**2).sum(), float(len(samples))])
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    normalised = ppo.normalize(advantages, mean, max(std, cfg.adv_std_floor))
    return Advantages(normalised, returns, mean, std)


def micro_batches_per_epoch(n: int, cfg: PPOConfig, all_reduce: AllReduce) -> int:
    """The same count on every rank (DeepSpeed reduces gradients together): whole optimizer steps of the
    smallest shard, at least one optimizer step (a short shard's samples then repeat). The replay store gives
    every shard at least its share of the update's steps (actors/replay_store.py `take`)."""
    per_epoch = int(all_reduce([n // cfg.micro_batch], "min")[0])
    return max(cfg.grad_accum, per_epoch // cfg.grad_accum * cfg.grad_accum)


@dataclass
class Targets:
    """Everything a PPO micro-batch's loss compares against, all (N,), fixed for the whole update."""

    scores: ProximalScores
    advantages: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor
    """Truncated importance weights π_prox/π_behav."""


def ppo_epochs(
    model: StepModel,
    samples: list[Sample],
    make_batch: Callable[[list[Sample]], Batch],
    cfg: PPOConfig,
    targets: Targets,
    warmup: bool,
    all_reduce: AllReduce,
    clock: PhaseClock | None = None,
    demos: list[Demonstration] | None = None,
) -> tuple[dict[str, list[float]], bool]:
    """cfg.epochs shuffled passes of clipped PPO; returns per-micro-batch logs and whether KL stopped them early.

    During value warm-up only the value loss is used and the trunk is detached: policy and trunk stay put.
    With `demos` and cfg.demo_coef > 0 each micro-batch's loss also has the demonstration loss of
    cfg.demo_batch of them (drawn with the global torch RNG, so a resumed run draws the same ones).
    """
    use_demos = bool(demos) and cfg.demo_coef > 0 and not warmup
    n, mb = len(samples), cfg.micro_batch
    clock = clock or PhaseClock()
    per_epoch = micro_batches_per_epoch(n, cfg, all_reduce)
    model.train_mode()
    logs: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_frac": [], "approx_kl": []}
    if use_demos:
        logs["demo_loss"] = []
    for _ in range(cfg.epochs):
        order = torch.randperm(n).tolist()  # the global torch RNG: a checkpoint restores it (learner.py)
        order = (order * math.ceil(per_epoch * mb / n))[: per_epoch * mb]  # repeat if short
        for j in range(per_epoch):
            idx = order[j * mb : (j + 1) * mb]
            with clock.phase("collate"):
                batch = make_batch([samples[i] for i in idx])
            with clock.phase("forward"):
                pg_loss, v_loss, stats = micro_batch_losses(model, batch, idx, cfg, targets, warmup)
                loss = cfg.vf_coef * v_loss if warmup else pg_loss + cfg.vf_coef * v_loss
            if use_demos:
                demo_loss = demonstration_loss(model, demos, make_batch, cfg, clock)
                loss = loss + cfg.demo_coef * demo_loss
                logs["demo_loss"].append(demo_loss.item())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite PPO loss: {loss.item()}")
            with clock.phase("backward"):
                model.backward(loss)
            with clock.phase("optimizer"):
                model.step()
            logs["policy_loss"].append(pg_loss.item())
            logs["value_loss"].append(v_loss.item())
            logs["clip_frac"].append(stats["clip_frac"])
            logs["approx_kl"].append(stats["approx_kl"])
            # Without this stop the policy took KL 3-5 steps once success saturated and collapsed into invalid text.
            if (j + 1) % cfg.grad_accum == 0:  # an optimizer-step boundary: every rank decides together
                kl = all_reduce([float(np.mean(logs["approx_kl"][-cfg.grad_accum :]))], "mean")[0]
                if not kl <= cfg.target_kl:  # NaN stops too
                    return logs, True
    return logs, False


def demonstration_loss(
    model: StepModel, demos: list[Demonstration], make_batch: Callable[[list[Sample]], Batch], cfg: PPOConfig, clock
) -> torch.Tensor:
    """The demonstration loss (scalar, with gradients) of cfg.demo_batch demonstrations drawn from `demos`."""
    chosen = [demos[i] for i in torch.randint(len(demos), (cfg.demo_batch,)).tolist()]
    with clock.phase("collate"):
        batch = make_batch([d.sample for d in chosen])
        width = max(len(d.slot_ids) for d in chosen)
        slot_ids = torch.tensor([d.slot_ids + d.slot_ids[:1] * (width - len(d.slot_ids)) for d in chosen])  # (B, K)
        slot_mask = torch.arange(width).unsqueeze(0) < torch.tensor([[len(d.slot_ids)] for d in chosen])  # (B, K)
        slot = torch.tensor([d.slot for d in chosen])  # (B,)
    with clock.phase("forward"):
        token_logp, slot_logp = model.demo_logprobs(batch, slot, slot_ids, slot_mask)  # (B, R), (B,)
        dev = token_logp.device
        return ppo.demo_nll(token_logp, batch["response_mask"].to(dev), slot.to(dev), slot_logp)


def micro_batch_losses(
    model: StepModel, batch: Batch, idx: list[int], cfg: PPOConfig, targets: Targets, warmup: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Policy loss, value loss (scalars with gradients) and the policy loss's stats of the micro-batch of the
    samples at `idx` (positions in the shard, which index `targets`)."""
    new_logp, values, _ = model.score(batch, detach_value=warmup)  # (B,), (B,)
    dev = new_logp.device
    scores = targets.scores
    pg_loss, stats = ppo.policy_loss(
        new_logp,
        scores.proximal_logp[idx].to(dev),
        targets.advantages[idx].to(dev),
        cfg.clip,
        targets.weights[idx].to(dev),
    )
    v_loss = ppo.value_loss(values, scores.proximal_values[idx].to(dev), targets.returns[idx].to(dev), cfg.value_clip)
    return pg_loss, v_loss, stats


def ppo_update(
    model: StepModel,
    samples: list[Sample],
    make_batch: Callable[[list[Sample]], Batch],
    cfg: PPOConfig,
    update: int,
    total_updates: int,
    learner_version: int,
    all_reduce: AllReduce = single_process,
    demos: list[Demonstration] | None = None,
) -> dict[str, float]:
    """PPO update number `update` (0-based; it sets the cosine learning rate and the value warm-up) on this
    rank's samples. Collective when `all_reduce` spans ranks: every rank calls it with its own shard.

    `make_batch` collates samples into model inputs (learner/batch.py `collate`). Returns the `learner/` metrics;
    staleness is counted against `learner_version`, the version of the weights the update starts from.
    `demos`: the demonstration pool of cfg.demo_coef (learner/demos.py), the same on every rank.
    """
    clock = PhaseClock()
    scores = proximal_pass(model, samples, make_batch, cfg, all_reduce, clock)
    adv = advantages_and_returns(samples, scores.proximal_values, cfg, all_reduce)
    weights = ppo.importance_weights(scores.proximal_logp, scores.behaviour_logp, cfg.is_cap)
    lr = ppo.cosine_lr(update, total_updates, cfg.lr, cfg.end_lr)
    model.set_lr(lr)
    warmup = update < cfg.value_warmup_updates  # value head only: policy and trunk stay as they are
    targets = Targets(scores, adv.normalised, adv.returns, weights)
    try:
        logs, stopped_early = ppo_epochs(model, samples, make_batch, cfg, targets, warmup, all_reduce, clock, demos)
    except FloatingPointError as error:
        raise FloatingPointError(f"update {update}: {error}") from error
    staleness = [learner_version - s.record.policy_version for s in samples]
    return {
        **{f"learner/{k}": float(np.mean(v)) for k, v in logs.items()},
        "learner/lr": lr,
        "learner/value_warmup": float(warmup),
        "learner/stopped_early": float(stopped_early),
        "learner/optimizer_micro_steps": float(len(logs["approx_kl"])),
        "learner/samples": float(len(samples)),
        "learner/value_mean": float(scores.proximal_values.mean()),
        "learner/return_mean": float(adv.returns.mean()),
        "learner/advantage_mean": adv.raw_mean,
        "learner/advantage_std": adv.raw_std,
        "learner/is_weight_mean": float(weights.mean()),
        "learner/behaviour_gap": float((scores.proximal_logp - scores.behaviour_logp).abs().mean()),
        "learner/staleness_mean": float(np.mean(staleness)),
        "learner/staleness_max": float(np.max(staleness)),
        **{f"learner/staleness_count_{k}": float(np.sum(np.minimum(staleness, 3) == k)) for k in range(4)},
        **{f"timing/{name}_s": seconds for name, seconds in clock.seconds.items()},
    }
