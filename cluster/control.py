"""Commands against a running job: scale its rollout actors, read its status.

    python -m cluster.control status --run numberline-20261124-101500
    python -m cluster.control scale  --run numberline-20261124-101500 --rollout-actors 3

A run registers a small named Ray actor, `RunControl`, in the `rl4vlm` namespace. The driver reads the desired
number of rollout actors from it between PPO updates and writes its status there; this command talks to that
actor. Against a cluster give `--address` (or set RAY_ADDRESS); a `make train` run prints its own address.

RunControl holds nothing the run cannot lose: if it dies, Ray restarts it under the same name, the driver
counts the restart (cluster/recovery.py) and reports to the new one at the next update. A scale request made
before the restart and not yet applied is lost with it (until that report the status shows the start size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

NAMESPACE = "rl4vlm"


def control_name(run_name: str) -> str:
    return f"control-{run_name}"


class RunControl:
    """A mailbox between the driver and operators (plain class; `ray.remote` in `register`)."""

    def __init__(self, rollout_actors: int):
        self.desired: int | None = None
        """Set by an operator; None: keep the pool as it is."""
        self.state: dict = {"actors": rollout_actors}  # until the driver's first report
        self.members: dict = {}
        self.started = time.time()

    def set_rollout_actors(self, n: int) -> int:
        if n < 1:
            raise ValueError("a run needs at least one rollout actor")
        self.desired = int(n)
        return self.desired

    def desired_rollout_actors(self, current: int) -> int:
        """What the pool should be: the operator's last request, else `current` (the pool's own size)."""
        return current if self.desired is None else self.desired

    def started_at(self) -> float:
        """When this instance started (a restart by Ray makes a new one)."""
        return self.started

    def report(self, state: dict, members: dict) -> None:
        """The driver's status and its current rollout actor handles (by id)."""
        self.state, self.members = state, members

    def status(self) -> dict:
        return {**self.state, "desired_rollout_actors": self.desired_rollout_actors(self.state.get("actors"))}

    def rollout_actor(self, actor_id: int):
        """The handle of one rollout actor (operators and tests use it, e.g. to kill one)."""
        return self.members[actor_id]


def register(run_name: str, rollout_actors: int, max_restarts: int):
    """Start the run's RunControl; Ray restarts it (and retries the calls it had) when its process dies."""
    import ray

    options = {"name": control_name(run_name), "namespace": NAMESPACE, "get_if_exists": False}
    options |= {"max_restarts": max_restarts, "max_task_retries": -1}
    return ray.remote(num_cpus=0)(RunControl).options(**options).remote(rollout_actors)


def lookup(run_name: str):
    import ray

    return ray.get_actor(control_name(run_name), namespace=NAMESPACE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.control", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "scale"])
    parser.add_argument("--run", required=True, help="the run's name (its folder under runs/)")
    parser.add_argument("--rollout-actors", type=int, help="new number of rollout actors (scale)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or the local cluster)")
    args = parser.parse_args(argv)
    import ray

    ray.init(address=args.address or "auto", namespace=NAMESPACE, logging_level="ERROR")
    try:
        control = lookup(args.run)
    except ValueError:
        print(f"no running job named {args.run!r} on this cluster", file=sys.stderr)
        return 2
    if args.command == "scale":
        if args.rollout_actors is None:
            parser.error("scale needs --rollout-actors")
        ray.get(control.set_rollout_actors.remote(args.rollout_actors))
        print(f"{args.run}: rollout actors -> {args.rollout_actors} (applied at the next PPO update)")
    print(json.dumps(ray.get(control.status.remote()), indent=2))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
