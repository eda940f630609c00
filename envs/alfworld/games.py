"""ALFWorld text games generated offline from what the alfworld package ships (issue 4).

The official games (json_2.1.1) are a download this machine cannot reach. The alfworld wheel does ship the
PDDL domain, the text grammar, every floor plan's receptacles with their THOR ids and teleport poses
(`gen/layouts/FloorPlanN-openable.json`), each room's object types (`-objects.json`), its reachable grid
(`-layout.npy`), the goal library and the affordance tables. A game here is those real pieces plus a random
placement of the room's objects, written in the official file layout so alfworld's own loader reads it:

    <root>/json_2.1.1/<split>/<task_type>-<Obj>-None-<Recep>-<scene>/trial_gen_<seed>/
        game.tw-pddl      {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        traj_data.json    {"task_id", "task_type", "pddl_params", "scene", "turk_annotations"}
        initial_state.pddl

Splits use ALFRED's own scene numbers: "train" = constants.TRAIN_SCENE_NUMBERS (7-30 of each room type),
"unseen" = TEST_SCENE_NUMBERS (1-6): disjoint floor plans. Games are deterministic in (split, seed); the
caller checks solvability with the oracle (envs/alfworld/oracle.py) before a game is used.
Not the official benchmark: object placement is random, so scores are not comparable with published ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
import zlib
from dataclasses import dataclass

import numpy as np

TASK_TYPES = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}
TASK_TYPE_IDS = {name: i for i, name in TASK_TYPES.items()}
# The appliance each state-change task needs, and the affordance table its object must be in.
APPLIANCE = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}
NOT_PARENT = {"SinkBasin", "Microwave", "Fridge", "GarbageCan"}  # never a place-target (as ALFWorld's data)
LAMPS = ("DeskLamp", "FloorLamp")
LAMP_HOSTS = ("Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "DiningTable", "TVStand", "Sofa", "ArmChair")
OPENABLE = {"Fridge", "Cabinet", "Microwave", "Drawer", "Safe", "Box"}


def alfworld_paths() -> dict[str, pathlib.Path]:
    import alfworld

    root = pathlib.Path(alfworld.__file__).parent
    return {
        "domain": root / "data" / "alfred.pddl",
        "grammar": root / "data" / "alfred.twl2",
        "layouts": root / "gen" / "layouts",
    }


def constants():
    from alfworld.gen import constants as c

    return c


def split_scenes(split: str) -> list[int]:
    c = constants()
    scenes = {"train": c.TRAIN_SCENE_NUMBERS, "unseen": c.TEST_SCENE_NUMBERS}[split]
    layouts = alfworld_paths()["layouts"]
    return [s for s in scenes if (layouts / f"FloorPlan{s}-openable.json").exists()]


def escape(name: str) -> str:
    """ALFRED's PDDL id escaping (fast-downward would choke on '|', '+', '.', ',', '-')."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(a, b)
    return name


def unescape(name: str) -> str:
    for a, b in (("_minus_", "-"), ("_bar_", "|"), ("_plus_", "+"), ("_dot_", "."), ("_comma_", ",")):
        name = name.replace(a, b)
    return name


def location_id(x: float, z: float, rot: float, horizon: float) -> str:
    """THOR pose -> ALFRED location id: grid cells of 0.25 m, rotation in quarter turns."""
    return f"loc|{int(round(x / 0.25))}|{int(round(z / 0.25))}|{int(round(rot / 90)) % 4}|{int(round(horizon))}"


def receptacle_type(thor_id: str) -> str:
    parts = thor_id.split("|")
    return parts[-1] if len(parts) == 5 else parts[0]  # Sink|x|y|z|SinkBasin -> SinkBasin


@dataclass
class Room:
    scene: int
    receptacles: dict[str, tuple[str, str]]  # THOR id -> (type, location id)
    object_types: list[str]
    grid: np.ndarray  # (N, 2) reachable x, z


