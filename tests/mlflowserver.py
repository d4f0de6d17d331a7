"""Start a real MLflow tracking server (SQLite backend, proxied artifacts) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.hubprocess import free_port


class RunningMLflow:
    def __init__(self, proc, url, data_dir, log_path, port):
        self.proc, self.url, self.data_dir, self.log_path, self.port = (
            proc,
            url,
            data_dir,
            log_path,
            port,
        )

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, timeout=20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_mlflow(data_dir: Path, port: int | None = None, timeout: float = 60) -> RunningMLflow:
    """One worker, job execution off (see FACTS.md): about 7 s and 500 MB."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / "mlflow.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
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
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{data_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(data_dir / "artifacts"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningMLflow(proc, f"http://127.0.0.1:{port}", data_dir, log_path, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    server.stop()
    raise TimeoutError(f"mlflow server not up in {timeout}s:\n{server.log()[-3000:]}")
