"""Where runs execute: local runner processes, or Kubernetes ``batch/v1`` Jobs.

The local executor starts :mod:`hubml.extensions.jobs.runner` processes in their own session
(they outlive the service) and knows whether a run is alive by its ``runner.lock`` (see the
runner's docstring). It keeps warm spares so a run does not wait for papermill's imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("hubml.jobs.executor")

RUNNER = [sys.executable, "-m", "hubml.extensions.jobs.runner"]
# what a run inherits from the service's own environment; never the service's hub token
_INHERIT = {"PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k in _INHERIT or k.startswith("LC_")}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "/usr/bin:/bin")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / "runner.lock"


def runner_alive(run_dir: Path) -> bool:
    """Whether a runner holds this run's lock (i.e. is still running)."""
    path = lock_path(run_dir)
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


class _Spare:
    def __init__(self):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent
        self.proc = subprocess.Popen(
            [*RUNNER, "--spare", str(child.fileno())],
            pass_fds=[child.fileno()],
            env=base_env(),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        child.close()
        self.ready = False

    def poll_ready(self) -> bool:
        if not self.ready and self.proc.poll() is None:
            r, _, _ = select.select([self.sock], [], [], 0)
            if r:
                self.ready = self.sock.recv(64).startswith(b"ready")
        return self.ready and self.proc.poll() is None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()  # the spare reads EOF and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class LocalExecutor:
    """Runner processes on this host."""

    def __init__(self, warm_spares: int = 1):
        self.warm_spares = warm_spares
        self.spares: list[_Spare] = []
        self._procs: list[subprocess.Popen] = []  # ours to reap

    def maintain(self) -> None:
        """Reap finished runners, replace dead spares, keep ``warm_spares`` warming."""
        self._procs = [p for p in self._procs if p.poll() is None]
        for s in [s for s in self.spares if s.proc.poll() is not None]:
            s.discard()
            self.spares.remove(s)
        while len(self.spares) < self.warm_spares:
            self.spares.append(_Spare())

    def launch(self, spec: dict) -> int:
        """Start the run described by ``spec``; returns the runner's PID (its process group)."""
        run_dir = Path(spec["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.json").write_text(json.dumps(spec))
        fd = os.open(lock_path(run_dir), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            spare = next((s for s in self.spares if s.poll_ready()), None)
            if spare is not None:
                self.spares.remove(spare)
                pid = self._hand_over(spare, spec, fd)
                if pid:
                    return pid
            return self._cold(run_dir, fd)
        finally:
            os.close(fd)  # the runner holds its own copy of the locked file now

    def _hand_over(self, spare: _Spare, spec: dict, fd: int) -> int | None:
        try:
            socket.send_fds(spare.sock, [json.dumps(spec).encode()], [fd])
            spare.sock.settimeout(10)
            answer = spare.sock.recv(64).decode()
        except OSError as e:
            log.warning("warm runner %s failed to take the run (%s); starting a cold one", spare.proc.pid, e)
            answer = ""
        if not answer.startswith("started"):
            spare.proc.kill()
            spare.discard()
            return None
        spare.sock.close()
        self._procs.append(spare.proc)
        return spare.proc.pid

    def _cold(self, run_dir: Path, fd: int) -> int:
        proc = subprocess.Popen(
            [*RUNNER, "--spec", str(run_dir / "spec.json"), "--lock-fd", str(fd)],
            pass_fds=[fd],
            env=base_env(),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._procs.append(proc)
        return proc.pid

    @staticmethod
    def alive(run_dir: Path) -> bool:
        return runner_alive(run_dir)

    @staticmethod
    def terminate(run_dir: Path, pid: int | None, force: bool = False) -> None:
        """Ask the runner to stop (it kills its kernel and keeps the partial output)."""
        if not pid or not runner_alive(run_dir):
            return  # never signal a PID that may have been reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL if force else signal.SIGTERM)

    def close(self) -> None:
        for s in self.spares:
            s.discard()
        self.spares = []


# ---------------------------------------------------------------------------------------------
# Kubernetes: a batch/v1 Job from the same catalog translation as the spawner


def papermill_command(notebook: str, output: str, parameters: dict) -> list[str]:
    cmd = ["papermill", notebook, output, "--log-output", "--no-progress-bar"]
    for name, value in parameters.items():
        cmd += ["-y", json.dumps({name: value})]
    return cmd


def k8s_job_manifest(settings, profile_slug: str, username: str, notebook: str, parameters: dict | None = None,
                     job_id: str = "preview", run_id: str = "preview", timeout_s: int = 3600) -> dict:
    """The ``batch/v1`` Job for one run: the user's pod from KubeSpawner, running papermill.

    The pod template is KubeSpawner's own pod for this user and profile (same image, GPU limits,
    node selector, tolerations, home volume), with the notebook server command replaced by
    papermill and the server's hub credentials removed. Retries are the service's business, so
    ``backoffLimit`` is 0; ``activeDeadlineSeconds`` enforces the timeout in the cluster.
    """
    from kubernetes_asyncio.client import (
        ApiClient,
        V1Job,
        V1JobSpec,
        V1ObjectMeta,
        V1PodTemplateSpec,
    )

    from hubml.hub_config import k8s

    pod = k8s.pod_manifest(settings, profile_slug, username)
    spec = pod["spec"]
    spec["restartPolicy"] = "Never"
    container = spec["containers"][0]
    out_dir = f".hubml-jobs/{job_id}/{run_id}"
    container["name"] = "papermill"
    container["command"] = ["/bin/sh", "-c", f'mkdir -p "{out_dir}" && exec "$@"', "hubml-job"]
    container["args"] = papermill_command(notebook, f"{out_dir}/output.ipynb", parameters or {})
    container.pop("ports", None)
    container.pop("lifecycle", None)
    # the server's hub credentials and URLs mean nothing to a batch pod
    env = [e for e in container.get("env", [])
           if e["name"] == "JUPYTERHUB_USER" or not e["name"].startswith(("JUPYTERHUB_", "JPY_API_TOKEN"))]
    env += [
        {"name": "HUBML_JOB_ID", "value": job_id},
        {"name": "HUBML_JOB_RUN_ID", "value": run_id},
        {"name": "JPY_SESSION_NAME", "value": notebook},
    ]
    container["env"] = env
    labels = {**pod["metadata"].get("labels", {}), "app.kubernetes.io/component": "hubml-job",
              "hubml.io/job-id": job_id, "hubml.io/run-id": run_id}
    labels.pop("component", None)
    job = V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(
            name=f"job-{username}-{run_id}"[:63].rstrip("-").lower(),
            namespace=settings.kubernetes.namespace,
            labels=labels,
            annotations={"hubml.io/notebook": notebook, "hubml.io/profile": profile_slug},
        ),
        spec=V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=timeout_s,
            ttl_seconds_after_finished=7 * 24 * 3600,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels, annotations=pod["metadata"].get("annotations")),
                spec=spec,
            ),
        ),
    )

    async def serialize():
        async with ApiClient() as api:
            return api.sanitize_for_serialization(job)

    return k8s._run(serialize())
