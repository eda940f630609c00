"""RolloutActor: many env copies and one inference engine; each step is one batched generate call.

A plain class: the driver wraps it with `ray.remote` (cluster/launch.py); tests use it in-process.
Finished episodes go to the replay store as Arrow record batches; an episode is never split or half-written.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from actors.engines import make_engine
from actors.task_calls import EpisodeFailed, TaskCalls
from contracts.config import EnvConfig, RolloutConfig
from contracts.schema import StepRecord, encode_png, to_record_batch
from contracts.seeds import training_seed
from envs.registry import resolve_task
from models.checkpoint_files import ModelFiles, ensure_local
from models.weight_sync import WeightsMismatchError, WeightsPayload, check_probe, receive

log = logging.getLogger(__name__)


@dataclass
class EnvSlot:
    """One env copy and the episode it is in."""

    env: object
    index: int
    seed: int = 0
    episodes: int = 0
    obs: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    pending: Future | None = None
    """A reset running off the batch's path (tasks with slow resets); the slot sits out until it is done."""
    failed: bool = False
    """Evaluation only: a task hook failed in this episode; `evaluate` counts it as lost and drops the slot."""


class RolloutActor:
    def __init__(
        self,
        actor_id: int,
        env_cfg: EnvConfig,
        cfg: RolloutConfig,
        model_path: str,
        store=None,
        dtype: str = "float32",
        model_files: ModelFiles | None = None,
        lora_rank: int = 0,
        incarnation: int = 0,
    ):
        model_path = ensure_local(model_path, model_files)  # first: shipped here if this node cannot read it
        self.actor_id = actor_id
        # Episode ids stay unique over a run: the k-th actor started under an id (a replacement) tags its own.
        self.episode_prefix = f"{actor_id}r{incarnation}" if incarnation else str(actor_id)
        self.env_cfg, self.cfg, self.store = env_cfg, cfg, store
        self.task = resolve_task(env_cfg.task)
        self.calls = TaskCalls(self.task, env_cfg.cot, env_cfg.max_consecutive_failures, actor_id)
        self.engine = make_engine(cfg, model_path, dtype, seed=actor_id, lora_rank=lora_rank)
        self.mismatch: str | None = None
        """Set when the engine failed a push's probe: it serves an unknown policy and collects nothing more."""
        self.rng = np.random.default_rng(env_cfg.seed + 7919 * actor_id)  # random actions for invalid text
        self.version = 0
        self.counters = {"env_failures": 0}  # episodes dropped because a task hook failed (per hook: self.calls)
        # Slow resets (a task that loads or generates a game: seconds) run in threads so one never stalls the
        # batch: the other env copies keep stepping and the slot rejoins when it is ready.
        self.resets = ThreadPoolExecutor(env_cfg.envs_per_actor) if self.task.slow_reset else None
        self.slots = [EnvSlot(self.task.make_env(), i) for i in range(env_cfg.envs_per_actor)]
        for slot in self.slots:
            self._reset(slot)

    # ---- rollout ---------------------------------------------------------------------------------------------
    def collect(self, steps_per_env: int | None = None) -> dict[str, float]:
        """Step every env `steps_per_env` times; ship finished episodes to the store. Returns metrics."""
        self._check_serving()
        stats, before, start_version = Stats(), (dict(self.counters), dict(self.calls.failures)), self.version
        for _ in range(steps_per_env or self.cfg.steps_per_call):
            stats.finished.extend(episode for _, episode, _ in self._step_all(self.slots, stats))
        self._ship(stats.finished)
        counters = {k: v - before[0][k] for k, v in self.counters.items()}
        counters |= {f"failures/{k}": v - before[1][k] for k, v in self.calls.failures.items() if v > before[1][k]}
        # Weights change only between calls, so every sample of this call carries `start_version`.
        return {**stats.metrics(self.version, counters), "rollout/start_version": float(start_version)}

    def _step_all(self, slots: list[EnvSlot], stats: Stats, train: bool = True):
        """One batched generate for the ready `slots`, then one env step each. Returns [(slot, finished steps,
        success)]. A task hook that fails (actors/task_calls.py) drops that slot's episode only (`_failed`)."""
        slots, questions = self._questions(self._ready(slots, train), train)
        if not slots:
            return []
        prompts = [self.engine.chat_prompt(question) for question in questions]
        t0 = time.perf_counter()
        gens = self.engine.generate(prompts, [s.obs for s in slots])
        stats.gen_seconds += time.perf_counter() - t0
        finished = []
        t0 = time.perf_counter()
        for slot, gen in zip(slots, gens, strict=True):
            image = slot.obs
            try:  # a failing task hook loses its episode, never the batch
                parsed = self.calls.parse(gen.text, slot.info, self.rng, slot.env)
                slot.obs, reward, terminated, truncated, slot.info = self.calls.step(slot.env, parsed.to_env())
                rewards = [*(s.reward for s in slot.steps), reward]
                success = (terminated or truncated) and self.calls.success(rewards, terminated, slot.info)
            except EpisodeFailed as failure:
                self._failed(slot, failure, train)
                continue
            slot.steps.append(
                StepRecord(
                    episode_id=f"{self.episode_prefix}-{slot.index}-{slot.episodes}",
                    step=len(slot.steps),
                    actor_id=self.actor_id,
                    env_index=slot.index,
                    seed=slot.seed,
                    policy_version=self.version,
                    prompt_ids=gen.prompt_ids,
                    image_png=encode_png(image),
                    response_ids=gen.response_ids,
                    behaviour_logprobs=gen.logprobs,
                    response_text=gen.text,
                    action=parsed.action,
                    action_valid=parsed.valid,
                    parse_status=parsed.reason,
                    reward=float(reward),
                    terminated=bool(terminated),
                    truncated=bool(truncated),
                )
            )
            stats.add_step(gen, parsed.valid)
            if terminated or truncated:
                self.calls.finished()
                finished.append((slot, slot.steps, success))
                stats.add_episode(success, self.calls.episode_type(slot.info))
                if train:  # evaluation drops finished slots and opens new ones for the next seeds
                    self._reset(slot, train)
        stats.env_seconds += time.perf_counter() - t0
        return finished

    def _questions(self, slots: list[EnvSlot], train: bool) -> tuple[list[EnvSlot], list[str]]:
        """The slots whose prompt the task could build, and those prompts (a failing one drops its episode)."""
        kept, questions = [], []
        for slot in slots:
            try:
                questions.append(self.calls.prompt(slot.info))
                kept.append(slot)
            except EpisodeFailed as failure:
                self._failed(slot, failure, train)
        return kept, questions

    def _failed(self, slot: EnvSlot, failure: EpisodeFailed, train: bool) -> None:
        """Drop the slot's episode: count and log it (TaskFailedError after too many in a row), recreate the env;
        in training reset it for its next seed, in evaluation mark it failed for `evaluate` to count."""
        self.counters["env_failures"] += 1
        self.calls.failed(failure, slot.index)
        slot.env = self.calls.remake(slot.env)
        if train:
            self._reset(slot, train)
        else:
            slot.failed = True

    def _reset(self, slot: EnvSlot, train: bool = True) -> None:
        if train:
            slot.seed = training_seed(self.env_cfg.seed, self.actor_id, slot.index, slot.episodes)
            slot.episodes += 1
        slot.steps = []
        # The next prompt is built from this reset's info, so a new episode's first prompt describes its own
        # first state. The paper's SB3 vector env auto-resets inside step() and its prompt kept the finished
        # episode's last info (an old formula next to a new deal); we deliberately do not reproduce that quirk:
        # prompt and image always describe the same state.
        if self.resets is None:
            try:
                slot.obs, slot.info = self.calls.reset(slot.env, slot.seed)
            except EpisodeFailed as failure:
                self._failed(slot, failure, train)
        else:
            slot.pending = self.resets.submit(self.calls.reset, slot.env, slot.seed)

    def _ready(self, slots: list[EnvSlot], train: bool) -> list[EnvSlot]:
        """The slots whose reset has finished (waits for the first one only when none is ready)."""
        pending = [s.pending for s in slots if s.pending is not None]
        if pending and len(pending) == len(slots):
            wait(pending, return_when=FIRST_COMPLETED)
        ready = []
        for slot in slots:
            if slot.failed:
                continue
            if slot.pending is not None:
                if not slot.pending.done():
                    continue
                future, slot.pending = slot.pending, None
                try:
                    slot.obs, slot.info = future.result()
                except EpisodeFailed as failure:  # a reset that fails loses nothing collected
                    self._failed(slot, failure, train)
                    continue
            ready.append(slot)
        return ready

    def _ship(self, episodes: list[list[StepRecord]]) -> None:
        if not episodes or self.store is None:
            return
        # Waits until the store holds the chunk (it never refuses one: when full it evicts its oldest episodes),
        # so the store's depth already counts this collect's episodes when the driver harvests the call.
        _call(self.store.add, to_record_batch([s for ep in episodes for s in ep]))

    # ---- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, num_episodes: int, seed_base: int) -> dict[str, float]:
        """Run `num_episodes` on held-out seeds with the current weights; nothing goes to the store."""
        self._check_serving()
        stats = Stats()
        returns, wins, solvable, pending = [], [], [], list(range(num_episodes))
        slots: list[EnvSlot] = []
        deal_solvable: dict[int, bool] = {}  # per slot, read at reset: the slot's info changes once it finishes
        lost = 0  # episodes a task hook failed in: they count as unsuccessful
        while pending or slots:
            while pending and len(slots) < self.env_cfg.envs_per_actor:
                slot = self._eval_slot(len(slots), seed_base + pending.pop(0))
                deal_solvable[id(slot)] = slot.failed or self.calls.solvable(slot.info)
                slots.append(slot)
            finished = self._step_all(slots, stats, train=False)
            failed = [(s, s.steps, False) for s in slots if s.failed]
            lost += len(failed)
            for slot, episode, success in finished + failed:
                returns.append(sum(s.reward for s in episode))
                wins.append(success)
                solvable.append(deal_solvable.pop(id(slot)))
            done = {id(slot) for slot, _, _ in finished + failed}
            slots = [s for s in slots if id(s) not in done]
        returns, solvable = np.array(returns), np.array(solvable, dtype=bool)
        won = np.array(wins, dtype=bool)  # the task's success rule (Task.success)
        by_type = {f"eval/n/{t}": float(n) for t, n in stats.type_episodes.items()}
        by_type |= {f"eval/won/{t}": float(n) for t, n in stats.type_wins.items()}
        by_type |= {"eval/failed_episodes": float(lost)} if lost else {}
        return by_type | {
            "eval/episodes": float(len(returns)),
            "eval/success": float(won.mean()),
            "eval/return": float(returns.mean()),
            "eval/invalid_frac": stats.invalid / max(stats.steps, 1),
            # Where not every episode can be won (Task.solvable), success over the winnable ones is the fairer rate.
            "eval/solvable_frac": float(solvable.mean()),
            "eval/success_on_solvable": float(won[solvable].mean()) if solvable.any() else 0.0,
        }

    def _eval_slot(self, index: int, seed: int) -> EnvSlot:
        """A fresh env for one held-out episode, reset on `seed` (marked failed if a task hook fails)."""
        slot = EnvSlot(None, index, seed=seed)
        try:
            slot.env = self.calls.make_env()
        except EpisodeFailed as failure:
            self._failed(slot, failure, train=False)
            return slot
        self._reset(slot, train=False)
        return slot

    # ---- weights -----------------------------------------------------------------------------------------------
    def load_weights(self, payload: WeightsPayload) -> dict[str, float]:
        """Verify the checksum, load in place, prove the engine serves the pushed policy (its probe), and tag
        later samples with the new version (models/weight_sync.py).

        A failed probe raises WeightsMismatchError and leaves the actor refusing to collect or evaluate: nothing
        it generates from then on could be attributed to a policy version (the pool replaces it).
        """
        t0 = time.perf_counter()
        self.engine.load_weights(receive(payload), payload.adapter)
        metrics = {"timing/weight_verify_s": 0.0}
        if payload.probe is not None:
            t1 = time.perf_counter()
            try:
                metrics["rollout/probe_gap"] = check_probe(
                    payload.probe, *self.engine.score_probe(payload.probe.text, payload.probe.image)
                )
            except WeightsMismatchError as error:
                self.mismatch = f"rollout actor {self.actor_id}, push v{payload.version}: {error}"
                log.error("%s; it stops collecting", self.mismatch)
                raise WeightsMismatchError(self.mismatch) from None
            metrics["timing/weight_verify_s"] = time.perf_counter() - t1
        self.version = payload.version
        metrics["timing/weight_load_s"] = time.perf_counter() - t0
        return metrics | {"rollout/policy_version": float(self.version)}

    def _check_serving(self) -> None:
        if self.mismatch is not None:
            raise WeightsMismatchError(f"refusing to collect: {self.mismatch}")

    def seed_state(self) -> dict:
        """Where this actor's training seeds and random fallback actions stand (for a checkpoint)."""
        return {"episodes": [s.episodes for s in self.slots], "rng": self.rng.bit_generator.state}

    def restore_seed_state(self, state: dict) -> None:
        """Continue from `seed_state` (on resume): new episodes get new seeds, not the ones already played."""
        self.rng.bit_generator.state = state["rng"]
        for slot, episodes in zip(self.slots, state["episodes"]):
            slot.episodes = episodes
            self._reset(slot)

    def policy_version(self) -> int:
        return self.version

    def score(self, prompt: str, image: np.ndarray):
        """One generation for a fixed prompt (tests compare it with the learner's forward)."""
        return self.engine.generate([prompt], [image])[0]