def load_room(scene: int, rng: np.random.Generator) -> Room:
    c, layouts = constants(), alfworld_paths()["layouts"]
    poses = json.loads((layouts / f"FloorPlan{scene}-openable.json").read_text())
    present = json.loads((layouts / f"FloorPlan{scene}-objects.json").read_text())
    grid = np.load(layouts / f"FloorPlan{scene}-layout.npy")
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    receptacles = {}
    for rid, (x, z, rot, hor) in sorted(poses.items()):
        rtype = receptacle_type(rid)
        if rtype in static:
            receptacles[rid] = (rtype, location_id(x, z, rot, hor))
    # Receptacle types the room has but the pose file omits (stove burners, toasters, ...) get a synthetic id
    # and a random reachable grid point, as ALFWorld's generator would have to.
    have = {t for t, _ in receptacles.values()}
    for rtype in sorted(set(present) & static - have):
        for k in range(4 if rtype == "StoveBurner" else 1):
            x, z = grid[int(rng.integers(len(grid)))]
            rid = f"{rtype}|{x:+.2f}|+0.90|{z:+.2f}|{k}"
            receptacles[rid] = (rtype, location_id(x, z, 0, 30))
    placeable = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    objects = sorted(t for t in set(present) if (t in placeable or t in LAMPS) and "Sliced" not in t)
    return Room(scene, receptacles, objects, grid)


@dataclass
class Task:
    task_type: str
    obj: str
    parent: str = ""
    toggle: str = ""


def feasible_tasks(room: Room, task_type: str) -> list[Task]:
    """Every (object, parent/lamp) combination the room supports for `task_type`."""
    c = constants()
    rtypes = {t for t, _ in room.receptacles.values()}
    holders = {o for o in room.object_types if any(o in c.VAL_RECEPTACLE_OBJECTS.get(r, ()) for r in rtypes)}
    pickable = sorted(holders - set(LAMPS))
    if task_type == "look_at_obj_in_light":
        lamps = [lamp for lamp in LAMPS if lamp in room.object_types] if rtypes & set(LAMP_HOSTS) else []
        return [Task(task_type, o, toggle=lamp) for lamp in lamps for o in pickable]
    need, table = APPLIANCE.get(task_type, (None, None))
    if need and need not in rtypes:
        return []
    objs = [o for o in pickable if not table or o in c.VAL_ACTION_OBJECTS[table]]
    tasks = []
    for o in objs:
        parents = [r for r in sorted(rtypes - NOT_PARENT) if o in c.VAL_RECEPTACLE_OBJECTS.get(r, ())]
        # the objects must start somewhere other than the parent type
        others = [r for r in rtypes - {need} if r not in parents and o in c.VAL_RECEPTACLE_OBJECTS.get(r, ())]
        tasks += [Task(task_type, o, parent=p) for p in parents if others or len(parents) > 1]
    return tasks


