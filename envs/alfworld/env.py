"""ALFWorld as a gymnasium env over alfworld's real TextWorld/PDDL engine (issue 4; spec §3, §4, §8.6).

## Description
Household tasks of six types (pick & place, look at in light, clean/heat/cool then place, pick two) in real
ALFRED floor plans, played through textworld's PddlEnv with alfworld's AlfredDemangler (the same engine and
display names as alfworld's AlfredTWEnv). Games come from envs/alfworld/catalogue.py: the official json_2.1.1
files when ALFWORLD_DATA is set, otherwise generated games checked solvable by the oracle.

## Splits and seeds
`reset(seed)` with EVAL_SEED_BASE <= seed < 2 * EVAL_SEED_BASE (10**12 is the config's eval_seed) plays unseen
game (seed - EVAL_SEED_BASE): disjoint floor plans (valid_unseen with official data). Any other seed (training
below 1e12, SFT demonstrations from 2e12, tokenizer corpus from 3e12) plays a train game chosen by the seed.
Evaluating seeds EVAL_SEED_BASE + 0..119 plays each generated unseen game once.

## Action Space
Text: a command string. The paper's parser (envs/parsing.py: parse_command) maps model text to an
admissible command or passes the raw text on (the engine answers "Nothing happens.").

## Observation Space
Box(0, 255, (300, 300, 3), uint8): a top-down floor-plan image (envs/alfworld/render.py; THOR frames cannot
be produced offline). The text (feedback, task, admissible commands) is in `info` and goes into the prompt.

## Rewards
r = 50 * won + goal_progress - 1[command not admissible] each step (spec §8.6), where goal_progress is the
fraction of the task's goal conditions met now (envs/alfworld/oracle.py: goal_progress).

## Episode End
Terminated when won; truncated after max_steps (50) steps.

## Information
"feedback", "task", "admissible_commands", "won", "goal_progress", "task_type", "gamefile", "legal", and
"expert_command" (the oracle's next command: privileged, for SFT data and tests, never in the prompt).
"""

from __future__ import annotations

import functools
import json
import pathlib

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from contracts.seeds import EVAL_SEED_BASE
from envs.alfworld import fast_textworld
from envs.alfworld.catalogue import GameCatalogue
from envs.alfworld.oracle import Goal, WorldState, goal_progress, next_command
from envs.alfworld.render import location_xy, render_map

MAX_STEPS = 50


def load_textworld(game: dict | str, facts: bool = True):
    """A reset-ready textworld PddlEnv for a game dict or game.tw-pddl path, with ALFWorld display names."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts)
    env = AlfredDemangler(PddlEnv(infos), shuffle=False)
    env.load(game)
    return env


@functools.lru_cache(maxsize=8)
def _catalogue(split: str, data_root: str) -> GameCatalogue:
    return GameCatalogue(split, data_root or None)


@functools.lru_cache(maxsize=256)
def _grid(scene: int) -> np.ndarray:
    from envs.alfworld.games import alfworld_paths

    return np.load(alfworld_paths()["layouts"] / f"FloorPlan{scene}-layout.npy")


class AlfworldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self, render_mode: str | None = "rgb_array", data_root: str = "", max_steps: int = MAX_STEPS, cache: bool = True
    ):
        self.render_mode = render_mode
        self.data_root, self.max_steps = data_root, max_steps
        fast_textworld.thread_safe_parsers()
        if cache:
            fast_textworld.install()
        self.action_space = spaces.Text(max_length=256)
        self.observation_space = spaces.Box(0, 255, (300, 300, 3), dtype=np.uint8)
        self._tw = None
        self._state = None
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        seed = int(self.np_random.integers(EVAL_SEED_BASE)) if seed is None else seed
        if EVAL_SEED_BASE <= seed < 2 * EVAL_SEED_BASE:
            split, index = "unseen", seed - EVAL_SEED_BASE
        else:
            split, index = "train", int(np.random.default_rng(seed).integers(1 << 30))
        self.gamefile = _catalogue(split, self.data_root).game_file(index)
        folder = pathlib.Path(self.gamefile).parent
        self.traj = json.loads((folder / "traj_data.json").read_text())
        self.goal = Goal.from_traj(self.traj)
        self._tw = load_textworld(self.gamefile)
        self._state = self._tw.reset()
        self.task = self._state.feedback.split("Your task is to: ", 1)[-1].strip().rstrip(".")  # the prompt adds "."
        self._positions()
        self.steps = 0
        return self._obs(), self._info(legal=True)

    def step(self, action: str):
        if self._tw is None:
            raise RuntimeError("call reset() before step()")
        command = str(action).strip()
        legal = command in self._state["admissible_commands"]
        self._state, _, _ = self._tw.step(command)
        self.steps += 1
        won = bool(self._state["won"])
        progress = goal_progress(self._world(), self.goal)
        reward = 50.0 * won + progress - (0.0 if legal else 1.0)
        truncated = not won and self.steps >= self.max_steps
        return self._obs(), reward, won, truncated, self._info(legal)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _world(self) -> WorldState:
        return WorldState.from_facts(self._state["facts"])

    def _positions(self) -> None:
        """Display name -> (x, z) metres for receptacles and locations, from the raw PDDL location ids."""
        infos = self._state["_entity_infos"]
        self._xy = {}
        for fact in self._state["_facts"]:
            if fact.name == "receptacleatlocation":
                r, loc = (a.name for a in fact.arguments)
                self._xy[infos[r].name] = self._xy[infos[loc].name] = location_xy(loc)
        for fact in self._state["_facts"]:
            if fact.name == "atlocation":
                loc = fact.arguments[1].name
                self._xy[infos[loc].name] = location_xy(loc)
        scene = self.traj.get("scene", {}).get("scene_num")
        self._scene_grid = _grid(int(scene)) if scene is not None else np.zeros((0, 2))

    def render(self) -> np.ndarray:
        world = self._world()
        receptacles = {r: self._xy[r] for r in world.recep_loc if r in self._xy}
        agent = self._xy.get(world.agent_at)
        if agent is None:  # the start location hosts no receptacle: decode it from the raw facts
            for fact in self._state["_facts"]:
                if fact.name == "atlocation":
                    agent = location_xy(fact.arguments[1].name)
        return render_map(self._scene_grid, receptacles, agent, world)

    def _obs(self) -> np.ndarray:
        return self.render()

    def _info(self, legal: bool) -> dict:
        world = self._world()
        return {
            "feedback": self._state.feedback.strip(),
            "task": self.task,
            "admissible_commands": list(self._state["admissible_commands"]),
            "won": bool(self._state["won"]),
            "goal_progress": goal_progress(world, self.goal),
            "task_type": self.goal.task_type,
            "gamefile": self.gamefile,
            "legal": legal,
            "held": world.held or "",
            "at_receptacle": any(loc == world.agent_at for loc in world.recep_loc.values()),
            "expert_command": "look" if self._state["won"] else next_command(world, self.goal),
        }
