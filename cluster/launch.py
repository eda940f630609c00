"""Start the Ray processes of a run: the replay store, rollout actors and DeepSpeed learner ranks.

The only place that wraps the plain classes with `ray.remote`. Learner ranks are placed with a placement
group (one bundle per rank); rollout actors ask for `rollout.cpus_per_actor` CPUs each. Every rollout actor
(replacements and added ones too) and learner rank gets the model as `ModelFiles`: the driver's path, its
manifest and a CheckpointServer on the driver's node that ships the files to nodes that cannot read them
(models/checkpoint_files.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from cluster.control import NAMESPACE, register
from cluster.rollout_pool import RolloutPool, backlog_gate
from contracts.config import Config
from learner.learner import LearnerWorker
from models.checkpoint_files import CheckpointServer, ModelFiles, describe, model_files_error

# Inference and training each get one OMP thread per reserved CPU (oversubscription made vLLM 20-700x slower).
ACTOR_ENV = {
    "OMP_NUM_THREADS": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # A model path is a directory, never a hub repo id: no actor ever asks huggingface.co for one.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass
class System:
    store: ray.actor.ActorHandle
    pool: RolloutPool
    learners: list[ray.actor.ActorHandle]
    placement: PlacementGroup
    """Reserves the learner ranks' resources until `shutdown` removes it."""
    control: ray.actor.ActorHandle | None = None
    """The run's named RunControl actor (`python -m cluster.control` talks to it)."""
    model: ModelFiles | None = None
    """The model every actor starts from, and the server that ships it to nodes that cannot read it."""
    restored_models: list[ModelFiles] = field(default_factory=list)
    """Checkpoints a restored learner group started from (cluster/recovery.py), each with its server."""

    @property
    def actors(self) -> list[ray.actor.ActorHandle]:
        """The active rollout actors (draining ones excluded)."""
        return list(self.pool.handles().values())


OWN_TEMP_DIRS: list[str] = []
"""Temp dirs of the local clusters this process started (logs, sockets, spilled objects)."""


def init_ray(
    num_cpus: int, dashboard: bool = False, temp_prefix: str = "rl4vlm-ray-", private: bool = False
) -> str | None:
    """Join the cluster of a submitted job (RAY_ADDRESS), or start a private local one with its own temp dir.

    The one `ray.init` of the driver, the benchmarks and the tests (those pass `private`: their numbers and
    actors must not land on a cluster someone else is using, even with RAY_ADDRESS set). A private cluster
    never touches another one on the host, and nothing here runs `ray stop` (it ends every cluster on the
    machine). Every actor gets ACTOR_ENV. Does nothing when Ray is already up (a test's or a suite's cluster).
    Returns the dashboard's URL, if the cluster has one.
    """
    if ray.is_initialized():
        return None
    runtime_env = {"env_vars": ACTOR_ENV}
    if os.environ.get("RAY_ADDRESS") and not private:
        return dashboard_url(ray.init(runtime_env=runtime_env, namespace=NAMESPACE))
    temp_dir = tempfile.mkdtemp(prefix=temp_prefix)
    OWN_TEMP_DIRS.append(temp_dir)
    context = ray.init(
        address="local",  # a new cluster even when RAY_ADDRESS names one
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        _temp_dir=temp_dir,
        runtime_env=runtime_env,
        logging_level="WARNING",
        namespace=NAMESPACE,
    )
    return dashboard_url(context)


def shutdown_ray(remove_temp_dir: bool) -> str | None:
    """Leave Ray; a local cluster this process started ends with it. Its temp dir is removed when asked (a clean
    run leaves nothing in the system temp dir) and otherwise kept for its logs: returns the kept dir, if any."""
    ray.shutdown()
    kept = None
    while OWN_TEMP_DIRS:
        temp_dir = OWN_TEMP_DIRS.pop()
        if remove_temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        else:
            kept = temp_dir
    return kept


def dashboard_url(context) -> str | None:
    url = getattr(context, "dashboard_url", None)
    return None if not url else url if "://" in url else f"http://{url}"


