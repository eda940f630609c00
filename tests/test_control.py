"""cluster/control.py's RunControl as a plain class: the pool keeps its size until an operator asks for another,
the status shows the start size before the driver's first report, and a fresh instance (what a restart by Ray
builds) is told apart by its start time."""

from __future__ import annotations

import time

import pytest

from cluster.control import RunControl


def test_the_pool_keeps_its_size_until_an_operator_asks():
    control = RunControl(rollout_actors=2)
    assert control.status() == {"actors": 2, "desired_rollout_actors": 2}
    assert control.desired_rollout_actors(current=2) == 2
    control.report({"update": 3, "actors": 3}, {})
    assert control.desired_rollout_actors(current=3) == 3  # grown meanwhile: no request, no change
    assert control.set_rollout_actors(1) == 1
    assert control.desired_rollout_actors(current=3) == 1
    assert control.status() == {"update": 3, "actors": 3, "desired_rollout_actors": 1}
    with pytest.raises(ValueError):
        control.set_rollout_actors(0)


def test_a_new_instance_has_a_later_start_time():
    first = RunControl(1)
    time.sleep(0.01)
    assert RunControl(1).started_at() > first.started_at()
