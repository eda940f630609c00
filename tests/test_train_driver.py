"""cluster/train.py and cluster/metrics.py pieces that need no cluster: rollout summaries, eval split, logging."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from PIL import Image

from actors.rollout_actor import Stats
from cluster import train
from cluster.launch import System
from cluster.metrics import RunLogger, plot_curve
from cluster.train import print_table, summarize_rollouts
from contracts.presets import tiny


def collect_metrics(steps, tokens, episodes, successes, return_sum, invalid, env_failures=0.0) -> dict[str, float]:
    return {
        "rollout/env_steps": steps,
        "rollout/tokens": tokens,
        "rollout/episodes": episodes,
        "rollout/successes": successes,
        "rollout/return_sum": return_sum,
        "rollout/invalid": invalid,
        "rollout/policy_version": 1.0,
        "rollout/env_failures": env_failures,  # counted during this collect() call
        "timing/collect_s": 2.0,
    }


def test_summarize_reads_the_keys_collect_produces():
    produced = Stats().metrics(0, {"env_failures": 0})
    read = {"env_steps", "tokens", "episodes", "successes", "return_sum", "invalid", "env_failures"}
    assert {f"rollout/{k}" for k in read} <= produced.keys()


def test_summarize_rollouts_sums_calls_into_rates():
    a = collect_metrics(8.0, 100.0, 2.0, 1.0, 0.0, 2.0, env_failures=0.0)
    b = collect_metrics(12.0, 140.0, 3.0, 2.0, 1.0, 4.0, env_failures=1.0)
    out = summarize_rollouts([a, b], seconds=4.0)
    assert out == pytest.approx(
        {
            "rollout/env_steps": 20.0,
            "rollout/env_steps_per_s": 5.0,
            "rollout/tokens_per_s": 60.0,
            "rollout/success": 3.0 / 5.0,  # successes / episodes, not per call
            "rollout/return_mean": 1.0 / 5.0,
            "rollout/episodes": 5.0,
            "rollout/invalid_frac": 6.0 / 20.0,
            "rollout/env_failures": 1.0,  # summed over calls (and so over actors)
        }
    )


def test_summarize_rollouts_without_episodes_or_calls_is_finite():
    out = summarize_rollouts([collect_metrics(6.0, 30.0, 0.0, 0.0, 0.0, 6.0)], seconds=3.0)
    assert out["rollout/success"] == 0.0 and out["rollout/return_mean"] == 0.0 and out["rollout/episodes"] == 0.0
    assert out["rollout/invalid_frac"] == 1.0 and out["rollout/env_steps_per_s"] == 2.0
    empty = summarize_rollouts([], seconds=0.0)
    assert all(math.isfinite(v) and v == 0.0 for v in empty.values())
    assert set(empty) == set(out)


class FakeActor:
    """Answers `evaluate.remote(n, seed_base)` with fixed rates (ray.get is patched to the identity)."""

    def __init__(self, success: float, ret: float):
        self.success, self.ret, self.calls = success, ret, []
        self.evaluate = SimpleNamespace(remote=self._evaluate)

    def _evaluate(self, n, seed_base):
        self.calls.append((n, seed_base))
        rates = {"eval/success": self.success, "eval/return": self.ret, "eval/invalid_frac": 0.5}
        return {"eval/episodes": float(n), **rates, **getattr(self, "extra", {})}


class FakePool:
    """The rollout pool's `handles()` and `replace()`, over fake actors."""

    def __init__(self, actors):
        self.actors, self.replaced = dict(enumerate(actors)), []

    def handles(self):
        return dict(self.actors)

    def replace(self, actor_id, error):
        self.replaced.append(actor_id)
        self.actors[actor_id] = FakeActor(0.0, 0.0)


def system_of(actors):
    return System(store=None, pool=FakePool(actors), learners=[], placement=None)


def test_evaluate_splits_held_out_seeds_and_weights_by_episodes(monkeypatch):
    monkeypatch.setattr(train.ray, "get", lambda refs: refs)
    cfg = tiny()
    cfg.run.eval_episodes = 5
    actors = [FakeActor(1.0, 1.0), FakeActor(0.0, -2.0)]
    out = train.evaluate(system_of(actors), cfg)
    seed = cfg.env.eval_seed
    assert actors[0].calls == [(3, seed)] and actors[1].calls == [(2, seed + 3)]  # disjoint held-out ranges
    assert out == pytest.approx(
        {"eval/episodes": 5.0, "eval/success": 0.6, "eval/return": (3 * 1.0 + 2 * -2.0) / 5, "eval/invalid_frac": 0.5}
    )
    cfg.run.eval_episodes = 1
    lone = [FakeActor(1.0, 1.0), FakeActor(0.0, 0.0)]
    out = train.evaluate(system_of(lone), cfg)
    assert lone[1].calls == [] and out["eval/episodes"] == 1.0 and out["eval/success"] == 1.0


