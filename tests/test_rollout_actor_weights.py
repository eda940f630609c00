"""RolloutActor.load_weights in-process: checksum, in-place load, version tags on later samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.replay_store import ReplayStore
from actors.rollout_actor import RolloutActor
from cluster.config import EnvConfig, RolloutConfig
from cluster.schema import StepRecord, WeightsPayload, from_table
from learner.policy_model import vllm_key

ENVS = 3


def make_actor(model_path, store=None) -> RolloutActor:
    cfg = RolloutConfig(backend="hf", max_new_tokens=24, steps_per_call=3)
    return RolloutActor(0, EnvConfig(envs_per_actor=ENVS), cfg, model_path, store)


def drain(store: ReplayStore) -> list[StepRecord]:
    if store.num_steps == 0:
        return []
    return from_table(store.take(store.num_steps, learner_version=0)[0])


def in_progress(actor: RolloutActor) -> list[StepRecord]:
    return [s for slot in actor.slots for s in slot.steps]


def perturbed(actor, version: int) -> tuple[WeightsPayload, dict[str, np.ndarray]]:
    """The engine's own weights plus noise, as a payload with vLLM names; also returns them by HF name."""
    gen = torch.Generator().manual_seed(version)
    hf = {
        n: (p.detach() + 0.01 * torch.randn(p.shape, generator=gen)).numpy().astype(np.float32)
        for n, p in actor.engine.vlm.named_parameters()
    }
    return WeightsPayload.build(version, [(vllm_key(n), a) for n, a in hf.items()]), hf


def weights(actor) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in actor.engine.vlm.named_parameters()}


def test_load_weights_sets_version_and_tags_later_samples(tiny_model_path, store):
    actor = make_actor(tiny_model_path, store)
    actor.collect(steps_per_env=2)
    drain(store)
    open_eps = {s.index: (f"0-{s.index}-{s.episodes}", len(s.steps)) for s in actor.slots}
    payload, expected = perturbed(actor, version=7)
    out = actor.load_weights(payload)
    assert actor.version == actor.policy_version() == 7 and out["rollout/policy_version"] == 7.0
    loaded = weights(actor)
    assert loaded.keys() == expected.keys()
    for name, arr in expected.items():
        np.testing.assert_array_equal(loaded[name], arr)
    m = actor.collect(steps_per_env=10)
    assert m["rollout/policy_version"] == 7
    records = drain(store) + in_progress(actor)
    assert len(records) == ENVS * 10 + sum(n for _, n in open_eps.values())
    for r in records:  # steps taken before the load keep version 0, everything after carries 7
        eid, n_before = open_eps[r.env_index]
        assert r.policy_version == (0 if r.episode_id == eid and r.step < n_before else 7), (r.episode_id, r.step)


def test_load_weights_rejects_tampered_payload(tiny_model_path):
    actor = make_actor(tiny_model_path)
    before = weights(actor)
    good, _ = perturbed(actor, version=3)
    corrupted = WeightsPayload(3, good.names, [a.copy() for a in good.arrays], good.checksum)
    corrupted.arrays[-1].flat[0] += 1.0
    wrong_sum = WeightsPayload(4, good.names, good.arrays, "0" * 32)
    for payload in (corrupted, wrong_sum):
        with pytest.raises(ValueError, match="checksum"):
            actor.load_weights(payload)
        assert actor.version == 0
    after = weights(actor)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_load_weights_with_unknown_name_changes_nothing(tiny_model_path):
    actor = make_actor(tiny_model_path)
    before = weights(actor)
    good, _ = perturbed(actor, version=5)
    names, arrays = [*good.names, "bogus.weight"], [*good.arrays, np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="unexpected"):
        actor.load_weights(WeightsPayload.build(5, list(zip(names, arrays))))
    assert actor.version == 0
    after = weights(actor)
    assert all(np.array_equal(before[n], after[n]) for n in before)
