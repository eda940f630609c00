"""The Task API (envs/task.py, envs/registry.py, contracts/task_defaults.py, actors/task_calls.py): tasks by
reference, one clear error for an unknown or broken task, the task's config defaults, and faults in a task's
hooks contained per episode (counted, logged once, never in the store, the run stopped after N in a row)."""

from __future__ import annotations

import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
from rollout_checks import assert_whole, by_episode

from actors import rollout_actor
from actors.engines import Generation
from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from contracts.config import EnvConfig, ReplayConfig, RolloutConfig
from contracts.schema import from_table
from contracts.validation import ConfigError
from envs import registry
from envs.prompts import chat_prompt
from envs.registry import check_task, resolve_task, task_config
from envs.task import TaskError, TaskFailedError

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVAL = 10**12


# ---- resolution -------------------------------------------------------------------------------------------
def test_a_task_by_reference_and_by_factory():
    assert resolve_task("task_fixtures:FLAKY").name == "flaky"
    assert resolve_task("task_fixtures:make_task").name == "made"
    assert resolve_task("examples.shapesort.task:TASK").name == "shapesort"
    task = resolve_task("numberline")
    assert resolve_task(task) is task


@pytest.mark.parametrize(
    "ref, message",
    [
        ("nosuch", "unknown task 'nosuch': built-in tasks are numberline, ezpoints, points24, blackjack, alfworld"),
        ("task_fixtures:NOPE", "task 'task_fixtures:NOPE': task_fixtures has no attribute 'NOPE'"),
        ("no_such_module_xyz:TASK", "importing no_such_module_xyz failed: ModuleNotFoundError"),
        ("task_fixtures:NOT_A_TASK", "task_fixtures:NOT_A_TASK is a dict, not an envs.task.Task"),
        ("task_fixtures:NOT_CALLABLE", "prompt must be callable"),
        ("task_fixtures:BAD_EXPERT", "expert must be an envs.task.Expert or None"),
        ("", "a task reference must be a non-empty string"),
    ],
)
def test_an_unknown_or_malformed_task_is_one_clear_error(ref, message):
    with pytest.raises(TaskError) as error:
        resolve_task(ref)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_installed_packages_register_tasks_by_name(monkeypatch):
    entry = metadata.EntryPoint(name="mine", value="task_fixtures:WITH_DEFAULTS", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [entry] if group == entry.group else [])
    assert resolve_task("mine").name == "mine"
    assert registry.installed_tasks() == {"mine": "task_fixtures:WITH_DEFAULTS"}
    with pytest.raises(TaskError, match=r"installed \(rl4vlm.tasks\): mine;"):
        resolve_task("other")


# ---- the start-up smoke test ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, message",
    [
        ("task_fixtures:NO_RESET", "task noreset: reset failed: RuntimeError: this env never resets (/"),
        ("task_fixtures:BAD_OBS", "reset failed: TaskError: env.reset returned an observation of shape (300, 300)"),
        ("task_fixtures:BAD_PROMPT", "task badprompt: prompt failed: TaskError: prompt returned a int; need a str"),
        ("task_fixtures:OUT_OF_SPACE", "parse failed: TaskError: parse returned action 5; need an index into the"),
    ],
)
def test_check_task_names_the_broken_hook(ref, message):
    with pytest.raises(TaskError) as error:
        check_task(resolve_task(ref), EVAL)
    assert message in str(error.value), str(error.value)


def test_check_task_passes_the_built_in_tasks_and_the_example():
    for ref in ("numberline", "ezpoints", "points24", "blackjack", "examples.shapesort.task:TASK"):
        check_task(resolve_task(ref), EVAL)