def operator_lines(run_name: str, dashboard: str | None) -> str:
    """What the driver prints for the operator: the dashboard and how to log in, and a control command that
    works when pasted in another shell of this machine (with token auth on, the client must say so too)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    auth = "RAY_AUTH_MODE=token " if is_token_auth_enabled() else ""
    address = ray.get_runtime_context().gcs_address
    lines = [f"  scale: {auth}python -m cluster.control scale --run {run_name} --rollout-actors N --address {address}"]
    if dashboard:
        login = " (log in with the token `ray get-auth-token` prints)" if auth else ""
        lines.insert(0, f"  dashboard: {dashboard}{login}")
    if OWN_TEMP_DIRS:  # a local cluster of this driver: what to clean up if the driver gets killed
        lines.append(
            f"  ray dir: {OWN_TEMP_DIRS[-1]} (driver killed? python -m cluster.orphans {OWN_TEMP_DIRS[-1]} --kill)"
        )
    return "\n".join(lines)


def cpus_needed(cfg: Config) -> int:
    """The CPUs a run reserves: its rollout actors and learner ranks (rounded up, at least 1)."""
    cpus = cfg.rollout.num_actors * cfg.rollout.cpus_per_actor + cfg.learner.world_size * cfg.learner.cpus_per_rank
    return max(int(cpus + 0.999), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_model(model_path: str) -> ModelFiles:
    """Describe the checkpoint (blake2b of every file) and start its CheckpointServer on the driver's node, the
    one that has the files; it packs them only if some node asks."""
    t0 = time.perf_counter()
    expected = describe(model_path)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    server = ray.remote(num_cpus=0)(CheckpointServer).options(scheduling_strategy=here).remote(model_path, expected)
    size = f"{len(expected['files'])} files, {expected['bytes'] / 1e6:.1f} MB"
    print(f"model files: {model_path}: {size}, manifest in {time.perf_counter() - t0:.2f} s", flush=True)
    return ModelFiles(model_path, expected, server)


def actor_name(role: str, run_name: str | None, index: int | None = None) -> str | None:
    """The name an actor of `run_name` shows in the dashboard and `ray list actors`: store-<run>,
    rollout-<run>-<id>, learner-<run>-<rank> (control-<run>: cluster/control.py). None without a run name."""
    if not run_name:
        return None
    return f"{role}-{run_name}" if index is None else f"{role}-{run_name}-{index}"


def rollout_actor_factory(cfg: Config, model: ModelFiles, store, run_name: str | None = None):
    """Starts one rollout actor by id, placed by the resources in `cfg.rollout` (the pool calls it, also for
    replacements and added actors: each makes the model local on its node first). The k-th replacement of
    actor i is named rollout-<run>-i-r<k>: the one it replaces may not have released its name yet."""
    remote_cls = ray.remote(RolloutActor)
    placement = {
        "num_cpus": cfg.rollout.cpus_per_actor,
        "num_gpus": cfg.rollout.gpus_per_actor,
        "resources": cfg.rollout.resources or None,
    }
    env, rollout, dtype = cfg.env, cfg.rollout, cfg.model.dtype
    files = {"model_files": model, "lora_rank": cfg.model.lora.rank}
    spawns: dict[int, int] = {}

    def start(actor_id: int):
        spawns[actor_id] = spawns.get(actor_id, -1) + 1
        name = actor_name("rollout", run_name, actor_id)
        if name and spawns[actor_id]:
            name += f"-r{spawns[actor_id]}"
        options = remote_cls.options(**placement, name=name)
        return options.remote(actor_id, env, rollout, model.path, store, dtype, **files, incarnation=spawns[actor_id])

    return start


def throttle(cfg: Config, store):
    """The pool's `may_collect` from `rollout.max_backlog_updates` (None when the throttle is off)."""
    if cfg.rollout.max_backlog_updates <= 0:
        return None
    limit = max(cfg.rollout.max_backlog_updates, 1.0) * cfg.ppo.steps_per_update
    return backlog_gate(store, limit, cfg.env.envs_per_actor * cfg.rollout.steps_per_call)


def start_replay_store(cfg: Config, run_name: str | None):
    """The run's ReplayStore. Ray restarts a dead one (up to run.max_restarts) and retries the calls it had;
    the rollout actors, the throttle and the driver keep their handles (actors/replay_store.py)."""
    options = {"name": actor_name("store", run_name), "max_restarts": cfg.run.max_restarts, "max_task_retries": -1}
    return ray.remote(num_cpus=0)(ReplayStore).options(**options).remote(cfg.replay)


