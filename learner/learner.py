"""LearnerWorker: one DeepSpeed ZeRO rank running the paper's PPO update (one Ray actor per rank).

Each update: score the shard once without gradients (values, proximal log-probs), GAE per episode, advantages
normalised over all ranks, then `epochs` passes of clipped PPO over micro-batches. Stale samples are
weighted by the truncated importance ratio π_prox/π_behav against the engine's behaviour log-probs.
A plain class; cluster/launch.py wraps it with `ray.remote`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pathlib
import random
import time

import numpy as np
import torch

from contracts.config import LearnerConfig, PPOConfig
from learner import ppo
from learner.batch import TokenTexts, collate, samples_from_table
from models.policy import PolicyWithValue, load_policy, save_policy
from models.tokenizer import banned_token_ids
from models.weight_sync import WeightsPayload, export_arrays


def clear_stale_build_lock(extension: str, max_age_s: float = 600.0) -> bool:
    """Remove a JIT-build lock left by a killed process (DeepSpeed builds its CPU shm op on first use, ~45 s).

    torch's FileBaton waits forever on a lock whose owner died, so every later learner would hang at start.
    A lock older than any real build is taken as stale.
    """
    from torch.utils.cpp_extension import _get_build_directory

    lock = pathlib.Path(_get_build_directory(extension, verbose=False)) / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > max_age_s:
        logging.getLogger(__name__).warning("removing stale build lock %s", lock)
        lock.unlink(missing_ok=True)
        return True
    return False


class LearnerWorker:
    def __init__(
        self,
        rank: int,
        world_size: int,
        master_port: int,
        model_path: str,
        ppo_cfg: PPOConfig,
        cfg: LearnerConfig,
        total_updates: int,
        temperature: float,
        seed: int = 0,
    ):
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(master_port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK="0",
            # Chosen per rank, not cluster-wide: GPU learner nodes use CUDA while CPU nodes use DeepSpeed's cpu one.
            DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu"),
        )
        import deepspeed

        clear_stale_build_lock("deepspeed_shm_comm")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
        torch.manual_seed(seed + rank)
        random.seed(seed + rank)
        self.rank, self.world_size = rank, world_size
        self.ppo_cfg, self.cfg = ppo_cfg, cfg
        self.total_updates, self.temperature = total_updates, temperature
        vlm, self.processor, value_head = load_policy(model_path)
        self.module = PolicyWithValue(vlm, value_head)
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=ppo_cfg.lr, eps=1e-7, weight_decay=0.0)
        ds_config = {
            "train_micro_batch_size_per_gpu": ppo_cfg.micro_batch,
            "gradient_accumulation_steps": ppo_cfg.grad_accum,
            "gradient_clipping": ppo_cfg.max_grad_norm,
            "zero_optimization": {"stage": cfg.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer = self._wrap(optimizer, ds_config)
        # Where DeepSpeed put the module (cuda:LOCAL_RANK or cpu): batches go there, replay data stays on the host.
        self.device = torch.device(self.engine.device)
        tokenizer = self.processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.banned = torch.tensor(banned_token_ids(tokenizer), device=self.device)
        self.token_texts = TokenTexts(tokenizer)
        self.updates = 0

    def _wrap(self, optimizer, ds_config: dict):
        """DeepSpeed's engine around the module: forward, backward (÷ grad_accum), clip and step at boundaries.

        The only place that knows DeepSpeed trains the model (the benchmarks' plain-torch learner overrides it).
        """
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer, config=ds_config)
        return engine, optimizer

    # ---- scoring ---------------------------------------------------------------------------------------------
    def _score(self, batch: dict[str, torch.Tensor], detach_value: bool = False):
        """Forward one micro-batch: λ-scaled sequence log-probs (B,), values (B,), token log-probs (B, R).

        Inputs are moved to the module's device; the outputs stay there (the PPO loss needs their gradients).
        """
        batch = {k: v.to(self.device) for k, v in batch.items()}
        logits, values = self.engine(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["value_index"], detach_value
        )
        idx = batch["logit_index"].unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (B, R, V)
        response_logits = logits.gather(1, idx).float()
        response_logits[..., self.banned] = float("-inf")  # the engine never samples these either
        token_logp = ppo.token_logprobs(response_logits, batch["targets"], self.temperature)
        token_logp = token_logp.masked_fill(~batch["response_mask"], 0.0)
        seq = ppo.scaled_sequence_logprob(
            token_logp, batch["response_mask"], batch["action_start"], self.ppo_cfg.cot_coef
        )
        return seq, values.float(), token_logp

    def _all_reduce(self, values: list[float], op=None) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)  # NCCL: device tensors
        if self.world_size > 1:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.tolist()

    # ---- PPO update ------------------------------------------------------------------------------------------
    def train(self, shard, learner_version: int) -> dict[str, float]:
        """One PPO update on this rank's shard (an Arrow table or its object ref). Collective: all ranks call it."""
        import torch.distributed as dist

        t0 = time.perf_counter()
        if not hasattr(shard, "num_rows"):
            import ray

            shard = ray.get(shard)
        samples = samples_from_table(shard, self.token_texts)
        cfg, mb = self.ppo_cfg, self.ppo_cfg.micro_batch
        n = len(samples)

        # 1. Proximal pass: values and log-probs under the weights this update starts from.
        self.engine.eval()
        old_logp, old_values, behav_logp = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        # Under ZeRO-3 every forward is collective, so all ranks run the same number of them: a rank with a
        # smaller shard repeats its last micro-batch and discards the result.
        num_batches = int(self._all_reduce([math.ceil(n / mb)], dist.ReduceOp.MAX)[0])
        with torch.no_grad():
            for k in range(num_batches):
                i = min(k, math.ceil(n / mb) - 1) * mb
                batch = collate(samples[i : i + mb], self.processor.image_processor, self.pad_id)
                seq, val, _ = self._score(batch)
                if k * mb >= n:
                    continue
                old_logp[i : i + mb], old_values[i : i + mb] = seq.cpu(), val.cpu()
                behav_logp[i : i + mb] = ppo.scaled_sequence_logprob(
                    batch["behaviour_logprobs"], batch["response_mask"], batch["action_start"], cfg.cot_coef
                )

        # 2. GAE per episode (samples are sorted by episode and step), normalised over all ranks.
        rewards = torch.tensor([s.reward for s in samples])
        dones = torch.tensor([s.done for s in samples])
        advantages, returns = ppo.gae(rewards, old_values, dones, cfg.gamma, cfg.gae_lambda)
        total, total_sq, count = self._all_reduce([advantages.sum(), (advantages**2).sum(), float(n)])
        mean = total / count
        std = math.sqrt(max(total_sq / count - mean**2, 0.0))
        advantages = ppo.normalize(advantages, mean, std)
        weights = ppo.importance_weights(old_logp, behav_logp, cfg.is_cap)

        # 3. PPO epochs. Every rank runs the same number of micro-batches (DeepSpeed reduces gradients together).
        lr = cfg.end_lr + 0.5 * (cfg.lr - cfg.end_lr) * (1 + math.cos(math.pi * self.updates / self.total_updates))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        steps_per_epoch = int(self._all_reduce([n // mb], dist.ReduceOp.MIN)[0])
        steps_per_epoch = max(cfg.grad_accum, steps_per_epoch // cfg.grad_accum * cfg.grad_accum)
        warmup = self.updates < cfg.value_warmup_updates  # value head only: policy and trunk stay as they are
        self.engine.train()
        logs: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_frac": [], "approx_kl": []}
        stopped_early = False
        for _ in range(cfg.epochs):
            if stopped_early:
                break
            order = torch.randperm(n).tolist()
            order = (order * math.ceil(steps_per_epoch * mb / n))[: steps_per_epoch * mb]  # repeat if short
            for j in range(steps_per_epoch):
                idx = order[j * mb : (j + 1) * mb]
                batch = collate([samples[i] for i in idx], self.processor.image_processor, self.pad_id)
                new_logp, values, _ = self._score(batch, detach_value=warmup)
                dev = new_logp.device
                pg_loss, stats = ppo.policy_loss(
                    new_logp, old_logp[idx].to(dev), advantages[idx].to(dev), cfg.clip, weights[idx].to(dev)
                )
                v_loss = ppo.value_loss(values, old_values[idx].to(dev), returns[idx].to(dev), cfg.clip)
                loss = cfg.vf_coef * v_loss if warmup else pg_loss + cfg.vf_coef * v_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite PPO loss at update {self.updates}: {loss.item()}")
                self.engine.backward(loss)
                self.engine.step()
                logs["policy_loss"].append(pg_loss.item())
                logs["value_loss"].append(v_loss.item())
                logs["clip_frac"].append(stats["clip_frac"])
                logs["approx_kl"].append(stats["approx_kl"])
                if (j + 1) % cfg.grad_accum == 0:  # an optimizer-step boundary: every rank decides together
                    kl = self._all_reduce([float(np.mean(logs["approx_kl"][-cfg.grad_accum :]))])[0] / self.world_size
                    if not kl <= cfg.target_kl:  # NaN stops too
                        stopped_early = True
                        break
        self.updates += 1
        staleness = [learner_version - s.policy_version for s in samples]
        out = {f"learner/{k}": float(np.mean(v)) for k, v in logs.items()}
        out.update(
            {
                "learner/lr": lr,
                "learner/value_warmup": float(warmup),
                "learner/stopped_early": float(stopped_early),
                "learner/optimizer_micro_steps": float(len(logs["approx_kl"])),
                "learner/samples": float(n),
                "learner/value_mean": float(old_values.mean()),
                "learner/return_mean": float(returns.mean()),
                "learner/is_weight_mean": float(weights.mean()),
                "learner/behaviour_gap": float((old_logp - behav_logp).abs().mean()),
                "learner/staleness_mean": float(np.mean(staleness)),
                "learner/staleness_max": float(np.max(staleness)),
                **{f"learner/staleness_count_{k}": float(np.sum(np.minimum(staleness, 3) == k)) for k in range(4)},
                "timing/train_s": time.perf_counter() - t0,
            }
        )
        return out

    # ---- weights and checkpoints -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _full_params(self):
        """Full weights on every rank: a no-op for ZeRO 1/2, a gather for ZeRO-3 (collective)."""
        if self.cfg.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def export_weights(self, version: int) -> WeightsPayload | None:
        """The VLM's weights (vLLM names) from rank 0; other ranks return None. Collective under ZeRO-3."""
        with self._full_params():
            if self.rank != 0:
                return None
            named = export_arrays(self.module.vlm)  # copied out while the full weights are gathered
        return WeightsPayload.build(version, named)

    def save(self, path: str, info: dict | None = None) -> None:
        """HF-format checkpoint (+ value head) from rank 0. Collective under ZeRO-3."""
        with self._full_params():
            if self.rank == 0:
                save_policy(path, self.module.vlm, self.processor, self.module.value_head, info)

    def save_checkpoint(self, directory: str, info: dict | None = None) -> None:
        """Model (rank 0) and this rank's optimizer state, update count and RNG states. Collective (ZeRO-3)."""
        from learner.state_files import save_state

        path = pathlib.Path(directory)
        self.save(str(path / "model"), info)
        state = {"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
        version, internal, gauss = random.getstate()
        extra = {"updates": self.updates, "python_rng": [version, list(internal), gauss], "world_size": self.world_size}
        save_state(path, f"learner_rank{self.rank}", state, extra)

    def load_checkpoint(self, directory: str) -> int:
        """Restore what `save_checkpoint` wrote (the model itself was loaded from `directory`/model at start).

        Needs the same number of ranks and ZeRO stage (each rank's optimizer holds its own partition).
        """
        from learner.state_files import CheckpointError, load_state

        fresh = {"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
        state, extra = load_state(pathlib.Path(directory), f"learner_rank{self.rank}", fresh)
        if extra.get("world_size") != self.world_size:
            raise CheckpointError(f"checkpoint has {extra.get('world_size')} learner ranks, this run {self.world_size}")
        try:
            if self.cfg.zero_stage == 3:
                self.optimizer.load_state_dict([state["optimizer"]] * self.world_size)
            else:
                self.optimizer.load_state_dict([state["optimizer"]] * self.world_size, load_from_fp32_weights=True)
        except (KeyError, RuntimeError, ValueError, IndexError) as error:
            raise CheckpointError(f"optimizer state does not fit this learner: {error}") from error
        torch.set_rng_state(state["torch_rng"])
        version, internal, gauss = extra["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        self.updates = int(extra["updates"])
        return self.updates

    def logprobs(self, prompt_ids: list[int], response_ids: list[int], image) -> list[float]:
        """Per-token processed log-probs of a response under the learner's weights (tests compare with vLLM).

        Collective under ZeRO-3 (a forward gathers the sharded weights): call it on every rank.
        """
        from learner.batch import Sample

        sample = Sample("probe", 0, 0, prompt_ids, response_ids, [0.0] * len(response_ids), image, 0.0, True, 0)
        batch = collate([sample], self.processor.image_processor, self.pad_id)
        self.engine.eval()
        with torch.no_grad():
            _, _, token_logp = self._score(batch)
        return token_logp[0, : len(response_ids)].tolist()
