"""cluster/orphans.py: the processes a SIGKILLed driver leaves are found by its Ray temp dir and ended by PID,
and nothing else is touched (a process with files in another dir stays)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cluster.orphans import alive, main, orphans

HOLD = "import sys, time; f = open(sys.argv[1], 'w'); print('ready', flush=True); time.sleep(300)"


def holder(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_only_the_processes_holding_files_in_the_dir_are_found_and_ended(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "other").mkdir()
    mine, other = holder(tmp_path / "run" / "agent.log"), holder(tmp_path / "other" / "x.log")
    try:
        assert orphans(tmp_path / "run") == [mine.pid]
        assert main([str(tmp_path / "run"), "--kill"]) == 0
        assert mine.wait(10) == -signal.SIGTERM and not (tmp_path / "run").exists()  # it took the SIGTERM
        assert other.poll() is None  # untouched
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()


DRIVER = """
import sys, time
from cluster.launch import OWN_TEMP_DIRS, init_ray
init_ray(1, private=True, temp_prefix="rl4vlm-test-orphans-")
print(OWN_TEMP_DIRS[-1], flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_sigkilled_drivers_leftovers_are_found_by_its_temp_dir():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    ray_dir, left = driver.stdout.readline().strip(), []
    try:
        time.sleep(5)  # the agents are up
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the GCS and raylet go with the driver; the agents stay
            left = orphans(ray_dir)
            names = [open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[0] for p in left]
            if all(b"Agent" in n for n in names):
                break
            time.sleep(1)
        assert left and all(b"Agent" in n for n in names), names
        main([ray_dir, "--kill"])
        assert not [p for p in left if alive(p)] and not os.path.exists(ray_dir)
    finally:
        for pid in [p for p in left if alive(p)]:
            os.kill(pid, signal.SIGKILL)
