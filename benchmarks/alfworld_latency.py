"""Env reset and step latency of ALFWorld games, stock TextWorld against the caches (issue 4).

    python -m benchmarks.alfworld_latency [--games 6] [--repeats 3]

Plays the same generated unseen games (one per task type) with the oracle, first on stock textworld, then
with envs/alfworld/fast_textworld installed, in one process, and prints min / median / max seconds and the
ratio. "reset" is load + reset of a game (what an episode start costs); "step" is one command.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from envs.alfworld import fast_textworld
from envs.alfworld.catalogue import GameCatalogue
from envs.alfworld.env import load_textworld
from envs.alfworld.oracle import Goal, WorldState, next_command


def measure(files: list[str], repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"reset": [], "step": []}
    for path in files:
        traj = json.loads((pathlib.Path(path).parent / "traj_data.json").read_text())
        for _ in range(repeats):
            t0 = time.perf_counter()
            tw = load_textworld(path)
            state = tw.reset()
            out["reset"].append(time.perf_counter() - t0)
            for _ in range(12):
                if state["won"]:
                    break
                command = next_command(WorldState.from_facts(state["facts"]), Goal.from_traj(traj))
                t0 = time.perf_counter()
                state, _, _ = tw.step(command)
                out["step"].append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    catalogue = GameCatalogue("unseen")
    files = [catalogue.game_file(i) for i in range(args.games)]  # generated (and validated) before timing
    fast_textworld.uninstall()
    stock = measure(files, args.repeats)
    fast_textworld.install()
    measure(files, 1)  # fill the caches: a process pays the first load of each game once
    cached = measure(files, args.repeats)
    print(f"{args.games} unseen games x {args.repeats} episodes of oracle play, seconds (min / median / max)")
    print("| op | stock textworld | with caches | speed-up (median) |\n|---|---|---|---|")
    for op in ("reset", "step"):
        a, b = stock[op], cached[op]
        fmt = lambda xs: f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"  # noqa: E731
        print(f"| {op} | {fmt(a)} | {fmt(b)} | {statistics.median(a) / statistics.median(b):.1f}x |")


if __name__ == "__main__":
    main()
