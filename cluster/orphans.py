"""Processes a killed driver leaves behind, found by its Ray temp dir, and how to end them (by PID only).

    python -m cluster.orphans /tmp/rl4vlm-ray-abc123          # list them
    python -m cluster.orphans /tmp/rl4vlm-ray-abc123 --kill   # SIGTERM them, then remove the dir

A driver that starts its own local cluster (`python -m cluster.train` without RAY_ADDRESS) takes the GCS,
raylet and workers down with it even on SIGKILL (Ray's fate sharing), but Ray's DashboardAgent and
RuntimeEnvAgent outlive it, adopted by init, and the temp dir stays. They still hold their log files in that
dir open, which is how they are found here: never by name (`pkill ray` or `ray stop` would end every Ray
cluster on the machine). The driver prints its temp dir at start.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import sys
import time


def orphans(ray_dir: str | pathlib.Path) -> list[int]:
    """PIDs of processes (other than this one) with an open file or working dir under `ray_dir` (Linux /proc)."""
    root = str(pathlib.Path(ray_dir).resolve())
    found = []
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == os.getpid():
            continue
        try:
            links = [os.readlink(proc / "cwd")] + [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(link == root or link.startswith(root + "/") for link in links):
            found.append(pid)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.orphans", description=__doc__.splitlines()[0])
    parser.add_argument("ray_dir", help="the run's Ray temp dir (the driver prints it; $TMPDIR/rl4vlm-ray-*)")
    parser.add_argument("--kill", action="store_true", help="SIGTERM them and remove the dir")
    args = parser.parse_args(argv)
    pids = orphans(args.ray_dir)
    for pid in pids:
        name = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        print(f"{pid}  {name}")
    if args.kill:
        end(pids)
        shutil.rmtree(args.ray_dir, ignore_errors=True)
        print(f"ended {len(pids)} process(es) and removed {args.ray_dir}")
    return 0


def end(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `grace_s` (Ray's agents can ignore a SIGTERM with their
    raylet gone: measured, both still up 30 s later)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids:
            return


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = pathlib.Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(") ")[-1][:1] != "Z"  # a zombie has ended


if __name__ == "__main__":
    sys.exit(main())
