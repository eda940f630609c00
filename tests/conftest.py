"""Shared fixtures: a tiny random VLM checkpoint and a private Ray cluster (never `ray stop`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process with pytest's own status once everything is reported. A full-suite run (2026-12-01, 952
    passed) printed its summary and then died of SIGSEGV in interpreter teardown, which make reported as
    error 139: the destructors of what the in-process vLLM engines and Ray clients leave behind are not the
    tests' result. The summary, the cache and every plugin's own unconfigure have run by now."""
    if EXIT_STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STATUS[-1])


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A randomly initialised embedded VLM in HF format (tokenizer trained on the task strings)."""
    from contracts.config import TinyVLMShape
    from learner.sft import tokenizer_corpus
    from models.policy import ValueHead, save_policy
    from models.tiny_llava import build_processor, build_tiny_llava
    from models.tokenizer import build_tokenizer

    shape = TinyVLMShape(text_layers=2)
    tokenizer = build_tokenizer(tokenizer_corpus("numberline"), shape.vocab_size)
    path = tmp_path_factory.mktemp("tiny-vlm")
    save_policy(
        path, build_tiny_llava(tokenizer, shape), build_processor(tokenizer, shape), ValueHead(shape.text_hidden)
    )
    return str(path)


@pytest.fixture(scope="module")
def ray_cluster():
    """A private local Ray cluster with its own temp dir, shut down after the module."""
    import ray

    from cluster.launch import init_ray, shutdown_ray

    init_ray(4, temp_prefix="rl4vlm-test-ray-", private=True)
    yield ray
    shutdown_ray(remove_temp_dir=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op torch thread per test module: faster on a busy 2-core host and gentler to whatever else
    runs there (vLLM's CPU worker replaces set_num_threads with a no-op, so restore the count afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store():
    """An in-process replay store large enough never to refuse a chunk."""
    from actors.replay_store import ReplayStore
    from contracts.config import ReplayConfig

    return ReplayStore(ReplayConfig(capacity_steps=10_000))


@pytest.fixture
def assert_same_seed_same_rollout():
    """Check that an env replays identically from one seed: observations, infos, rewards and end flags,
    across auto-resets. Call it as `assert_same_seed_same_rollout(EnvClass, seed, actions)`."""
    import copy

    import numpy as np

    def rollout(env_cls, seed, actions):
        env = env_cls()
        obs, info = env.reset(seed=seed)
        out = [(obs, copy.deepcopy(info), 0.0, False, False)]
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            out.append((obs, copy.deepcopy(info), r, term, trunc))
            if term or trunc:
                obs, info = env.reset()
                out.append((obs, copy.deepcopy(info), 0.0, False, False))
        return out

    def check(env_cls, seed, actions):
        a, b = rollout(env_cls, seed, actions), rollout(env_cls, seed, actions)
        for (obs_a, *rest_a), (obs_b, *rest_b) in zip(a, b, strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
            assert rest_a == rest_b

    return check


@pytest.fixture(scope="session")
def alfworld_cache(tmp_path_factory) -> str:
    """A private cache for generated ALFWorld games (shared by the session's tests; never ~/.cache)."""
    path = str(tmp_path_factory.mktemp("alfworld-cache"))
    before = os.environ.get("RL4VLM_ALFWORLD_CACHE")
    os.environ["RL4VLM_ALFWORLD_CACHE"] = path
    yield path
    if before is None:
        os.environ.pop("RL4VLM_ALFWORLD_CACHE", None)
    else:
        os.environ["RL4VLM_ALFWORLD_CACHE"] = before
