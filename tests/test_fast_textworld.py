"""TextWorld caches: identical transcripts with and without them; textworld safe to reset in threads."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("alfworld")

from envs.alfworld import fast_textworld, games  # noqa: E402
from envs.alfworld.env import load_textworld  # noqa: E402
from envs.alfworld.oracle import Goal, WorldState, next_command  # noqa: E402


def _transcript(game: dict, traj: dict, seed: int) -> list:
    """Two episodes of oracle play with random deviations: everything the engine says, step by step."""
    rng, out = np.random.default_rng(seed), []
    tw = load_textworld(game)
    for _ in range(2):
        state = tw.reset()
        for _ in range(12):
            facts = sorted(str(f) for f in state["facts"])
            out.append((state.feedback, tuple(state["admissible_commands"]), bool(state["won"]), tuple(facts)))
            if state["won"]:
                break
            commands = state["admissible_commands"]
            command = (
                commands[int(rng.integers(len(commands)))]
                if rng.random() < 0.3
                else next_command(WorldState.from_facts(state["facts"]), Goal.from_traj(traj))
            )
            state, _, _ = tw.step(command if rng.random() > 0.15 else "fly to the moon")
    return out


def test_transcripts_identical_with_and_without_caches():
    cases = [games.generate_game("unseen", s, t) for s, t in ((0, "pick_two_obj_and_place"), (1, None), (2, None))]
    fast_textworld.uninstall()
    stock = [_transcript(c["game"], c["traj_data"], i) for i, c in enumerate(cases)]
    fast_textworld.install()
    try:
        cached = [_transcript(c["game"], c["traj_data"], i) for i, c in enumerate(cases)]
        again = [_transcript(c["game"], c["traj_data"], i) for i, c in enumerate(cases)]  # served from the caches
    finally:
        fast_textworld.uninstall()
    assert stock == cached == again
    assert any("Nothing happens." in step[0] for t in stock for step in t)  # the deviations were exercised


def test_install_is_idempotent_and_uninstall_restores():
    import fast_downward

    before = fast_downward.pddl2sas
    fast_textworld.install()
    fast_textworld.install()
    assert fast_textworld.installed() and fast_downward.pddl2sas is not before
    fast_textworld.uninstall()
    assert not fast_textworld.installed() and fast_downward.pddl2sas is before


def test_concurrent_resets_in_threads(alfworld_cache):
    """textworld's tatsu parsers and fast-downward's translator are not thread-safe on their own."""
    from concurrent.futures import ThreadPoolExecutor

    from envs.alfworld.env import EVAL_SEED_BASE, AlfworldEnv

    envs = [AlfworldEnv() for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        for round_ in range(2):
            futures = [pool.submit(e.reset, seed=EVAL_SEED_BASE + (i + round_) % 6) for i, e in enumerate(envs)]
            results = [f.result() for f in futures]  # raises if any reset failed
            assert all(info["admissible_commands"] for _, info in results)
