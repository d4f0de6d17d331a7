"""A hub service ends when its hub does, also when the hub dies before the service is up."""

import os
import subprocess
import sys
import time
from pathlib import Path

WATCHER = """
import os, sys, time
from hubml.extensions.common.parent import exit_with_parent
time.sleep(float(sys.argv[1]))  # the service's imports and set-up
print("watching" if exit_with_parent("svc") else "not watching", flush=True)
time.sleep(30)
"""

HUB = """
import os, subprocess, sys
env = dict(os.environ, JUPYTERHUB_SERVICE_NAME="svc", HUBML_HUB_PID=str(os.getpid()))
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env)
print(child.pid, flush=True)
os._exit(0)  # the hub dies at once, before its service has started watching
"""


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_service_whose_hub_died_before_it_started_watching_stops():
    hub = subprocess.run(
        [sys.executable, "-c", HUB, WATCHER, "1.0"], capture_output=True, text=True, timeout=30
    )
    service = int(hub.stdout.split()[0])
    try:
        assert _gone(service, 10), "the service outlived its hub"
    finally:
        if not _gone(service, 0):
            os.kill(service, 9)


def test_a_service_of_a_live_hub_keeps_running():
    env = dict(os.environ, JUPYTERHUB_SERVICE_NAME="svc", HUBML_HUB_PID=str(os.getpid()))
    service = subprocess.Popen(
        [sys.executable, "-c", WATCHER, "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout.readline().strip() == "watching"
        assert not _gone(service.pid, 1.5)
    finally:
        service.kill()
        service.wait()
        service.stdout.close()