def test_evaluate_weights_solvable_rates_by_solvable_deals(monkeypatch):
    monkeypatch.setattr(train.ray, "get", lambda refs: refs)
    cfg = tiny()
    cfg.run.eval_episodes = 4
    a, b = FakeActor(0.5, 0.0), FakeActor(0.5, 0.0)
    a.extra = {"eval/solvable_frac": 1.0, "eval/success_on_solvable": 0.5}  # 2 solvable deals, 1 won
    b.extra = {"eval/solvable_frac": 0.5, "eval/success_on_solvable": 1.0}  # 1 solvable deal, won
    out = train.evaluate(system_of([a, b]), cfg)
    assert out["eval/success_on_solvable"] == pytest.approx(2 / 3)


def test_evaluate_replaces_a_dead_actor_and_plays_every_seed_again(monkeypatch):
    from ray.exceptions import RayActorError

    cfg = tiny()
    cfg.run.eval_episodes = 4
    good, dead = FakeActor(1.0, 1.0), FakeActor(1.0, 1.0)
    dead.evaluate = SimpleNamespace(remote=lambda n, s: "dead")

    def get(ref):
        if ref == "dead":
            raise RayActorError()
        return ref

    monkeypatch.setattr(train.ray, "get", get)
    monkeypatch.setattr(train.ray, "wait", lambda refs, timeout: (refs, []))
    system = system_of([good, dead])
    out = train.evaluate(system, cfg)
    assert system.pool.replaced == [1] and out["eval/episodes"] == 4.0
    assert good.calls == [(2, cfg.env.eval_seed), (2, cfg.env.eval_seed)]  # the whole evaluation ran again


def test_run_logger_writes_history_tensorboard_and_curve(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, use_ray_metrics=False)
    assert logger.gauges == {}
    rows = [
        (0, {"eval/success": 0.25, "eval/episodes": 4.0, "rollout/total_env_steps": 0.0}),
        (1, {"rollout/success": 0.5, "rollout/total_env_steps": 20.0, "learner/policy_loss": -0.1}),
        (2, {"rollout/success": 0.75, "rollout/total_env_steps": 40.0, "eval/success": 0.5}),
    ]
    for step, metrics in rows:
        logger.log(step, metrics)
    logger.progress(2, 2, rows[2][1])
    logger.close()
    line = capsys.readouterr().out
    assert "update   2/2" in line and "success 0.75" in line and "eval success 0.500" in line

    history = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["update"] for h in history] == [0, 1, 2]
    for h, (_, metrics) in zip(history, rows):
        assert {k: h[k] for k in metrics} == metrics
    elapsed = [h["time/elapsed_s"] for h in history]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.0

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert "time/elapsed_s" in acc.Tags()["scalars"]
    assert [(e.step, e.value) for e in acc.Scalars("rollout/success")] == [(1, 0.5), (2, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/success")] == [(0, 0.25), (2, 0.5)]

    plot_curve(tmp_path, tmp_path / "curve.png")
    with Image.open(tmp_path / "curve.png") as img:
        assert img.format == "PNG" and img.size == (720, 480)  # figsize 6x4 in at 120 dpi


def test_print_table_shows_the_eval_json_values(tmp_path, capsys):
    result = {
        "task": "numberline",
        "episodes": 200,
        "sft_success": 0.245,
        "final_success": 0.61,
        "updates": 40,
        "train_env_steps": 10240,
        "wall_clock_s": 3300.0,
        "mode": "async",
    }
    print_table(result, tmp_path)
    out = capsys.readouterr().out
    assert "| numberline | 200 | 0.245 | 0.610 | 40 | 10240 | 55.0 min |" in out
    assert out.count("|---") == 7 and f"wrote {tmp_path}/eval.json" in out


def test_learner_failure_stops_cleanly_with_the_exact_resume_command(tmp_path, monkeypatch, capsys):
    from learner.state_files import write_state_json

    monkeypatch.setattr(train.sys, "argv", ["cluster.train", "numberline", "--ppo.lr", "5e-5"])
    with pytest.raises(SystemExit) as stop:
        train.stop_for_resume(tmp_path, "a learner rank", RuntimeError("rank 1 died"))
    assert stop.value.code == 3 and "no checkpoint was written yet" in capsys.readouterr().out
    checkpoint = tmp_path / "checkpoints" / "update_000005"
    checkpoint.mkdir(parents=True)
    write_state_json(checkpoint, {"update": 5})
    with pytest.raises(SystemExit):
        train.stop_for_resume(tmp_path, "the replay store", RuntimeError("rank 1 died"))
    out = capsys.readouterr().out
    assert "the replay store failed" in out and "rank 1 died" in out
    assert f"python -m cluster.train numberline --ppo.lr 5e-5 --run.resume {checkpoint}" in out
