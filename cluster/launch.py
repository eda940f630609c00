"""Start the Ray processes of a run: the replay store, rollout actors and DeepSpeed learner ranks.

The only place that wraps the plain classes with `ray.remote`. Learner ranks are placed with a placement
group (one bundle per rank); rollout actors ask for `rollout.cpus_per_actor` CPUs each.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from cluster.config import Config
from learner.learner import LearnerWorker

# Inference and training each get one OMP thread per reserved CPU (oversubscription made vLLM 20-700x slower).
ACTOR_ENV = {
    "OMP_NUM_THREADS": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "DS_ACCELERATOR": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class System:
    store: ray.actor.ActorHandle
    actors: list[ray.actor.ActorHandle]
    learners: list[ray.actor.ActorHandle]
    placement: PlacementGroup
    """Reserves the learner ranks' CPUs until `shutdown` removes it."""


def init_ray(cfg: Config) -> None:
    """Join the cluster of a submitted job (RAY_ADDRESS), or start a private local one with its own temp dir."""
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": ACTOR_ENV}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
        return
    cpus = cfg.rollout.num_actors * cfg.rollout.cpus_per_actor + cfg.learner.world_size * cfg.learner.cpus_per_rank
    ray.init(
        num_cpus=max(int(cpus + 0.999), 1),
        include_dashboard=cfg.run.dashboard,
        dashboard_host="127.0.0.1",
        _temp_dir=tempfile.mkdtemp(prefix="rl4vlm-ray-"),
        runtime_env=runtime_env,
        logging_level="WARNING",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg: Config, model_path: str) -> System:
    store = ray.remote(num_cpus=0)(ReplayStore).remote(cfg.replay)
    actors = [
        ray.remote(num_cpus=cfg.rollout.cpus_per_actor)(RolloutActor).remote(i, cfg.env, cfg.rollout, model_path, store)
        for i in range(cfg.rollout.num_actors)
    ]
    bundles = [{"CPU": cfg.learner.cpus_per_rank} for _ in range(cfg.learner.world_size)]
    pg = placement_group(bundles, strategy="PACK")
    ray.get(pg.ready())
    port = free_port()
    learners = [
        ray.remote(LearnerWorker)
        .options(
            num_cpus=cfg.learner.cpus_per_rank,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
        )
        .remote(
            rank,
            cfg.learner.world_size,
            port,
            model_path,
            cfg.ppo,
            cfg.learner,
            cfg.run.total_updates,
            cfg.rollout.temperature,
            cfg.env.seed,
        )
        for rank in range(cfg.learner.world_size)
    ]
    # Fail here, with the actor's own error, if an engine or a rank cannot start.
    ray.get([a.policy_version.remote() for a in actors])
    ray.get([l.__ray_ready__.remote() for l in learners])
    return System(store, actors, learners, pg)


def shutdown(system: System) -> None:
    """Kill the run's actors and free its placement group (a submitted job's cluster outlives the run)."""
    for handle in [*system.actors, *system.learners, system.store]:
        ray.kill(handle)
    remove_placement_group(system.placement)


def push_weights(system: System, version: int) -> dict[str, float]:
    """Full weights from learner rank 0 to every rollout actor, by object ref (the driver never holds them).

    Each actor verifies the checksum before loading and tags later samples with `version`.
    """
    import time

    t0 = time.perf_counter()
    refs = [l.export_weights.remote(version) for l in system.learners]  # every rank joins (ZeRO-3 gathers)
    ray.get(refs[1:])
    loads = ray.get([a.load_weights.remote(refs[0]) for a in system.actors])
    return {
        "timing/weight_push_s": time.perf_counter() - t0,
        "timing/weight_load_s": max(m["timing/weight_load_s"] for m in loads),
    }
