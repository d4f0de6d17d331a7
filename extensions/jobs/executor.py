"""Where runs execute on this host: local runner processes (Kubernetes Jobs: :mod:`.kube`).

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
import threading
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

    def __init__(self, warm_spares: int = 1, max_idle: int | None = None):
        self.warm_spares = warm_spares
        # runners back from a run are kept for the next one, up to this many idle
        self.max_idle = max(warm_spares, max_idle or 0)
        self.spares: list[_Spare] = []
        self.busy: list[_Spare] = []  # warm runners on a run; they say "ready" when done
        self._procs: list[subprocess.Popen] = []  # ours to reap
        # called (from a watcher thread) the moment a runner is gone, so the scheduler finishes
        # its run at once instead of on its next tick
        self.notify = None
        self._watched: set[str] = set()

    def _watch(self, run_dir: Path) -> None:
        """Wait, in a thread, for the run's lock to be free (its runner exited or, warm, is done with it)."""
        key = str(run_dir)
        if self.notify is None or key in self._watched:
            return
        self._watched.add(key)

        def wait():
            try:
                with open(lock_path(run_dir), "a+") as f:
                    fcntl.flock(f, fcntl.LOCK_EX)  # blocks while the runner lives
                    fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                pass
            self._watched.discard(key)
            if self.notify is not None:
                self.notify()

        threading.Thread(target=wait, daemon=True, name=f"runner-watch-{Path(run_dir).name}").start()

    def maintain(self) -> None:
        """Reap finished runners, replace dead spares, keep ``warm_spares`` warming."""
        self._procs = [p for p in self._procs if p.poll() is None]
        for s in list(self.busy):
            if s.proc.poll() is not None:
                self.busy.remove(s)
                s.discard()
            elif s.poll_ready():
                self.busy.remove(s)
                if len(self.spares) < self.max_idle:
                    self.spares.append(s)
                else:
                    s.discard()
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
            pid = None
            if spare is not None:
                self.spares.remove(spare)
                pid = self._hand_over(spare, spec, fd)
            pid = pid or self._cold(run_dir, fd)
        finally:
            os.close(fd)  # the runner holds its own copy of the locked file now
        self._watch(run_dir)
        return pid

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
        spare.sock.settimeout(None)
        spare.ready = False
        self.busy.append(spare)
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

    def alive(self, run_dir: Path) -> bool:
        if runner_alive(run_dir):
            self._watch(run_dir)  # a runner re-attached after a restart is watched too
            return True
        return False

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
        for s in self.busy:  # runs go on; their runners exit when done instead of coming back
            with contextlib.suppress(OSError):
                s.sock.close()
        self.busy = []