def start_learners(cfg: Config, pg: PlacementGroup, model: ModelFiles, run_name: str | None, incarnation: int = 0):
    """One LearnerWorker per rank in its bundle of `pg`, all loading `model` (the SFT start, or a checkpoint's
    model when cluster/recovery.py restores the group as its `incarnation`-th: named learner-<run>-<rank>-r<k>,
    as the old names may not be free yet). A fresh port: the old group's may still be bound."""
    port, learners = free_port(), []
    for rank in range(cfg.learner.world_size):
        name = actor_name("learner", run_name, rank)
        options = {
            "num_cpus": cfg.learner.cpus_per_rank,
            "num_gpus": cfg.learner.gpus_per_rank,
            "resources": cfg.learner.resources or None,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
            "name": f"{name}-r{incarnation}" if name and incarnation else name,
        }
        args = (rank, cfg.learner.world_size, port, model.path, cfg.ppo, cfg.learner, cfg.run.total_updates)
        args += (cfg.rollout.temperature, cfg.env.seed, cfg.learner_dtype())
        remote = ray.remote(LearnerWorker).options(**options)
        # engine_dtype: the rollout engines' (model.dtype), which the weight-push probe is scored in; task and
        # cot: what the demonstration loss's pool is built from (ppo.demo_coef)
        kwargs = {"model_files": model, "lora_cfg": cfg.model.lora, "engine_dtype": cfg.model.dtype}
        learners.append(remote.remote(*args, **kwargs, task=cfg.env.task, cot=cfg.env.cot))
    return learners


def launch(cfg: Config, model_path: str, run_name: str | None = None) -> System:
    model = serve_model(model_path)
    store = start_replay_store(cfg, run_name)
    make_actor = rollout_actor_factory(cfg, model, store, run_name)
    pool = RolloutPool(make_actor, cfg.rollout.max_restarts, throttle(cfg, store))
    bundle = {"CPU": cfg.learner.cpus_per_rank, "GPU": cfg.learner.gpus_per_rank, **cfg.learner.resources}
    bundle = {k: v for k, v in bundle.items() if v}
    pg = placement_group([bundle] * cfg.learner.world_size, strategy=cfg.learner.placement_strategy)
    ray.get(pg.ready())
    learners = start_learners(cfg, pg, model, run_name)
    # Fail here, with the actor's own error, if an engine or a rank cannot start (the model's: in one line).
    try:
        pool.start(cfg.rollout.num_actors)
        ray.get([l.__ray_ready__.remote() for l in learners])
    except ray.exceptions.RayActorError as error:
        if (short := model_files_error(error)) is None:
            raise
        raise short from None
    control = register(run_name, cfg.rollout.num_actors, cfg.run.max_restarts) if run_name else None
    if shipped := ray.get(model.server.report.remote())["nodes"]:
        print(f"model files: shipped to {len(set(shipped))} node(s) that could not read {model_path}", flush=True)
    return System(store, pool, learners, pg, control, model)


def shutdown(system: System) -> None:
    """Kill the run's actors and free its placement group (a submitted job's cluster outlives the run)."""
    system.pool.shutdown()
    servers = [m.server for m in (system.model, *system.restored_models) if m is not None]
    extra = [h for h in (system.control, *servers) if h is not None]
    for handle in [*system.learners, system.store, *extra]:
        ray.kill(handle)
    remove_placement_group(system.placement)


MERGED_PUSH_SAID: set[int] = set()
"""Systems whose log already says that their pushes carry merged layers (said once per run)."""


def push_weights(system: System, version: int) -> dict[str, float]:
    """The policy from learner rank 0 to every rollout actor, by object ref (models/weight_sync.py): full
    weights, or with LoRA the adapter (and merged layers where vLLM cannot apply one, said in the log once).

    The loads queue behind each actor's running collect; the driver does not wait for them (the pool harvests
    their timings as `timing/weight_load_s`). Returns `learner/push_bytes`: the bytes that crossed the wire.
    """
    t0 = time.perf_counter()
    refs = [l.export_weights.remote(version) for l in system.learners]  # every rank joins (ZeRO-3 gathers)
    ray.wait(refs, num_returns=len(refs), fetch_local=False)  # exported; the driver never fetches the weights
    system.pool.push(refs[0], version)
    info = ray.get(system.learners[0].push_info.remote())
    if info.get("merged_layers") and id(system) not in MERGED_PUSH_SAID:
        MERGED_PUSH_SAID.add(id(system))
        print(
            f"push v{version}: LoRA adapter plus {len(info['merged_layers'])} layer(s) merged and sent as weights "
            f"({info['learner/push_merged_bytes'] / 1e6:.2f} of {info['learner/push_bytes'] / 1e6:.2f} MB): vLLM "
            f"cannot apply their adapter for this family (models/lora.py VLLM_PARTS), e.g. {info['merged_layers'][0]}",
            flush=True,
        )
    out = {k: v for k, v in info.items() if k.startswith(("learner/", "timing/"))}
    return out | {"timing/weight_push_s": time.perf_counter() - t0}
