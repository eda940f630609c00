"""Which game file an ALFWorld episode plays: official data when present, else generated and validated games.

- `ALFWORLD_DATA` set (an official `alfworld-download`): the json_2.1.1 games of the split, collected by
  alfworld's own `AlfredTWEnv.collect_game_files` (its rules: skip movable/Sliced, keep the configured task
  types, require game.tw-pddl with `solvable: true`), sorted for determinism.
  Splits: train -> json_2.1.1/train, seen -> valid_seen, unseen -> valid_unseen.
- otherwise generated games (envs/alfworld/games.py): game i of a split is generated on first use, played by
  the oracle, and written to the cache with `solvable` and the oracle's walkthrough; an unsolvable one is
  marked so and skipped. Task types cycle with i (i % 6), so any 6 consecutive indices hold one of each.
  The cache lives in $RL4VLM_ALFWORLD_CACHE (default ~/.cache/rl4vlm/alfworld/<GENERATOR_VERSION>); writes are
  atomic, and two processes generating the same game write identical bytes.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading

from envs.alfworld import games
from envs.alfworld.oracle import Goal, WorldState, next_command

log = logging.getLogger(__name__)
GENERATOR_VERSION = "v1"
SPLIT_SIZES = {"train": 600, "unseen": 120}  # generated games per split (unseen: 20 of each task type)
OFFICIAL_SPLITS = {"train": "train", "seen": "valid_seen", "unseen": "valid_unseen"}
ORACLE_STEPS = 50


def cache_root() -> pathlib.Path:
    default = pathlib.Path("~/.cache/rl4vlm/alfworld").expanduser() / GENERATOR_VERSION
    return pathlib.Path(os.environ.get("RL4VLM_ALFWORLD_CACHE", str(default))).expanduser()


def official_game_files(data_root: str, split: str, task_types=tuple(games.TASK_TYPES)) -> list[str]:
    """alfworld's own collection rules over an official download (or a fixture in its layout)."""
    import contextlib
    import io

    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    sub = OFFICIAL_SPLITS[split]
    path = str(pathlib.Path(data_root) / "json_2.1.1" / sub)
    config = {
        "dataset": {
            **{"data_path": path, "eval_id_data_path": path, "eval_ood_data_path": path},
            **{"num_train_games": -1, "num_eval_games": -1},
        },
        "env": {"task_types": list(task_types), "goal_desc_human_anns_prob": 0.0},
    }
    mode = {"train": "train", "seen": "eval_in_distribution", "unseen": "eval_out_of_distribution"}[split]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, banners
        files = AlfredTWEnv(config, mode).game_files
    if not files:
        raise FileNotFoundError(f"no solvable games under {path} (ALFWORLD_DATA={data_root!r})")
    return sorted(files)


class GameCatalogue:
    """Game files by index for one split."""

    def __init__(self, split: str, data_root: str | None = None):
        self.split = split
        if data_root is None:  # alfworld's import sets ALFWORLD_DATA to a default: only a real download counts
            data_root = os.environ.get("ALFWORLD_DATA", "")
            data_root = data_root if (pathlib.Path(data_root) / "json_2.1.1").is_dir() else ""
        self.data_root = data_root
        self._official = official_game_files(self.data_root, split) if self.data_root else None
        self._lock = threading.Lock()

    @property
    def official(self) -> bool:
        return self._official is not None

    def __len__(self) -> int:
        return len(self._official) if self._official is not None else SPLIT_SIZES[self.split]

    def game_file(self, index: int) -> str:
        """Game `index` (mod the split size); generated games skip forward past unsolvable ones."""
        if self._official is not None:
            return self._official[index % len(self._official)]
        for k in range(len(self)):
            path = self._generated(index + 6 * k)  # + 6k keeps the task type
            if path:
                return path
        raise RuntimeError(f"no solvable generated game near index {index} of split {self.split!r}")

    def _generated(self, index: int) -> str | None:
        index %= len(self)
        ttype = games.TASK_TYPES[1 + index % 6]
        marker = cache_root() / "index" / self.split / f"{index}.json"
        if marker.exists():
            entry = json.loads(marker.read_text())
            return entry["game_file"] if entry["solvable"] else None
        with self._lock:
            files = games.generate_game(self.split, index, ttype)
            walkthrough = play_oracle(files["game"], files["traj_data"])
            path = games.write_game(cache_root(), self.split, files, walkthrough is not None, walkthrough or [])
            _atomic_write(marker, json.dumps({"game_file": str(path), "solvable": walkthrough is not None}))
        if walkthrough is None:
            log.warning("generated game %s/%d is not solvable by the oracle; skipped", self.split, index)
            return None
        return str(path)


def play_oracle(game: dict, traj: dict, max_steps: int = ORACLE_STEPS) -> list[str] | None:
    """The oracle's winning command list for `game`, or None if it does not win within `max_steps`."""
    from envs.alfworld.env import load_textworld

    try:
        tw = load_textworld(game)
    except KeyError:  # fast-downward pruned an unreachable goal ("KeyError: 'val1'"): unsolvable
        return None
    state, goal, commands = tw.reset(), Goal.from_traj(traj), []
    for _ in range(max_steps):
        if state["won"]:
            return commands
        command = next_command(WorldState.from_facts(state["facts"]), goal)
        if command not in state["admissible_commands"]:
            log.warning("oracle command %r not admissible", command)
            return None
        commands.append(command)
        state, _, _ = tw.step(command)
    return commands if state["won"] else None


def _atomic_write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
