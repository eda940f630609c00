"""ReplayStore: the shared, bounded, policy-version-aware store between rollout actors and learner ranks.

Holds Arrow record batches of whole episodes. When full, `add` evicts the oldest episodes (counted; memory
stays bounded, and no rollout actor ever waits on the store). `take` hands out whole episodes, oldest first, dropping
those generated more than `max_policy_lag` versions behind the learner (counted), split into balanced shards
for the learner ranks. A plain class: cluster/launch.py makes it a Ray actor.

The store keeps its episodes in memory only. If its process dies, Ray restarts it (cluster/launch.py) empty
and retries the calls that were pending; the driver sees the new `started_at`, counts the restart and the
steps lost with it (cluster/recovery.py). Losing them is safe: every sample is taken at most once, and the
rollout actors go on adding to the new instance through the same handle.
"""

from __future__ import annotations

import collections
import math
import pathlib
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.config import ReplayConfig


class ReplayStore:
    def __init__(self, cfg: ReplayConfig):
        self.cfg = cfg
        self.episodes: collections.deque[pa.Table] = collections.deque()
        self.num_steps = 0
        self.counters = {"added_steps": 0, "taken_steps": 0, "dropped_stale_steps": 0, "evicted_steps": 0}
        self.spill_dir = pathlib.Path(cfg.spill_dir) if cfg.spill_dir else None
        self.spilled = 0
        self.started = time.time()
        if self.spill_dir:
            self.spill_dir.mkdir(parents=True, exist_ok=True)

    def add(self, batch: pa.RecordBatch) -> None:
        """Accept a chunk of whole episodes; when full, first evict the oldest episodes (counted).

        Evicting rather than refusing: a refused actor would wait inside its `collect`, and every other call
        to it (a weight load, an evaluation, a checkpoint's seed query) would wait behind it while the driver
        waits on that call: a deadlock once rollout outpaces the learner. The oldest episodes are the stalest.
        """
        while self.episodes and self.num_steps + batch.num_rows > self.cfg.capacity_steps:
            evicted = self.episodes.popleft()
            self.num_steps -= evicted.num_rows
            self.counters["evicted_steps"] += evicted.num_rows
        table = pa.Table.from_batches([batch])
        if self.spill_dir:
            pq.write_table(table, self.spill_dir / f"chunk-{self.spilled:06d}.parquet")
            self.spilled += 1
        ids = table.column("episode_id")
        for episode_id in pc.unique(ids).to_pylist():
            self.episodes.append(table.filter(pc.equal(ids, episode_id)))
        self.num_steps += batch.num_rows
        self.counters["added_steps"] += batch.num_rows

    def take(self, min_steps: int, learner_version: int, num_shards: int = 1, floor_version: int = 0):
        """Pop whole episodes until `min_steps` fresh steps are gathered; None if not enough yet.

        Returns `num_shards` tables balanced by step count. Episodes with a step older than `floor_version` are
        dropped too, whatever the lag (after a learner restore, nothing of the lost learner's policies trains).
        """
        # Episodes arrive in the order they finish, not the order of their weights: check every one.
        min_version = max(learner_version - self.cfg.max_policy_lag, floor_version)
        fresh = collections.deque(e for e in self.episodes if _oldest_version(e) >= min_version)
        dropped = self.num_steps - sum(e.num_rows for e in fresh)
        self.episodes, self.num_steps = fresh, self.num_steps - dropped
        self.counters["dropped_stale_steps"] += dropped
        if self.num_steps < min_steps or len(self.episodes) < num_shards:  # no learner rank may get an empty shard
            return None
        # Every shard gets at least its share of min_steps, so each rank trains its whole optimizer steps (the
        # update rounds every rank down to the smallest shard's, learner/ppo_update.py): episodes go in arrival
        # order, each to the emptiest shard, until the smallest holds its share.
        share = max(math.ceil(min_steps / num_shards), 1)
        sizes, owner = [0] * num_shards, []
        for episode in self.episodes:
            owner.append(sizes.index(min(sizes)))
            sizes[owner[-1]] += episode.num_rows
            if min(sizes) >= share:
                break
        else:
            return None
        shards: list[list[pa.Table]] = [[] for _ in range(num_shards)]
        for k in owner:
            shards[k].append(self.episodes.popleft())
        self.num_steps -= sum(sizes)
        self.counters["taken_steps"] += sum(sizes)
        return [pa.concat_tables(s) for s in shards]

    def take_shards(self, min_steps: int, learner_version: int, num_shards: int, floor_version: int = 0) -> tuple:
        """`take` for a Ray caller that asks for `num_shards + 1` returns: (episode ids taken, *shards), or
        ([], None, ...). Each shard is then its own object owned by the caller, so a learner rank still gets
        its shard when this store dies meanwhile (objects it `ray.put` itself would die with it)."""
        tables = self.take(min_steps, learner_version, num_shards, floor_version)
        if tables is None:
            return ([], *([None] * num_shards))
        ids = [i for t in tables for i in pc.unique(t.column("episode_id")).to_pylist()]
        return (ids, *tables)

    def export(self) -> pa.Table | None:
        """Every episode still held (for a checkpoint), without removing them."""
        return pa.concat_tables(self.episodes) if self.episodes else None

    def restore(self, table: pa.Table, counters: dict[str, int] | None = None) -> None:
        """Put back what `export` returned (on resume), whole episodes in their old order, and the counters."""
        self.counters.update(counters or {})
        ids = table.column("episode_id")
        for episode_id in pc.unique(ids).to_pylist():  # first-occurrence order
            self.episodes.append(table.filter(pc.equal(ids, episode_id)))
        self.num_steps += table.num_rows

    def started_at(self) -> float:
        """When this instance started (a restart by Ray makes a new one)."""
        return self.started

    def stats(self) -> dict[str, float]:
        out = {f"replay/{k}": float(v) for k, v in self.counters.items()}
        out["replay/depth_steps"] = float(self.num_steps)
        out["replay/depth_episodes"] = float(len(self.episodes))
        return out


def _oldest_version(episode: pa.Table) -> int:
    return int(pc.min(episode.column("policy_version")).as_py())
