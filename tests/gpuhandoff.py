"""A stand-in for the jobs service handing a GPU run to its runner, killed part way: shared by
``tests/unit/test_gpus.py`` and ``benchmarks/faults.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

STEPS = ("reserved", "launched", "attached")

SERVICE = textwrap.dedent("""
    import fcntl, os, subprocess, sys, time
    from hubml.hub_config.gpus import Device, GPULedger
    ledger_file, lock_file, step = sys.argv[1:4]
    led = GPULedger(ledger_file, [Device(0, "NVIDIA A100")])
    # what the jobs service does for a GPU run: reserve, lock the run's file and start its
    # runner with the lock, then name the runner in the ledger
    led.reserve("job:r1", "A100", 1, lock=lock_file)
    if step == "reserved":
        print("at", step, flush=True); time.sleep(60)
    fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    runner = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[fd], start_new_session=True
    )
    os.close(fd)
    print("runner", runner.pid, flush=True)
    if step == "launched":
        print("at", step, flush=True); time.sleep(60)
    led.attach("job:r1", runner.pid)
    print("at", step, flush=True); time.sleep(60)
""")


def kill_service_at(step: str, ledger_file: Path, lock_file: Path) -> int | None:
    """Run the stand-in service up to ``step`` and SIGKILL it there. The pid of the runner it
    had started (still running, the caller's to end), or None when it had started none."""
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(ledger_file), str(lock_file), step],
        stdout=subprocess.PIPE,
        text=True,
    )
    runner = None
    try:
        for line in service.stdout:
            if line.startswith("runner "):
                runner = int(line.split()[1])
            if line.startswith("at "):
                break
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait()
        service.stdout.close()
    return runner


def end(pid: int, timeout: float = 10) -> None:
    """SIGKILL ``pid`` and wait until the ledger sees it gone."""
    from hubml.hub_config.gpus import process_start_time

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while process_start_time(pid) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still there after {timeout:.0f} s")
        time.sleep(0.02)
