"""LearnerWorker: one DeepSpeed ZeRO rank running the paper's PPO update (one Ray actor per rank).

The update itself is learner/ppo_update.py `ppo_update`, which knows neither DeepSpeed nor the other ranks.
This rank gives it DeepSpeed's model behind `StepModel` (learner/step_model.py) and all-reduces over
torch.distributed, and keeps what outlives an update: the update count, weights export and checkpoints.
A plain class; cluster/launch.py wraps it with `ray.remote`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pathlib
import random
import time

import torch

from contracts.config import LearnerConfig, LoRAConfig, PPOConfig
from learner.batch import Sample, TokenTexts, collate, samples_from_table
from learner.demos import demo_pool
from learner.ppo_update import ReduceOp, ppo_update
from learner.step_model import WrappedModelStep, param_groups
from models import lora
from models.attention import use_fp32_attention_on_cpu
from models.checkpoint_files import ModelFiles, ensure_local
from models.families import family_of_model, image_token_id, torch_dtype
from models.policy import PolicyWithValue, load_policy, save_lora_policy, save_policy
from models.tokenizer import banned_token_ids
from models.weight_sync import PROBE_TOLERANCE, Probe, WeightsPayload, export_arrays, probe_inputs


def skip_shm_op() -> None:
    """Keep DeepSpeed from building and starting its CPU shared-memory all-reduce op in `init_distributed`.

    That op serves only DeepSpeed inference's tensor-parallel all-reduce; training's all-reduces go through
    torch.distributed (gloo here) either way. Starting it costs a ~45 s JIT build under a file lock that a rank
    killed meanwhile leaves behind for every later learner, 66 MB of /dev/shm per rank that a killed rank never
    frees, and a busy-wait with no timeout until every peer's segment exists: a peer that dies first leaves the
    others spinning forever. DeepSpeed consults this dict before building the op (deepspeed/comm/torch.py).
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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
        dtype: str = "float32",
        model_files: ModelFiles | None = None,
        lora_cfg: LoRAConfig | None = None,
        engine_dtype: str = "",
        task: str = "",
        cot: bool = True,
    ):
        model_path = ensure_local(model_path, model_files)  # first: shipped here if this node cannot read it
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

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        skip_shm_op()
        deepspeed.init_distributed(dist_backend=backend)
        torch.manual_seed(seed + rank)
        random.seed(seed + rank)
        self.rank, self.world_size = rank, world_size
        self.ppo_cfg, self.cfg = ppo_cfg, cfg
        self.total_updates, self.temperature = total_updates, temperature
        self.module = self._policy(model_path, lora_cfg or LoRAConfig(), seed)
        self.family, self.image_token_id = family_of_model(self.module.vlm), image_token_id(self.module.vlm.config)
        optimizer = torch.optim.AdamW(param_groups(self.module, ppo_cfg), lr=ppo_cfg.lr, eps=1e-7, weight_decay=0.0)
        ds_config = {
            "train_micro_batch_size_per_gpu": ppo_cfg.micro_batch,
            "gradient_accumulation_steps": ppo_cfg.grad_accum,
            "gradient_clipping": ppo_cfg.max_grad_norm,
            "zero_optimization": {"stage": cfg.zero_stage},
            # bf16: DeepSpeed runs the module in bf16 and keeps fp32 master weights in the (ZeRO) optimizer.
            "bf16": {"enabled": torch_dtype(dtype) == torch.bfloat16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        self.ds_model, self.optimizer = self._wrap(optimizer, ds_config)
        # Where DeepSpeed put the module (cuda:LOCAL_RANK or cpu): batches go there, replay data stays on the host.
        self.device = torch.device(self.ds_model.device)
        tokenizer = self.processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        banned = torch.tensor(banned_token_ids(tokenizer), device=self.device)
        self.step_model = WrappedModelStep(
            self.ds_model, self.optimizer, self.device, banned, temperature, ppo_cfg.cot_coef
        )
        self.token_texts = TokenTexts(tokenizer)
        self.probe = probe_inputs(self.processor)  # scored under every pushed version (models/weight_sync.py)
        self.dtype, self.engine_dtype = dtype, engine_dtype or dtype  # the rollout engines' (model.dtype)
        self.probe_tolerance = PROBE_TOLERANCE[self.engine_dtype]  # the probe is scored in the engines' dtype
        self.last_push: dict = {}
        self.updates = 0  # PPO updates done (checkpointed): the cosine schedule and the value warm-up follow it
        self.demos = demo_pool(task, self.processor, ppo_cfg.demo_samples, cot) if ppo_cfg.demo_coef > 0 else None
        """The demonstration loss's pool (learner/demos.py): the same expert steps on every rank."""

    def _policy(self, model_path: str, lora_cfg: LoRAConfig, seed: int) -> PolicyWithValue:
        """The trained module: the checkpoint's VLM (a LoRA checkpoint's with its adapter; fresh adapters when
        `lora_cfg.rank` > 0, the same on every rank) and its value head, always trained in full."""
        vlm, self.processor, value_head = load_policy(model_path)  # fp32: DeepSpeed casts for bf16 itself
        use_fp32_attention_on_cpu(vlm)  # a bf16 learner on CPU: attention in fp32 is faster (models/attention.py)
        self.lora_base = lora.base_path(model_path)
        """The frozen weights a LoRA checkpoint names (the run's start checkpoint)."""
        if lora_cfg.rank and not lora.is_lora(vlm):
            vlm = lora.apply_lora(vlm, lora_cfg, seed)
        return PolicyWithValue(vlm, value_head)

    def _wrap(self, optimizer, ds_config: dict):
        """DeepSpeed's model wrapper around the module: forward, backward (÷ grad_accum), clip and step at
        boundaries. The only place that knows DeepSpeed trains the model (the benchmarks' plain-torch learner
        overrides it with an object of the same shape, like learner/step_model.py `PlainTorchModel`).
        """
        import deepspeed

        ds_model, optimizer, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer, config=ds_config)
        return ds_model, optimizer

    # ---- PPO update ------------------------------------------------------------------------------------------
    def _all_reduce(self, values: list[float], op: ReduceOp = "sum") -> list[float]:
        """learner/ppo_update.py `AllReduce` over the learner ranks' process group."""
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)  # NCCL: device tensors
        if self.world_size > 1:
            reduce_op = {
                "sum": dist.ReduceOp.SUM,
                "mean": dist.ReduceOp.SUM,  # divided below: gloo has no AVG
                "max": dist.ReduceOp.MAX,
                "min": dist.ReduceOp.MIN,
            }[op]
            dist.all_reduce(t, op=reduce_op)
        out = t.tolist()
        return [v / self.world_size for v in out] if op == "mean" else out

    def _collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Model inputs of a micro-batch, with this checkpoint family's image inputs."""
        return collate(samples, self.processor.image_processor, self.pad_id, self.family, self.image_token_id)

    def update(self, shard, learner_version: int) -> dict[str, float]:
        """One PPO update on this rank's shard (an Arrow table or its object ref). Collective: all ranks call it.

        `learner_version` is the version of the weights the update starts from (staleness is counted to it).
        """
        t0 = time.perf_counter()
        if not hasattr(shard, "num_rows"):
            import ray

            shard = ray.get(shard)
        samples = samples_from_table(shard, self.token_texts)
        make_batch = self._collate
        metrics = ppo_update(
            self.step_model,
            samples,
            make_batch,
            self.ppo_cfg,
            self.updates,
            self.total_updates,
            learner_version,
            self._all_reduce,
            self.demos,
        )
        self.updates += 1
        metrics["timing/train_s"] = time.perf_counter() - t0
        return metrics

    # ---- weights and checkpoints -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _full_params(self, params: list | None = None):
        """Full weights on every rank: a no-op for ZeRO 1/2, a gather for ZeRO-3 (collective). `params`: only
        these (a LoRA push reads just the adapters and the merged layers)."""
        if self.cfg.zero_stage == 3:
            import deepspeed

            params = list(self.module.parameters()) if params is None else params
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield
        else:
            yield

    def _probe(self) -> Probe | None:
        """The probe scored under the current weights (rank 0; a collective forward under ZeRO-3), in the
        engines' dtype: a bf16 learner beside fp32 engines scores an fp32 copy of its module (the pushed
        weights are its bf16 values exactly, so the engines then agree to fp32 precision, not to bf16's ~0.1)."""
        if self.rank != 0 and self.cfg.zero_stage != 3:
            return None
        text, image, ids, start = self.probe
        from PIL import Image

        batch = self._collate([Sample.probe(ids[:start], ids[start:], Image.fromarray(image))])
        self.step_model.eval_mode()
        with torch.no_grad():
            scorer = self.step_model if self.engine_dtype == self.dtype else self._copy_in(self.engine_dtype)
            logprobs = scorer.raw_logprobs(batch)[0, : len(ids) - start].tolist()
        return Probe(text, image, ids, start, logprobs, self.probe_tolerance)

    def _copy_in(self, dtype: str) -> WrappedModelStep:
        """The module copied into `dtype`, scoring like the trained one (ZeRO-1/2: every rank has it whole)."""
        module = copy.deepcopy(self.module).to(torch_dtype(dtype)).eval()
        return WrappedModelStep(module, None, self.device, self.step_model.banned, self.temperature, 0.0)

    def export_weights(self, version: int) -> WeightsPayload | None:
        """What a push sends, from rank 0 (other ranks return None). Collective under ZeRO-3.

        Full fine-tuning: the VLM's weights (vLLM names). LoRA: the adapter, plus the layers vLLM cannot apply
        an adapter to, merged (models/lora.py). Both with the probe the engine must reproduce.
        """
        t0 = time.perf_counter()
        vlm, adapter, merged = self.module.vlm, None, []
        probe = self._probe()
        with self._full_params(lora.export_params(vlm) if lora.is_lora(vlm) else None):
            if self.rank != 0:
                return None
            if lora.is_lora(vlm):  # copied out while the weights are gathered
                named, adapter, merged = lora.export_adapter(vlm)
            else:
                named = export_arrays(vlm)
        payload = WeightsPayload.build(version, named, adapter, merged, probe)
        merged_bytes = sum(a.nbytes for n, a in named if not lora.is_adapter_name(n)) if adapter else 0
        self.last_push = {
            "learner/push_bytes": float(payload.nbytes),
            "learner/push_merged_bytes": float(merged_bytes),
            "timing/weight_export_s": time.perf_counter() - t0,
            "merged_layers": merged,
        }
        return payload

    def push_info(self) -> dict:
        """What the last `export_weights` sent: `learner/push_bytes` (all arrays), the merged part's bytes and
        layer names (rank 0; empty elsewhere)."""
        return self.last_push

    def save(self, path: str, info: dict | None = None) -> None:
        """HF-format checkpoint (+ value head) from rank 0, a plain model (LoRA merged) that vLLM and
        transformers load. Collective under ZeRO-3."""
        with self._full_params():
            if self.rank == 0:
                save_policy(path, self.module.vlm, self.processor, self.module.value_head, info)

    def _save_model(self, path: str, info: dict | None) -> None:
        """The model part of a resumable checkpoint: full weights, or (LoRA) adapter + value head and the base's
        path. Collective under ZeRO-3."""
        if not lora.is_lora(self.module.vlm):
            return self.save(path, info)
        with self._full_params([p for p in self.module.parameters() if p.requires_grad]):
            if self.rank == 0:
                save_lora_policy(path, self.module.vlm, self.processor, self.module.value_head, self.lora_base, info)

    def memory(self) -> dict[str, float]:
        """This rank's trainable parameters, optimizer-state bytes and process RSS (full vs LoRA)."""
        import psutil

        state = self.optimizer.state_dict()
        tensors = [t for t in _tensors(state) if isinstance(t, torch.Tensor)]
        return {
            "learner/trainable_params": float(sum(_numel(p) for p in self.module.parameters() if p.requires_grad)),
            "learner/optimizer_state_bytes": float(sum(t.numel() * t.element_size() for t in tensors)),
            "learner/rss_bytes": float(psutil.Process().memory_info().rss),
        }

    def save_checkpoint(self, directory: str, info: dict | None = None) -> None:
        """Model (rank 0) and this rank's optimizer state, update count and RNG states. Collective (ZeRO-3)."""
        from learner.state_files import save_state

        path = pathlib.Path(directory)
        self._save_model(str(path / "model"), info)
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
        batch = self._collate([Sample.probe(prompt_ids, response_ids, image)])
        self.step_model.eval_mode()
        with torch.no_grad():
            _, _, token_logp = self.step_model.score(batch)
        return token_logp[0, : len(response_ids)].tolist()


def _numel(p: torch.Tensor) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it away from this rank."""
    return int(getattr(p, "ds_numel", p.numel()))


def _tensors(obj):
    """Every value nested in dicts, lists and tuples (an optimizer state dict's tensors)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)
    else:
        yield obj