# ---- the task's config defaults ----------------------------------------------------------------------------
def test_task_defaults_fill_what_the_preset_leaves_generic():
    cfg, task = task_config(["--env.task", "task_fixtures:WITH_DEFAULTS"])  # no preset: the generic one
    assert task.name == "mine" and cfg.env.task == "task_fixtures:WITH_DEFAULTS"
    assert cfg.model.path == "checkpoints/mine-sft" and cfg.sft.samples == 500
    assert (cfg.rollout.max_new_tokens, cfg.ppo.steps_per_update, cfg.ppo.cot_coef) == (64, 128, 0.3)
    tiny = task_config(["tiny", "--env.task=task_fixtures:WITH_DEFAULTS"])[0]  # the preset's own numbers stay
    assert (tiny.rollout.max_new_tokens, tiny.ppo.steps_per_update, tiny.sft.samples) == (48, 16, 256)
    assert tiny.ppo.cot_coef == 0.3 and tiny.model.path == "checkpoints/mine-sft"
    ref = "task_fixtures:WITH_DEFAULTS"
    assert task_config([ref])[0] == task_config(["--env.task", ref])[0]  # the reference in the preset's place
    flags = ["--env.task", "task_fixtures:WITH_DEFAULTS", "--rollout.max-new-tokens", "96", "--model.path", "m"]
    cfg = task_config(flags)[0]  # a flag wins, even one equal to the generic default
    assert cfg.rollout.max_new_tokens == 96 and cfg.model.path == "m" and cfg.ppo.steps_per_update == 128


def test_a_task_of_your_own_starts_from_the_generic_embedded_preset():
    """The built-in tasks' shared settings, not NumberLine's extras; no flags at all is still NumberLine's run."""
    from contracts.presets import numberline

    mine = task_config(["--env.task", "task_fixtures:WITH_DEFAULTS"])[0]
    assert (mine.learner.world_size, mine.ppo.micro_batch, mine.ppo.adv_std_floor, mine.ppo.demo_coef) == (
        2,
        32,
        0.5,
        0,
    )
    assert task_config(["embedded", "--env.task", "task_fixtures:WITH_DEFAULTS"])[0] == mine
    for args in ([], ["--run.mode", "async"], ["--env.task", "numberline"]):
        assert task_config(args)[0] == task_config(["numberline"])[0]
    assert task_config([])[0].ppo.demo_coef == numberline().ppo.demo_coef > 0


def test_task_defaults_for_a_field_that_does_not_exist_are_an_error():
    with pytest.raises(ConfigError, match="its defaults name 'sft.sample', not a config field"):
        task_config(["--env.task", "task_fixtures:BAD_DEFAULTS"])
    with pytest.raises(TaskError, match="unknown task"):
        task_config(["tiny", "--env.task", "nosuch"])


def test_a_task_without_an_expert_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="has no SFT expert; give a checkpoint"):
        task_config(["--env.task", "task_fixtures:NO_EXPERT"])
    # the generic preset has no demonstration loss; NumberLine's, named, needs an expert: an error naming the flag
    cfg, task = task_config(["--env.task", "task_fixtures:NO_EXPERT", "--model.no-build-if-missing"])
    assert task.expert is None and cfg.ppo.demo_coef == 0
    with pytest.raises(ConfigError, match="has no expert to demonstrate; pass --ppo.demo-coef 0"):
        task_config(["numberline", "--env.task", "task_fixtures:NO_EXPERT", "--model.no-build-if-missing"])
    with pytest.raises(ConfigError, match="--ppo.demo-coef 0.1: task .* has no expert to demonstrate"):
        task_config(["--env.task", "task_fixtures:NO_EXPERT", "--model.no-build-if-missing", "--ppo.demo-coef", "0.1"])


# ---- faults contained per episode --------------------------------------------------------------------------
class ScriptedEngine:
    """Cycles through `answers`, one per prompt."""

    def __init__(self, answers):
        self.answers, self.n = answers, 0
        self.chat_prompt = chat_prompt

    def generate(self, prompts, images):
        out = []
        for _ in prompts:
            out.append(Generation([1], [2], [-0.1], self.answers[self.n % len(self.answers)]))
            self.n += 1
        return out


def actor_for(task: str, monkeypatch, answers, envs=3, max_failures=20, store=None) -> RolloutActor:
    monkeypatch.setattr(rollout_actor, "make_engine", lambda *args, **kwargs: ScriptedEngine(answers))
    env_cfg = EnvConfig(task=task, envs_per_actor=envs, max_consecutive_failures=max_failures)
    return RolloutActor(0, env_cfg, RolloutConfig(backend="hf", steps_per_call=4), "unused", store)


ANSWERS = ['"action": "+"', '"action": "-"', "BAD", '"action": "+"', "OUT", '"action": "-"', "nonsense"]


