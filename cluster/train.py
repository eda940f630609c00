"""The driver and Ray job entry point: SFT start -> PPO with async rollout -> held-out evaluation.

    python -m cluster.train numberline                      # what `make train` runs
    python -m cluster.train numberline --run.mode sync --ppo.lr 5e-5
    ray job submit --working-dir . -- python -m cluster.train numberline

Loop: wait for enough fresh episodes in the replay store -> one PPO update on every learner rank -> push
weights to the rollout actors every K updates -> log, evaluate, checkpoint. Rollout actors keep collecting
while the learner trains (async), or collect only between updates (sync).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time

import ray

from cluster import run_checkpoints
from cluster.launch import (
    System,
    cpus_needed,
    init_ray,
    launch,
    operator_lines,
    push_weights,
    shutdown,
    shutdown_ray,
)
from cluster.metrics import RunLogger, merge_ranks, plot_curve
from cluster.recovery import LearnerLost, Recovery, component_of
from contracts.config import Config
from contracts.validation import ConfigError
from envs.baseline import expert_available, expert_success
from envs.registry import check_task, task_config
from envs.task import TaskError, TaskFailedError
from models.checkpoint_files import ModelFilesError
from models.families import UnsupportedModelError, family_of
from models.weight_sync import WeightsMismatchError

ROOT_ENV = "RL4VLM_ROOT"
"""Where relative --model.path, --run.out-dir and --run.resume resolve (`make submit` sets the checkout)."""


def resolve_paths(cfg: Config) -> list[str]:
    """Make model.path, run.out_dir and run.resume absolute, once: relative ones resolve against $RL4VLM_ROOT,
    else the working dir. Returns warnings for relative paths resolved inside a Ray job's temporary working dir
    (deleted with the cluster, and not what the submitter's checkout holds)."""
    root = os.environ.get(ROOT_ENV)
    base = pathlib.Path(root).expanduser().resolve() if root else pathlib.Path.cwd()
    relative = []
    for section, field in (("model", "path"), ("run", "out_dir"), ("run", "resume")):
        if value := getattr(getattr(cfg, section), field):
            path = pathlib.Path(value).expanduser()
            if not path.is_absolute():
                relative.append(f"--{section}.{field.replace('_', '-')} {value}")
            setattr(getattr(cfg, section), field, os.path.abspath(base / path))
    if root or "working_dir_files" not in base.parts or not relative:  # Ray unpacks --working-dir there
        return []
    return [
        f"{', '.join(relative)} resolved inside this job's temporary working dir {base},",
        f"which is deleted with the cluster. Pass absolute paths, or set {ROOT_ENV} to a durable dir",
        "(make submit sets it to your checkout).",
    ]


def print_paths(model_path: str, run_dir: pathlib.Path, notes: list[str]) -> None:
    """The resolved locations, at the start and at the end of a run; warnings framed so they are seen."""
    print(f"model path {model_path}\nrun dir    {run_dir}", flush=True)
    if notes:
        bar = "!" * 100
        print("\n".join([bar, *(f"WARNING: {n}" if i == 0 else f"         {n}" for i, n in enumerate(notes)), bar]))


def ensure_sft_checkpoint(cfg: Config) -> str:
    """The SFT checkpoint PPO starts from; built (and its wall clock written next to it) when missing."""
    path = pathlib.Path(cfg.model.path)
    if (path / "config.json").exists():
        return str(path)
    if not cfg.model.build_if_missing:
        raise FileNotFoundError(f"model.path {path} does not exist and model.build_if_missing is off")
    from learner.sft import finetune_checkpoint, train_sft

    t0 = time.perf_counter()
    if cfg.model.base:
        print(f"no SFT checkpoint at {path}: fine-tuning {cfg.model.base} on {cfg.env.task} ...", flush=True)
        finetune_checkpoint(cfg.env.task, cfg.model.base, str(path), cfg.sft, cot=cfg.env.cot)
    else:
        print(f"no SFT checkpoint at {path}: building the embedded tiny VLM and running SFT ...", flush=True)
        train_sft(cfg.env.task, str(path), cfg.model, cfg.sft, cot=cfg.env.cot)
    (path / "sft_time.json").write_text(json.dumps({"sft_wall_clock_s": round(time.perf_counter() - t0, 1)}))
    return str(path)


def sft_wall_clock(model_path: str) -> float | None:
    """Seconds the SFT of this checkpoint took, when this project built it."""
    timing = pathlib.Path(model_path) / "sft_time.json"
    return json.loads(timing.read_text())["sft_wall_clock_s"] if timing.exists() else None


def evaluate(system: System, cfg: Config, attempts: int = 3) -> dict[str, float]:
    """Held-out seeds split over the rollout actors; success is the task's rule (Task.success).

    A rollout actor that dies meanwhile is replaced and the evaluation runs again (all of it: the seeds of
    the lost part must be played by someone)."""
    for _ in range(attempts):
        handles = system.pool.handles()
        n, k = cfg.run.eval_episodes, len(handles)
        parts = [n // k + (i < n % k) for i in range(k)]
        starts = [cfg.env.eval_seed + sum(parts[:i]) for i in range(k)]
        calls = {i: h.evaluate.remote(p, s) for (i, h), p, s in zip(handles.items(), parts, starts) if p}
        try:
            results = [ray.get(ref) for ref in calls.values()]
            break
        except (ray.exceptions.RayActorError, WeightsMismatchError):  # dead, or serving another policy
            for actor_id, ref in calls.items():
                if ray.wait([ref], timeout=0)[0]:
                    try:
                        ray.get(ref)
                    except (ray.exceptions.RayActorError, WeightsMismatchError) as error:
                        system.pool.replace(actor_id, error)
    else:
        raise RuntimeError(f"evaluation failed {attempts} times: rollout actors keep dying")
    total = sum(r["eval/episodes"] for r in results)
    keys = {k for r in results for k in r}
    counts = {k for k in keys if k.startswith(("eval/n/", "eval/won/", "eval/failed"))}  # counts: summed
    out = {k: sum(r[k] * r["eval/episodes"] for r in results) / total for k in keys - counts}
    out |= {k: sum(r.get(k, 0.0) for r in results) for k in counts}
    out |= {f"eval/success/{k[7:]}": out[f"eval/won/{k[7:]}"] / out[k] for k in counts if k.startswith("eval/n/")}
    out["eval/episodes"] = total
    if "eval/success_on_solvable" in out:  # a rate over solvable deals: weight each actor by its solvable count
        solvable = [r["eval/episodes"] * r["eval/solvable_frac"] for r in results]
        rates = [r["eval/success_on_solvable"] for r in results]
        out["eval/success_on_solvable"] = sum(n * x for n, x in zip(solvable, rates)) / max(sum(solvable), 1.0)
    return out


def success_by_type(sft_eval: dict, final_eval: dict) -> dict:
    """Held-out success per episode type (Task.episode_type) at the SFT start and after RL (empty without)."""
    out = {}
    for name, ev in (("sft", sft_eval), ("final", final_eval)):
        rates = {k[len("eval/success/") :]: v for k, v in ev.items() if k.startswith("eval/success/")}
        if rates:
            out[f"{name}_success_by_type"] = dict(sorted(rates.items()))
            out[f"{name}_episodes_by_type"] = {t: int(ev[f"eval/n/{t}"]) for t in sorted(rates)}
    return out


def summarize_rollouts(results: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """Sum the collect() metrics of several calls into rates for one logging step."""
    total = {k: sum(r.get(k, 0.0) for r in results) for k in {k for r in results for k in r}}
    episodes = max(total.get("rollout/episodes", 0.0), 1.0)
    steps = total.get("rollout/env_steps", 0.0)
    return {
        "rollout/env_steps": steps,
        "rollout/env_steps_per_s": steps / max(seconds, 1e-9),
        "rollout/tokens_per_s": total.get("rollout/tokens", 0.0) / max(seconds, 1e-9),
        "rollout/success": total.get("rollout/successes", 0.0) / episodes,
        "rollout/return_mean": total.get("rollout/return_sum", 0.0) / episodes,
        "rollout/episodes": total.get("rollout/episodes", 0.0),
        "rollout/invalid_frac": total.get("rollout/invalid", 0.0) / max(steps, 1.0),
        "rollout/env_failures": total.get("rollout/env_failures", 0.0),  # collect() reports per-call counts
        **{k: v for k, v in total.items() if k.startswith("rollout/failures/")},  # per task hook, when any
    }


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("learner.sft").setLevel(logging.INFO)  # SFT progress shows while `make train` builds it
    try:
        (cfg, task), started = task_config(argv), time.perf_counter()
        check_task(task, cfg.env.eval_seed, cfg.env.cot)  # a broken task fails here, before Ray or any actor
    except ConfigError as error:  # one line per problem, no traceback; status 2 as for tyro's own usage errors
        print("\n".join(error.problems), file=sys.stderr)
        raise SystemExit(2) from None
    except TaskError as error:  # unknown task, import error, a hook that fails: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    notes = resolve_paths(cfg)  # model.path, run.out_dir, run.resume: absolute from here on, for every actor
    resume_dir, state = run_checkpoints.load(cfg.run.resume, cfg) if cfg.run.resume else (None, {})
    name = cfg.run.name or (resume_dir and run_checkpoints.run_dir_of(resume_dir).name)
    name = name or f"{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = pathlib.Path(cfg.run.out_dir) / name
    print_paths(str(resume_dir / "model") if resume_dir else cfg.model.path, run_dir, notes)
    try:  # an unsupported or missing model fails here in one line, before Ray or any actor starts
        model_path = str(resume_dir / "model") if resume_dir else ensure_sft_checkpoint(cfg)
        dtypes = cfg.model.dtype + (f", learner {cfg.learner.dtype}" if cfg.learner.dtype else "")
        print(f"model {model_path}: family {family_of(model_path).model_type}, {dtypes}", flush=True)
    except (UnsupportedModelError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    dashboard = init_ray(cpus_needed(cfg), cfg.run.dashboard)
    try:
        system = launch(cfg, model_path, run_name=name)
    except ModelFilesError as error:  # a node that cannot read the checkpoint, and nothing could ship it
        raise SystemExit(f"error: {error}") from None
    logger, recovery = RunLogger(run_dir), Recovery(cfg, run_dir, name).watch(system)
    print(
        f"run {run_dir}: {cfg.rollout.num_actors} rollout actor(s) x {cfg.env.envs_per_actor} envs, "
        f"{cfg.learner.world_size} learner rank(s) ZeRO-{cfg.learner.zero_stage}, mode {cfg.run.mode}\n"
        f"{operator_lines(name, dashboard)}",
        flush=True,
    )
    progress = {k: state.get(k, 0) for k in ("version", "update", "total_steps", "floor_version")}
    elapsed0 = state.get("elapsed_s", 0.0)  # of the run before it was resumed
    if resume_dir:  # optimizer, RNGs, replay and seeds back in place; the rollout actors get the same weights
        run_checkpoints.restore(system, system.pool, resume_dir, state)
        push_weights(system, progress["version"])
        progress["sft_eval"] = state["sft_eval"]
        resume_s = time.perf_counter() - started  # from the command to a system ready to train again
        at = f"update {progress['update']}, policy version {progress['version']}"
        print(f"resumed from {resume_dir} in {resume_s:.1f} s: {at}", flush=True)
    else:
        progress["sft_eval"] = sft_eval = evaluate(system, cfg)
        logger.log(0, {**sft_eval, "rollout/total_env_steps": 0})
        print(f"SFT start: held-out success {sft_eval['eval/success']:.3f} ({sft_eval['eval/episodes']:.0f} episodes)")
    try:
        progress = train_loop(system, cfg, run_dir, logger, recovery, progress, elapsed0)
        result = finish(system, cfg, run_dir, logger, progress, elapsed0, model_path)
    except ray.exceptions.RayActorError as error:  # died past its restarts, or where no restart is possible
        stop_for_resume(run_dir, component_of(error), error)
    result |= recovery.counters | {
        "resumed_from": str(resume_dir) if resume_dir else None,
        "resume_s": round(resume_s, 1) if resume_dir else None,
    }
    if expert_available(task):  # the task's own noiseless expert on the same held-out deals (envs/baseline.py)
        result["expert_success"] = expert_success(task, cfg.env.eval_seed, cfg.run.eval_episodes)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    logger.close()
    shutdown(system)
    plot_curve(run_dir, run_dir / "learning_curve.png")
    print_table(result, run_dir)
    print_paths(model_path, run_dir, notes)
    return result


def take_shards(system: System, cfg: Config, version: int, floor_version: int):
    """One update's episodes from the store, a shard per learner rank: (episode ids, shard refs), or None while
    the store holds too few. The shards are objects this driver owns: they outlive a store that dies."""
    ranks = cfg.learner.world_size
    call = system.store.take_shards.options(num_returns=ranks + 1)
    ids_ref, *shards = call.remote(cfg.ppo.steps_per_update, version, ranks, floor_version)
    return (ids, shards) if (ids := ray.get(ids_ref)) else None


def train_loop(
    system: System,
    cfg: Config,
    run_dir: pathlib.Path,
    logger: RunLogger,
    recovery: Recovery,
    progress: dict,
    elapsed0: float,
) -> dict:
    """PPO updates until run.total_updates or the time budget is reached; returns where the run then stands
    (`progress`: policy version, update, env steps, the SFT evaluation; what a checkpoint records)."""
    pool = system.pool
    version, update, total_steps = progress["version"], progress["update"], progress["total_steps"]
    pool.submit_collects()
    window_t0 = time.perf_counter()
    while update < cfg.run.total_updates and elapsed0 + logger.elapsed() < 60 * cfg.run.time_budget_min:
        # 0. An operator may have asked for more or fewer rollout actors (python -m cluster.control scale).
        if (wanted := recovery.desired_actors(system, pool.size())) != pool.size():
            pool.resize(wanted)
        # 1. Wait for one update's worth of fresh episodes, harvesting and resubmitting collects.
        while (taken := take_shards(system, cfg, version, progress["floor_version"])) is None:
            pool.step()
        if cfg.run.mode == "sync":  # nothing may run while the learner trains
            pool.drain()

        # 2. One PPO update on every rank (each gets its shard by reference); async rollout goes on meanwhile.
        # 3. Weights to the rollout actors every K updates (each loads them after its running collect).
        try:
            refs = [l.update.remote(s, version) for l, s in zip(system.learners, taken[1])]
            learner_metrics = pool.run_until(refs, resubmit=cfg.run.mode == "async")
            recovery.taken(taken[0])
            version, update = version + 1, update + 1
            metrics = {**merge_ranks(learner_metrics), "learner/policy_version": version}
            if update % cfg.learner.push_every == 0:
                metrics.update(push_weights(system, version))
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as error:
            if not isinstance(error, ray.exceptions.RayActorError) and not recovery.learners_dead(system):
                raise  # the update itself failed: a restored group would fail the same way
            try:  # a new learner group from the newest checkpoint; this update's episodes are not trained
                progress = recovery.restore_learners(system, error, {**progress, "version": version, "update": update})
            except LearnerLost as lost:
                stop_for_resume(run_dir, "a learner rank", lost)
            version, update = progress["version"], progress["update"]
            continue

        # 4. Log; evaluate on held-out seeds now and then; checkpoint.
        rollout = summarize_rollouts(pool.take_results(), time.perf_counter() - window_t0)
        window_t0, total_steps = time.perf_counter(), total_steps + rollout["rollout/env_steps"]
        metrics.update(rollout, **pool.stats(), **recovery.store_stats(system))
        metrics.update({f"recovery/{k}": float(v) for k, v in recovery.counters.items()})
        metrics["rollout/total_env_steps"] = total_steps
        if pool.last_load_s is not None:
            metrics["timing/weight_load_s"] = pool.last_load_s
        if cfg.run.eval_every and update % cfg.run.eval_every == 0 and update < cfg.run.total_updates:
            metrics.update(evaluate(system, cfg))
        logger.log(update, metrics)
        logger.progress(update, cfg.run.total_updates, metrics)
        progress = {**progress, "version": version, "update": update, "total_steps": total_steps}
        progress["elapsed_s"] = elapsed0 + logger.elapsed()
        if cfg.run.checkpoint_every and update % cfg.run.checkpoint_every == 0:
            run_checkpoints.save(system, pool, cfg, run_dir, progress)
        system.control.report.remote({**progress, "actors": pool.size(), **pool.counters}, pool.handles())
    return progress


def finish(
    system: System,
    cfg: Config,
    run_dir: pathlib.Path,
    logger: RunLogger,
    progress: dict,
    elapsed0: float,
    model_path: str,
) -> dict:
    """The last weights to the actors, the final held-out evaluation and checkpoint; the eval.json results."""
    pool, version, sft_eval = system.pool, progress["version"], progress["sft_eval"]
    pool.drain()  # let in-flight collects finish before the final weights and evaluation
    if version % cfg.learner.push_every:
        push_weights(system, version)
    final_eval = evaluate(system, cfg)
    logger.log(progress["update"], {**final_eval, "rollout/total_env_steps": progress["total_steps"]})
    ray.get([l.save.remote(str(run_dir / "checkpoint"), {"policy_version": version}) for l in system.learners])
    return {
        "task": cfg.env.task,
        "cot": cfg.env.cot,
        "episodes": int(final_eval["eval/episodes"]),
        "sft_success": sft_eval["eval/success"],
        "final_success": final_eval["eval/success"],
        "sft_return": sft_eval["eval/return"],
        "final_return": final_eval["eval/return"],
        "solvable_frac": final_eval["eval/solvable_frac"],
        "sft_success_on_solvable": sft_eval["eval/success_on_solvable"],
        "final_success_on_solvable": final_eval["eval/success_on_solvable"],
        **success_by_type(sft_eval, final_eval),
        "updates": progress["update"],
        "policy_version": version,
        "train_env_steps": int(progress["total_steps"]),
        "wall_clock_s": round(elapsed0 + logger.elapsed(), 1),
        "sft_wall_clock_s": sft_wall_clock(model_path),
        "mode": cfg.run.mode,
        "rollout_actor_restarts": pool.counters["actor_restarts"],
        "new_actor_first_versions": pool.joined_first_versions(),
    }


def stop_for_resume(run_dir: pathlib.Path, what: str, error: BaseException) -> None:
    """`what` died and could not be restarted: stop cleanly and say exactly how to continue."""
    try:
        checkpoint = run_checkpoints.complete_checkpoints(run_dir)[0]
    except run_checkpoints.CheckpointError:
        checkpoint = None
    args = sys.argv[1:] or ["<preset>"]
    hint = (
        f"resume with:\n  python -m cluster.train {' '.join(args)} --run.resume {checkpoint}"
        if checkpoint
        else "no checkpoint was written yet (run.checkpoint_every): start the run again"
    )
    print(f"{what} failed ({type(error).__name__}: {error}); the run stopped cleanly, {hint}", flush=True)
    raise SystemExit(3)


def print_table(result: dict, run_dir: pathlib.Path) -> None:
    print("\n| task | held-out episodes | SFT success | final success | updates | env steps | wall clock |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['task']} | {result['episodes']} | {result['sft_success']:.3f} | {result['final_success']:.3f} "
        f"| {result['updates']} | {result['train_env_steps']} | {result['wall_clock_s'] / 60:.1f} min |"
    )
    print(f"\nwrote {run_dir}/eval.json, learning_curve.png, checkpoint/, tensorboard/")


if __name__ == "__main__":
    clean = False
    try:
        main()
        clean = True
    except TaskFailedError as error:  # a task whose episodes keep failing: its own message, not a Ray traceback
        print(f"error: {getattr(error, 'cause', None) or error}", file=sys.stderr)
        raise SystemExit(4) from None
    except run_checkpoints.CheckpointError as error:  # --run.resume with no usable checkpoint: before any actor
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if ray.is_initialized() and (kept := shutdown_ray(remove_temp_dir=clean)):
            print(f"Ray logs of this run kept in {kept}", file=sys.stderr)
