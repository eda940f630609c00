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
import pathlib
import time

import ray

from cluster.config import Config, parse_cli
from cluster.launch import System, init_ray, launch, push_weights, shutdown
from cluster.metrics import RunLogger, plot_curve


def ensure_sft_checkpoint(cfg: Config) -> str:
    """The SFT checkpoint PPO starts from; built (and its wall clock written next to it) when missing."""
    path = pathlib.Path(cfg.model.path)
    if (path / "config.json").exists():
        return str(path)
    if not cfg.model.build_if_missing:
        raise FileNotFoundError(f"model.path {path} does not exist and model.build_if_missing is off")
    from learner.sft import train_sft

    print(f"no SFT checkpoint at {path}: building the embedded tiny VLM and running SFT ...", flush=True)
    t0 = time.perf_counter()
    train_sft(cfg.env.task, str(path), cfg.model, cfg.sft, cot=cfg.env.cot)
    (path / "sft_time.json").write_text(json.dumps({"sft_wall_clock_s": round(time.perf_counter() - t0, 1)}))
    return str(path)


def sft_wall_clock(model_path: str) -> float | None:
    """Seconds the SFT of this checkpoint took, when this project built it."""
    timing = pathlib.Path(model_path) / "sft_time.json"
    return json.loads(timing.read_text())["sft_wall_clock_s"] if timing.exists() else None


def evaluate(system: System, cfg: Config) -> dict[str, float]:
    """Held-out seeds split over the rollout actors; success = episode return > 0 (the paper's metric)."""
    n, k = cfg.run.eval_episodes, len(system.actors)
    parts = [n // k + (i < n % k) for i in range(k)]
    starts = [cfg.env.eval_seed + sum(parts[:i]) for i in range(k)]
    results = ray.get([a.evaluate.remote(p, s) for a, p, s in zip(system.actors, parts, starts) if p])
    total = sum(r["eval/episodes"] for r in results)
    out = {key: sum(r[key] * r["eval/episodes"] for r in results) / total for key in results[0]}
    out["eval/episodes"] = total
    if "eval/success_on_solvable" in out:  # a rate over solvable deals: weight each actor by its solvable count
        solvable = [r["eval/episodes"] * r["eval/solvable_frac"] for r in results]
        rates = [r["eval/success_on_solvable"] for r in results]
        out["eval/success_on_solvable"] = sum(n * x for n, x in zip(solvable, rates)) / max(sum(solvable), 1.0)
    return out


def summarize_rollouts(results: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """Sum the collect() metrics of several calls into rates for one logging step."""
    total = {k: sum(r.get(k, 0.0) for r in results) for k in results[0]} if results else {}
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
        "rollout/store_waits": total.get("rollout/store_waits", 0.0),
    }


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("learner.sft").setLevel(logging.INFO)  # SFT progress shows while `make train` builds it
    cfg = parse_cli(argv)
    name = cfg.run.name or f"{cfg.env.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = pathlib.Path(cfg.run.out_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    model_path = ensure_sft_checkpoint(cfg)
    init_ray(cfg)
    system = launch(cfg, model_path)
    logger = RunLogger(run_dir)
    print(
        f"run {run_dir}: {cfg.rollout.num_actors} rollout actor(s) x {cfg.env.envs_per_actor} envs, "
        f"{cfg.learner.world_size} learner rank(s) ZeRO-{cfg.learner.zero_stage}, mode {cfg.run.mode}",
        flush=True,
    )

    sft_eval = evaluate(system, cfg)
    logger.log(0, {**sft_eval, "rollout/total_env_steps": 0})
    print(f"SFT start: held-out success {sft_eval['eval/success']:.3f} over {sft_eval['eval/episodes']:.0f} episodes")

    version, total_steps, update = 0, 0, 0
    pending = {a.collect.remote(): a for a in system.actors}
    window, window_t0 = [], time.perf_counter()
    while update < cfg.run.total_updates and logger.elapsed() < 60 * cfg.run.time_budget_min:
        # 1. Wait for one update's worth of fresh episodes; in async mode actors never stop collecting.
        while (
            shards := ray.get(system.store.take.remote(cfg.ppo.steps_per_update, version, cfg.learner.world_size))
        ) is None:
            if not pending:
                pending = {a.collect.remote(): a for a in system.actors}
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready[0])
            window.append(ray.get(ready[0]))
            if cfg.run.mode == "async":
                pending[actor.collect.remote()] = actor
        if cfg.run.mode == "sync":  # nothing may run while the learner trains
            window.extend(ray.get(list(pending)))
            pending = {}

        # 2. One PPO update on every rank (each gets its shard by reference).
        learner_metrics = ray.get([l.train.remote(s, version) for l, s in zip(system.learners, shards)])
        version, update = version + 1, update + 1

        # 3. Weights to the rollout actors every K updates (queued behind their current collect in async mode).
        metrics = {**learner_metrics[0], "learner/policy_version": version}
        if update % cfg.learner.push_every == 0:
            metrics.update(push_weights(system, version))

        # 4. Log; evaluate on held-out seeds now and then.
        rollout = summarize_rollouts(window, time.perf_counter() - window_t0)
        total_steps += rollout["rollout/env_steps"]
        metrics.update(rollout, **{"rollout/total_env_steps": total_steps}, **ray.get(system.store.stats.remote()))
        window, window_t0 = [], time.perf_counter()
        if cfg.run.eval_every and update % cfg.run.eval_every == 0 and update < cfg.run.total_updates:
            metrics.update(evaluate(system, cfg))
        logger.log(update, metrics)
        logger.progress(update, cfg.run.total_updates, metrics)

    ray.get(list(pending))  # let in-flight collects finish before the final weights and evaluation
    if version % cfg.learner.push_every:
        push_weights(system, version)
    final_eval = evaluate(system, cfg)
    logger.log(update, {**final_eval, "rollout/total_env_steps": total_steps})
    ray.get([l.save.remote(str(run_dir / "checkpoint"), {"policy_version": version}) for l in system.learners])
    result = {
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
        "updates": update,
        "policy_version": version,
        "train_env_steps": int(total_steps),
        "wall_clock_s": round(logger.elapsed(), 1),
        "sft_wall_clock_s": sft_wall_clock(model_path),
        "mode": cfg.run.mode,
    }
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    logger.close()
    shutdown(system)
    plot_curve(run_dir, run_dir / "learning_curve.png")
    print_table(result, run_dir)
    return result


def print_table(result: dict, run_dir: pathlib.Path) -> None:
    print("\n| task | held-out episodes | SFT success | final success | updates | env steps | wall clock |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['task']} | {result['episodes']} | {result['sft_success']:.3f} | {result['final_success']:.3f} "
        f"| {result['updates']} | {result['train_env_steps']} | {result['wall_clock_s'] / 60:.1f} min |"
    )
    print(f"\nwrote {run_dir}/eval.json, learning_curve.png, checkpoint/, tensorboard/")


if __name__ == "__main__":
    try:
        main()
    finally:
        if ray.is_initialized():
            ray.shutdown()