def generate_game(split: str, seed: int, task_type: str | None = None) -> dict:
    """Game `seed` of `split`: a floor plan, a feasible task and a random placement. Returns the three files."""
    paths = alfworld_paths()
    rng = np.random.default_rng(zlib.crc32(f"{split}/{seed}/{task_type}".encode()))
    scenes = split_scenes(split)
    for _ in range(1000):
        ttype = task_type or TASK_TYPES[int(rng.integers(1, 7))]
        room = load_room(scenes[int(rng.integers(len(scenes)))], rng)
        tasks = feasible_tasks(room, ttype)
        if tasks:
            break
    else:
        raise RuntimeError(f"no floor plan of split {split!r} supports {task_type!r}")
    task = tasks[int(rng.integers(len(tasks)))]
    problem, placement = pddl_problem(room, task, rng)
    desc = task_description(task, template=int(rng.integers(2)))
    grammar = paths["grammar"].read_text().replace("UNKNOWN GOAL", desc)
    game = {"pddl_domain": paths["domain"].read_text(), "grammar": grammar, "pddl_problem": problem}
    traj = {
        "task_id": f"gen_{split}_{seed}",
        "task_type": task.task_type,
        "pddl_params": {
            "object_target": task.obj,
            "parent_target": task.parent,
            "toggle_target": task.toggle,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {"floor_plan": f"FloorPlan{room.scene}", "scene_num": room.scene},
        "turk_annotations": {"anns": [{"task_desc": desc}]},
        "placement": placement,
    }
    folder = f"{task.task_type}-{task.obj}-None-{task.parent or task.toggle}-{room.scene}/trial_gen_{seed}"
    return {"folder": folder, "game": game, "traj_data": traj, "initial_state": problem}


def task_description(task: Task, template: int = 0) -> str:
    from alfworld.gen import goal_library

    text = goal_library.gdict[task.task_type]["templates"][template]
    return text.format(obj=task.obj.lower(), recep=task.parent.lower(), toggle=task.toggle.lower())


def pddl_problem(room: Room, task: Task, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """The PDDL problem (objects, init facts, goal) for `task` in `room` with a random object placement."""
    c = constants()
    from alfworld.gen import goal_library

    receps = room.receptacles
    by_type: dict[str, list[str]] = {}
    for rid, (rtype, _) in receps.items():
        by_type.setdefault(rtype, []).append(rid)
    appliance = APPLIANCE.get(task.task_type, ("", ""))[0]
    placement: dict[str, str] = {}  # object id -> receptacle id
    for otype in room.object_types:
        if otype in LAMPS:
            hosts = [r for t in LAMP_HOSTS for r in by_type.get(t, ())]
        else:
            hosts = [r for r, (t, _) in receps.items() if otype in c.VAL_RECEPTACLE_OBJECTS.get(t, ())]
        if otype == task.obj:  # targets start away from the goal and from the appliance that changes them
            hosts = [r for r in hosts if receps[r][0] not in {task.parent, appliance}]
        if not hosts:
            continue
        low = 2 if (otype == task.obj and task.task_type == "pick_two_obj_and_place") else 1
        for k in range(int(rng.integers(low, 4 if otype not in LAMPS else 2))):
            x, y, z = rng.uniform(-3, 3), rng.uniform(0, 2), rng.uniform(-3, 3)
            placement[f"{otype}|{x:+.2f}|{y:+.2f}|{z:+.2f}|{k}"] = hosts[int(rng.integers(len(hosts)))]
    locations = sorted({loc for _, loc in receps.values()})
    free = [p for p in room.grid if location_id(p[0], p[1], 0, 30) not in locations]
    start = free[int(rng.integers(len(free)))] if free else room.grid[0]
    start_loc = location_id(start[0], start[1], 0, 30)
    otypes = sorted({o.split("|")[0] for o in placement})
    rtypes = sorted(by_type)
    e = escape
    lines = ["(define (problem plan_trial)", "(:domain alfred)", "(:objects", "agent1 - agent"]
    lines += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    lines += [f"{e(o)} - object" for o in placement] + [f"{e(r)} - receptacle" for r in receps]
    lines += [f"{e(loc)} - location" for loc in sorted(set(locations) | {start_loc})] + [")", "(:init"]
    lines.append(f"(atLocation agent1 {e(start_loc)})")
    for rid, (rtype, loc) in receps.items():
        lines += [f"(receptacleType {e(rid)} {rtype}Type)", f"(receptacleAtLocation {e(rid)} {e(loc)})"]
        if rtype in OPENABLE:
            lines.append(f"(openable {e(rid)})")
    for oid, rid in placement.items():
        otype = oid.split("|")[0]
        lines += [f"(objectType {e(oid)} {otype}Type)", f"(inReceptacle {e(oid)} {e(rid)})"]
        lines.append(f"(objectAtLocation {e(oid)} {e(receps[rid][1])})")
        if otype in LAMPS:
            lines.append(f"(toggleable {e(oid)})")
            continue
        lines.append(f"(pickupable {e(oid)})")
        for table, pred in (("Heatable", "heatable"), ("Coolable", "coolable"), ("Cleanable", "cleanable")):
            if otype in c.VAL_ACTION_OBJECTS[table]:
                lines.append(f"({pred} {e(oid)})")
    for rt in rtypes:
        lines += [f"(canContain {rt}Type {ot}Type)" for ot in otypes if ot in c.VAL_RECEPTACLE_OBJECTS.get(rt, ())]
    lines.append(")")
    goal = goal_library.gdict[task.task_type]["pddl"].format(
        obj=task.obj, recep=task.parent, toggle=task.toggle, mrecep=""
    )
    return "\n".join(lines) + "\n" + goal.replace("#", "-"), placement


def write_game(root: pathlib.Path, split: str, files: dict, solvable: bool, walkthrough: list[str]) -> pathlib.Path:
    """Write one game in the official layout; returns its game.tw-pddl path."""
    folder = root / "json_2.1.1" / split / files["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    game = {**files["game"], "solvable": solvable, "walkthrough": walkthrough}
    for name, text in (
        ("traj_data.json", json.dumps(files["traj_data"], indent=1)),
        ("initial_state.pddl", files["initial_state"]),
    ):
        part = folder / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        part.write_text(text)
        part.replace(folder / name)
    tmp = folder / f"game.tw-pddl.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(game))
    tmp.replace(folder / "game.tw-pddl")  # last and atomic: a folder with game.tw-pddl is complete
    return folder / "game.tw-pddl"