class Stats:
    """Counters of one collect/evaluate call."""

    def __init__(self):
        self.steps = self.tokens = self.invalid = self.successes = 0
        self.type_episodes: dict[str, int] = {}  # episodes and wins per episode type (Task.episode_type)
        self.type_wins: dict[str, int] = {}
        self.gen_seconds = self.env_seconds = 0.0
        self.finished: list[list[StepRecord]] = []
        self.t0 = time.perf_counter()

    def add_step(self, gen, valid: bool) -> None:
        self.steps += 1
        self.tokens += len(gen.response_ids)
        self.invalid += int(not valid)

    def add_episode(self, success: bool, kind: str | None) -> None:
        self.successes += int(success)
        if kind:
            self.type_episodes[kind] = self.type_episodes.get(kind, 0) + 1
            self.type_wins[kind] = self.type_wins.get(kind, 0) + int(success)

    def metrics(self, version: int, counters: dict) -> dict[str, float]:
        returns = [sum(s.reward for s in ep) for ep in self.finished]
        wall = time.perf_counter() - self.t0
        out = {
            "rollout/env_steps": float(self.steps),
            "rollout/tokens": float(self.tokens),
            "rollout/episodes": float(len(returns)),
            "rollout/successes": float(self.successes),
            "rollout/return_sum": float(sum(returns)),
            "rollout/invalid": float(self.invalid),
            "rollout/policy_version": float(version),
            "timing/generate_s": self.gen_seconds,
            "timing/env_s": self.env_seconds,
            "timing/collect_s": wall,
        }
        out.update({f"rollout/{k}": float(v) for k, v in counters.items()})
        return out


def _call(method, *args):
    """Call a plain method or a Ray actor method the same way (the store may be either)."""
    if hasattr(method, "remote"):
        import ray

        return ray.get(method.remote(*args))
    return method(*args)
