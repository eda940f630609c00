"""actors/replay_store.py in-process (no Ray): whole episodes, back-pressure, staleness, sharding, spill."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.replay_store import ReplayStore
from contracts.config import ReplayConfig
from contracts.schema import STEP_SCHEMA, StepRecord, encode_png, to_record_batch

IMG = encode_png(np.full((2, 2, 3), 7, dtype=np.uint8))
BASE = dict(
    actor_id=0,
    prompt_ids=[1, 2, 3],
    image_png=IMG,
    response_ids=[4, 5],
    behaviour_logprobs=[-0.5, -0.25],
    response_text="x",
    action=1,
    action_valid=True,
    parse_status="ok",
    reward=0.0,
    truncated=False,
)
STAT_KEYS = {
    "replay/added_steps",
    "replay/taken_steps",
    "replay/dropped_stale_steps",
    "replay/evicted_steps",
    "replay/depth_steps",
    "replay/depth_episodes",
}


def episodes(lengths, versions=0, prefix="e") -> pa.RecordBatch:
    """One record batch with an episode per length; `versions` is an int, a per-episode int or per-step lists."""
    if isinstance(versions, int):
        versions = [versions] * len(lengths)
    steps = []
    for k, n in enumerate(lengths):
        v = versions[k]
        per_step = v if isinstance(v, list) else [v] * n
        for i in range(n):
            steps.append(
                StepRecord(
                    **BASE,
                    episode_id=f"{prefix}{k}",
                    step=i,
                    env_index=k,
                    seed=1000 + k,
                    policy_version=per_step[i],
                    terminated=i == n - 1,
                )
            )
    return to_record_batch(steps)


def store(**kw) -> ReplayStore:
    return ReplayStore(ReplayConfig(**{"capacity_steps": 100, "max_policy_lag": 1, **kw}))


def assert_whole_contiguous(table: pa.Table, lengths_by_id: dict[str, int]):
    ids, steps = table.column("episode_id").to_pylist(), table.column("step").to_pylist()
    counts = collections.Counter(ids)
    for eid, n in counts.items():
        assert n == lengths_by_id[eid], f"episode {eid} split: {n} of {lengths_by_id[eid]} steps"
        rows = [i for i, x in enumerate(ids) if x == eid]
        assert rows == list(range(rows[0], rows[0] + n)), f"episode {eid} not contiguous"
        assert [steps[i] for i in rows] == list(range(n))


def test_add_take_whole_episodes_oldest_first():
    s = store()
    s.add(episodes([3, 5], prefix="a"))
    s.add(episodes([4, 2], prefix="b"))
    assert s.num_steps == 14
    (out,) = s.take(min_steps=6, learner_version=0)
    assert out.schema == STEP_SCHEMA
    # a0 (3) is not enough, a1 (5) brings it to 8: whole episodes only, never cut at 6
    assert out.num_rows == 8
    assert set(out.column("episode_id").to_pylist()) == {"a0", "a1"}
    assert_whole_contiguous(out, {"a0": 3, "a1": 5})
    assert s.num_steps == 6 and len(s.episodes) == 2
    (rest,) = s.take(min_steps=6, learner_version=0)
    assert_whole_contiguous(rest, {"b0": 4, "b1": 2})
    assert s.num_steps == 0


def test_take_returns_none_when_not_enough():
    s = store()
    assert s.take(min_steps=1, learner_version=0) is None
    s.add(episodes([3, 2]))
    assert s.take(min_steps=6, learner_version=0) is None
    assert s.num_steps == 5 and s.counters["taken_steps"] == 0  # nothing lost
    assert s.take(min_steps=5, learner_version=0)[0].num_rows == 5


def test_full_store_evicts_the_oldest_episodes():
    s = store(capacity_steps=10)
    s.add(episodes([4, 4], prefix="a"))
    s.add(episodes([3], prefix="b"))  # 8 + 3 > 10: the oldest episode (a-0, 4 steps) goes
    assert s.num_steps == 7 and s.counters["evicted_steps"] == 4 and s.counters["added_steps"] == 11
    s.add(episodes([2], prefix="c"))  # 7 + 2 fits
    assert s.counters["evicted_steps"] == 4
    s.add(episodes([12], prefix="d"))  # larger than the store: everything older goes, it stays
    assert s.num_steps == 12 and len(s.episodes) == 1
    assert s.take(min_steps=4, learner_version=0)[0].num_rows == 12


def test_export_restore_round_trip():
    s = store()
    s.add(episodes([4, 2, 3], prefix="a"))
    copy = store()
    copy.restore(s.export(), {"added_steps": 9})
    assert copy.num_steps == 9 and len(copy.episodes) == 3 and copy.counters["added_steps"] == 9
    assert [e.num_rows for e in copy.episodes] == [e.num_rows for e in s.episodes]


def test_stale_episodes_dropped_and_counted():
    s = store(max_policy_lag=1)
    s.add(episodes([3], versions=2, prefix="old"))  # 2 < 4 - 1: stale
    s.add(episodes([4], versions=[[2, 3, 3, 4]], prefix="mix"))  # oldest step v2: stale although it ends at v4
    s.add(episodes([2], versions=3, prefix="lag1"))  # exactly max_policy_lag behind: kept
    s.add(episodes([5], versions=4, prefix="new"))
    (out,) = s.take(min_steps=7, learner_version=4)
    assert s.counters["dropped_stale_steps"] == 7
    assert set(out.column("episode_id").to_pylist()) == {"lag10", "new0"}
    assert min(out.column("policy_version").to_pylist()) == 3
    assert s.num_steps == 0 and s.stats()["replay/taken_steps"] == 7.0


def test_stale_drop_leaves_too_few_returns_none():
    s = store(max_policy_lag=0)
    s.add(episodes([4], versions=1, prefix="old"))
    s.add(episodes([2], versions=2, prefix="new"))
    assert s.take(min_steps=4, learner_version=2) is None
    assert s.counters["dropped_stale_steps"] == 4 and s.num_steps == 2


def test_stale_episode_behind_fresh_one_is_dropped():
    s = store(max_policy_lag=1)
    s.add(episodes([2], versions=5, prefix="fresh"))  # another actor (or a shorter episode) shipped first
    s.add(episodes([3], versions=[[1, 4, 5]], prefix="stale"))  # started 4 versions behind the learner
    out = s.take(min_steps=5, learner_version=5)
    taken = [] if out is None else out[0].column("policy_version").to_pylist()
    assert 1 not in taken, "a step 4 versions behind was handed to the learner"
    assert out is None and s.counters["dropped_stale_steps"] == 3  # only 2 fresh steps are left


def test_two_shards_balanced_never_split():
    s = store()
    s.add(episodes([5, 4, 3, 2]))
    shards = s.take(min_steps=14, learner_version=0, num_shards=2)
    assert len(shards) == 2
    assert sorted(t.num_rows for t in shards) == [7, 7]
    lengths = {"e0": 5, "e1": 4, "e2": 3, "e3": 2}
    seen = []
    for t in shards:
        assert_whole_contiguous(t, lengths)
        seen += set(t.column("episode_id").to_pylist())
    assert sorted(seen) == sorted(lengths)  # every episode in exactly one shard


def test_every_shard_holds_its_share_of_the_steps():
    """Two learner ranks train whole optimizer steps of the smallest shard: 8 steps over 2 ranks gives each at
    least 4 (filling by count alone would stop at 5 + 3), and too few to give that takes nothing."""
    s = store()
    s.add(episodes([5, 1, 1, 1, 1, 1, 5]))
    shards = s.take(min_steps=8, learner_version=0, num_shards=2)
    assert sorted(t.num_rows for t in shards) == [4, 5] and s.num_steps == 6
    short = store()
    short.add(episodes([7, 1]))
    assert short.take(min_steps=8, learner_version=0, num_shards=2) is None and short.num_steps == 8


def test_spill_dir_writes_readable_parquet(tmp_path):
    spill = tmp_path / "spill"
    s = store(spill_dir=str(spill), capacity_steps=5)
    b1, b2 = episodes([2, 3], prefix="a"), episodes([4], prefix="b")
    s.add(b1)
    s.add(b2)  # evicts b1's episodes from the store; the archive keeps every chunk
    files = sorted(spill.glob("*.parquet"))
    assert len(files) == 2
    for f, b in zip(files, (b1, b2)):
        t = pq.read_table(f)
        assert t.num_rows == b.num_rows
        assert t.to_pylist() == pa.Table.from_batches([b]).to_pylist()


def test_stats_keys_and_values():
    s = store(capacity_steps=4)
    s.add(episodes([3]))
    s.add(episodes([2], prefix="r"))
    st = s.stats()
    assert set(st) == STAT_KEYS
    assert all(isinstance(v, float) for v in st.values())
    assert st["replay/added_steps"] == 5.0 and st["replay/evicted_steps"] == 3.0
    assert st["replay/depth_steps"] == 2.0 and st["replay/depth_episodes"] == 1.0


def test_every_shard_gets_an_episode():
    s = store(capacity_steps=100)
    s.add(episodes([5], prefix="a"))
    assert s.take(1, learner_version=0, num_shards=2) is None  # one episode cannot feed two ranks
    s.add(episodes([2], prefix="b"))
    shards = s.take(1, learner_version=0, num_shards=2)
    assert sorted(t.num_rows for t in shards) == [2, 5]


def test_floor_version_drops_older_episodes_whatever_the_lag():
    s = store(max_policy_lag=5)
    s.add(episodes([3], versions=6, prefix="lost"))  # made by a policy of a learner group that died
    s.add(episodes([2], versions=7, prefix="restored"))
    (out,) = s.take(min_steps=2, learner_version=7, floor_version=7)
    assert set(out.column("episode_id").to_pylist()) == {"restored0"}
    assert s.counters["dropped_stale_steps"] == 3


def test_take_shards_returns_the_episode_ids_then_one_table_per_shard():
    s = store()
    assert s.take_shards(1, learner_version=0, num_shards=2) == ([], None, None)
    s.add(episodes([5, 4, 3, 2]))
    ids, *shards = s.take_shards(14, learner_version=0, num_shards=2)
    assert sorted(ids) == ["e0", "e1", "e2", "e3"] and sorted(t.num_rows for t in shards) == [7, 7]
    assert sorted(i for t in shards for i in set(t.column("episode_id").to_pylist())) == sorted(ids)