def test_faulty_hooks_cost_episodes_not_the_run(monkeypatch, caplog):
    store = ReplayStore(ReplayConfig(capacity_steps=100_000))
    actor = actor_for("task_fixtures:FLAKY", monkeypatch, ANSWERS, store=store)
    with caplog.at_level(logging.ERROR, logger="actors.task_calls"):
        metrics = [actor.collect(steps_per_env=10) for _ in range(4)]
    total = {k: sum(m.get(k, 0.0) for m in metrics) for m in metrics for k in m}
    for hook in ("reset", "step", "prompt", "parse"):
        assert total[f"rollout/failures/{hook}"] > 0, hook
    hooks = sum(v for k, v in total.items() if k.startswith("rollout/failures/"))
    assert total["rollout/env_failures"] == hooks  # per collect; the actor's own counts include its first resets
    assert actor.counters["env_failures"] == sum(actor.calls.failures.values()) >= hooks
    # logged once per hook and error type, with the traceback (parse fails two ways: it raises ValueError, and
    # its "OUT" answer leaves the action space, a TaskError)
    logged = sorted(r.getMessage().split(" failed in ")[0] for r in caplog.records)
    assert logged == [f"task flaky: {h}" for h in ("parse", "parse", "prompt", "reset", "step")], logged
    assert all("Traceback" in r.getMessage() for r in caplog.records)
    episodes = by_episode(from_table(store.take(store.num_steps, learner_version=0)[0]))
    assert len(episodes) >= 5
    assert_whole(episodes)  # whole, replayable episodes only
    for steps in episodes.values():
        seed = steps[0].seed
        assert seed % 7 != 3 and seed % 11 != 4  # reset or prompt failed: never shipped
        assert seed % 5 != 1 or len(steps) == 1  # the second step fails: only one-step episodes got through
        assert not any(s.response_text in ("BAD", "OUT") for s in steps)


def test_a_task_that_fails_every_episode_stops_with_a_clear_message(monkeypatch):
    with pytest.raises(TaskFailedError, match=r"task noreset: 3 episodes in a row failed in rollout actor 0"):
        actor_for("task_fixtures:NO_RESET", monkeypatch, ANSWERS, max_failures=3)
    actor = actor_for("task_fixtures:TRAINING_FAILS", monkeypatch, ['"action": "+"'], max_failures=5)
    with pytest.raises(TaskFailedError, match="5 episodes in a row failed .*training step boom"):
        actor.collect(steps_per_env=10)


def test_evaluation_counts_failed_episodes_as_lost(monkeypatch):
    actor = actor_for("task_fixtures:FLAKY", monkeypatch, ['"action": "+"'], envs=4)
    out = actor.evaluate(40, EVAL)
    assert out["eval/episodes"] == 40
    never_started = sum(s % 7 == 3 or s % 11 == 4 for s in range(EVAL, EVAL + 40))
    assert never_started <= out["eval/failed_episodes"] < 40
    assert out["eval/success"] <= 1 - out["eval/failed_episodes"] / 40


# ---- through the driver ------------------------------------------------------------------------------------
def driver(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    cmd = [sys.executable, "-m", "cluster.train", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize(
    "ref, message",
    [
        ("nosuch", "error: unknown task 'nosuch': built-in tasks are numberline"),
        ("task_fixtures:NO_RESET", "error: task noreset: reset failed: RuntimeError: this env never resets"),
    ],
)
def test_the_driver_stops_an_unknown_or_broken_task_before_ray(ref, message, tmp_path):
    done = driver("--env.task", ref, "--run.out-dir", str(tmp_path / "runs"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_driver_stops_a_task_whose_training_episodes_all_fail(tiny_model_path, tmp_path):
    args = ["tiny", "--env.task", "task_fixtures:TRAINING_FAILS", "--model.path", tiny_model_path]
    args += ["--env.max-consecutive-failures", "4", "--run.out-dir", str(tmp_path), "--rollout.backend", "hf"]
    done = driver(*args, timeout=900)
    assert done.returncode == 4, done.stderr[-3000:]
    expected = "error: task trainfails: 4 episodes in a row failed in rollout actor 0 and none finished (last: step:"
    assert [line for line in done.stderr.splitlines() if line.startswith(expected)], done.stderr[-3000:]
    kept = re.search(r"^Ray logs of this run kept in (\S+)$", done.stderr, re.M)  # a failed run keeps them
    assert kept and pathlib.Path(kept.group(1)).is_dir(), done.stderr[-3000:]
    shutil.rmtree(kept.group(1), ignore_errors=True)
