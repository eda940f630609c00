"""RolloutPool: the driver's handle on the rollout actors. It keeps them collecting, replaces crashed ones and
grows or shrinks the pool while a run is going.

- Continuous (async) rollout: a finished `collect` is harvested and the next one submitted at once, also while
  the learner trains (`run_until`), so actors never sit idle waiting for the driver.
- Fault tolerance: a call that fails because its actor died is counted (`lost_collects`) and the actor is
  replaced by a fresh one with the same id. Nothing of the lost call reaches the store half-written: an actor
  ships the finished episodes of a collect in one `ReplayStore.add` at its end, and `add` is all-or-nothing.
- Weights before samples: a new or replacement actor gets `load_weights(current)` as its first call and
  `collect` after it; Ray runs one caller's calls to an actor in submission order, so its first samples
  carry the current policy version (recorded in `first_versions`).
- Verified loads: an actor whose engine fails a push's probe (models/weight_sync.py `WeightsMismatchError`)
  refuses to collect; the pool counts it (`weight_mismatches`), logs it and replaces the actor, whose
  replacement loads the latest weights and is verified again. Its samples never reach the store.
- Draining: `resize` to fewer actors lets the removed ones finish their running collect (its episodes ship),
  then kills them.
- Throttle: `may_collect(running)` (see `backlog_gate`) can hold an idle actor back while the replay store already
  has enough unused steps; it is asked again at every harvest and when the learner starts an update (after the
  driver's `take`), and never when nothing at all is running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError

from envs.task import TaskFailedError
from models.weight_sync import WeightsMismatchError

log = logging.getLogger(__name__)


@dataclass
class Member:
    handle: ray.actor.ActorHandle
    actor_id: int
    generation: int
    """Unique over the whole pool (ids are reused after a drain; stale calls must not match a new actor)."""
    spawned_at_version: int
    draining: bool = False
    failed_at: float | None = None
    """When the actor this one replaced was found dead (for the restart time)."""


class RolloutPool:
    def __init__(
        self,
        make_actor: Callable[[int], ray.actor.ActorHandle],
        max_restarts: int = 20,
        may_collect: Callable[[int], bool] | None = None,
    ):
        self.make_actor = make_actor
        self.max_restarts = max_restarts
        self.may_collect = may_collect
        """Asked, with the number of collects running, before each new collect; None: always collect."""
        self.members: dict[int, Member] = {}
        self.calls: dict[ray.ObjectRef, tuple[str, int, int]] = {}  # ref -> (kind, actor id, generation)
        self.weights: tuple[ray.ObjectRef, int] | None = None  # the latest pushed payload ref and its version
        self.results: list[dict[str, float]] = []  # harvested collect metrics, emptied by `take_results`
        self.counters = {"actor_restarts": 0, "lost_collects": 0, "actors_added": 0, "actors_removed": 0}
        self.counters["throttled_collects"] = 0  # collects held back by `may_collect`
        self.counters["weight_mismatches"] = 0  # loads whose probe showed the engine serving another policy
        self.last_restart_s: float | None = None  # crash seen -> replacement holds the current weights
        self.first_versions: dict[tuple[int, int], tuple[int, int]] = {}  # (id, gen) -> (current, first sample)
        self.joined: list[tuple[int, int]] = []  # (id, generation) of actors added or replaced mid-run
        self.spawned = 0
        self.last_load_s: float | None = None
        self.last_verify: dict[str, float] = {}  # the last load's probe: its gap and time

    # ---- membership ------------------------------------------------------------------------------------------
    def start(self, n: int) -> None:
        for actor_id in range(n):
            self._spawn(actor_id)
        ray.get([m.handle.policy_version.remote() for m in self.members.values()])  # fail now if one cannot start

    def size(self) -> int:
        return sum(not m.draining for m in self.members.values())

    def handles(self) -> dict[int, ray.actor.ActorHandle]:
        return {i: m.handle for i, m in self.members.items() if not m.draining}

    def resize(self, n: int) -> None:
        """Grow to or drain down to `n` actors (at least 1)."""
        n = max(1, n)
        active = sorted(i for i, m in self.members.items() if not m.draining)
        for actor_id in active[n:]:
            self.members[actor_id].draining = True
            self.counters["actors_removed"] += 1
            if not self._busy(actor_id):
                self._retire(actor_id)
        free_ids = (i for i in range(10**6) if i not in self.members)
        for _ in range(n - len(active)):
            actor_id = next(free_ids)
            self.joined.append((actor_id, self._spawn(actor_id)))
            self.counters["actors_added"] += 1
        log.warning("rollout pool resized to %d actor(s)", n)

    def _spawn(self, actor_id: int, failed_at: float | None = None) -> int:
        """Start an actor under `actor_id` (current weights first); returns its generation."""
        version = self.weights[1] if self.weights else 0  # what its first samples must carry
        handle = self.make_actor(actor_id)
        self.spawned += 1
        self.members[actor_id] = Member(handle, actor_id, self.spawned, version, failed_at=failed_at)
        if self.weights is not None:
            self._load(actor_id)
        return self.spawned

    def _retire(self, actor_id: int) -> None:
        member = self.members.pop(actor_id)
        ray.kill(member.handle)

    def replace(self, actor_id: int, error: Exception) -> None:
        """Replace a rollout actor found dead outside the pool's own calls (e.g. during an evaluation)."""
        if actor_id in self.members:
            self._replace(actor_id, self.members[actor_id].generation, error)

    def _replace(self, actor_id: int, generation: int, error: Exception) -> None:
        member = self.members.get(actor_id)
        if member is None or member.generation != generation:
            return  # already replaced (several of its calls failed) or drained
        if member.draining:
            self.members.pop(actor_id)
            return
        self.counters["actor_restarts"] += 1
        mismatch = isinstance(error, WeightsMismatchError)
        self.counters["weight_mismatches"] += int(mismatch)
        if self.counters["actor_restarts"] > self.max_restarts:
            raise RuntimeError(f"rollout actors restarted more than {self.max_restarts} times; last error: {error}")
        if mismatch:  # its engine loaded the push but does not serve it: never train on what it would generate
            log.error("rollout actor %d does not serve the pushed policy (%s); replacing it", actor_id, error)
        else:
            log.warning("rollout actor %d died (%s); starting a replacement", actor_id, type(error).__name__)
        try:
            ray.kill(member.handle)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        self.joined.append((actor_id, self._spawn(actor_id, failed_at=time.perf_counter())))

    # ---- calls -----------------------------------------------------------------------------------------------
    def _busy(self, actor_id: int) -> bool:
        return any(kind == "collect" and i == actor_id for kind, i, _ in self.calls.values())

    def _load(self, actor_id: int) -> None:
        m = self.members[actor_id]
        self.calls[m.handle.load_weights.remote(self.weights[0])] = ("load", actor_id, m.generation)

    def submit_collects(self, force: bool = False) -> None:
        """A collect for every active actor that has none running, while `may_collect` allows (unless `force`)."""
        running = sum(kind == "collect" for kind, _, _ in self.calls.values())
        for actor_id, m in self.members.items():
            if not m.draining and not self._busy(actor_id):
                if not force and self.may_collect is not None and not self.may_collect(running):
                    self.counters["throttled_collects"] += 1
                    return
                self.calls[m.handle.collect.remote()] = ("collect", actor_id, m.generation)
                running += 1

    def push(self, payload_ref: ray.ObjectRef, version: int) -> None:
        """Queue `load_weights` on every actor (behind its running collect); later collects use the new version."""
        self.weights = (payload_ref, version)
        for actor_id, m in self.members.items():
            if not m.draining:
                self._load(actor_id)

    def step(self, also: list[ray.ObjectRef] = (), resubmit: bool = True, timeout: float | None = None) -> None:
        """Wait for one pool call (or one of `also`) to finish and handle every finished pool call."""
        refs = list(self.calls) + list(also)
        if not refs and resubmit:  # nothing running: the throttle must never leave the driver waiting on nothing
            self.submit_collects(force=True)
            refs = list(self.calls)
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.calls), num_returns=len(self.calls), timeout=0) if self.calls else ([], [])
        for ref in ready:
            kind, actor_id, generation = self.calls.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, RayTaskError) as error:
                if isinstance(error, TaskFailedError):  # the task fails every episode: a new actor would too
                    raise
                if kind == "collect":
                    self.counters["lost_collects"] += 1
                self._replace(actor_id, generation, error)
                continue
            member = self.members.get(actor_id)
            if member is None or member.generation != generation:
                continue
            if kind == "load":
                self.last_load_s = result["timing/weight_load_s"]
                self.last_verify = {
                    k: v for k, v in result.items() if k in ("rollout/probe_gap", "timing/weight_verify_s")
                }
                if member.failed_at is not None:
                    self.last_restart_s = time.perf_counter() - member.failed_at
                    member.failed_at = None
                continue
            self.results.append(result)
            key = (actor_id, generation)
            if key not in self.first_versions:
                self.first_versions[key] = (member.spawned_at_version, int(result["rollout/start_version"]))
            if member.draining:
                self._retire(actor_id)
        if resubmit:
            self.submit_collects()

    def run_until(self, refs: list[ray.ObjectRef], resubmit: bool = True) -> list:
        """ray.get(refs), harvesting (and, when `resubmit`, restarting) collects while waiting. The first of
        `refs` to fail raises at once: with a learner rank dead, the others wait in a collective (gloo's timeout
        is 30 min), so waiting for all of them would wait that long."""
        if resubmit:  # the driver's `take` may just have made room: throttled actors collect again at once
            self.submit_collects()
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            for ref in ready:  # each checked once, as it finishes
                ray.get(ref)  # raises if that rank failed
            if pending:
                self.step(also=pending, resubmit=resubmit)
        return ray.get(refs)

    def drain(self) -> None:
        """Wait for every running call (no new collects): the sync mode's barrier and the end of a run."""
        while self.calls:
            self.step(resubmit=False)

    def joined_first_versions(self) -> list[list[int]]:
        """[actor id, version when it joined, version of its first samples] for actors added mid-run."""
        return [[i, *self.first_versions[(i, g)]] for i, g in self.joined if (i, g) in self.first_versions]

    def take_results(self) -> list[dict[str, float]]:
        out, self.results = self.results, []
        return out

    def stats(self) -> dict[str, float]:
        out = {f"rollout/{k}": float(v) for k, v in self.counters.items()}
        out["rollout/actors"] = float(self.size())
        if self.last_restart_s is not None:
            out["rollout/restart_s_last"] = self.last_restart_s
        if self.last_verify:  # the last verified load: how far the engine's probe was from the learner's, its cost
            out["rollout/probe_gap"] = self.last_verify.get("rollout/probe_gap", 0.0)
            out["rollout/weight_verify_s"] = self.last_verify.get("timing/weight_verify_s", 0.0)
        return out

    def shutdown(self) -> None:
        for m in self.members.values():
            ray.kill(m.handle)
        self.members.clear()
        self.calls.clear()


def backlog_gate(store: ray.actor.ActorHandle, max_backlog_steps: float, steps_per_collect: int):
    """`may_collect` for the pool: another collect only while the store's unused steps plus what the running
    collects will add (`steps_per_collect` each, an upper bound) stay below `max_backlog_steps`.

    Without it, continuous rollout on a small host outruns the learner: most collected steps are evicted unused
    and the rollout competes with the learner for the CPU. The store's depth can include steps `take` will drop
    as stale; the gate is asked again at every harvest, and the pool collects anyway when nothing runs.
    """

    def may_collect(running: int) -> bool:
        depth = ray.get(store.stats.remote())["replay/depth_steps"]
        return depth + running * steps_per_collect < max_backlog_steps

    return may_collect
