"""Idle memory of the mlflow hub service (front door + its `mlflow server`) against a default
`mlflow server` (4 workers, background jobs on) started in the same run. Goal: <= 600 MB."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from tests.hubprocess import free_port, start_hub
from tests.integration.test_tracking_service import wait_for_mlflow


def tree_rss_mb(proc: psutil.Process) -> float:
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 1024**2


def service_rss(hub) -> float:
    hub_proc = psutil.Process(hub.proc.pid)
    for child in hub_proc.children():
        if "hubml.extensions.tracking.service" in " ".join(child.cmdline()):
            return tree_rss_mb(child)
    raise RuntimeError("mlflow service process not found")


def default_mlflow_rss(tmp: Path, settle: float) -> float:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp / 'default.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        time.sleep(settle)
        return tree_rss_mb(psutil.Process(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def run(samples: int = 1, settle: float = 10.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_hub(Path(tmp) / "hub", {"tracking": {"enabled": True}})
        try:
            wait_for_mlflow(hub, hub.token, timeout=120)
            time.sleep(settle)
            ours = service_rss(hub)
        finally:
            hub.stop()
        theirs = default_mlflow_rss(Path(tmp), settle)
    return {"service_mb": ours, "default_mlflow_server_mb": theirs, "ratio": ours / theirs}


def report(result: dict) -> str:
    return (
        "idle memory (RSS of the process tree):\n"
        f"  hubml mlflow service (front door + 1-worker mlflow) {result['service_mb']:.0f} MB  (goal <= 600 MB)\n"
        f"  default `mlflow server`                             {result['default_mlflow_server_mb']:.0f} MB\n"
        f"  ratio                                                {result['ratio']:.2f}x"
    )
