"""Where runs execute on this host: runners started by the runner service (Kubernetes: :mod:`.kube`).

The local executor prepares a run (its spec and secret, :mod:`.remote`), takes the run's
``runner.lock`` and opens its log, and asks the runner service (:mod:`.runnerd`, root) to start
the runner as the run's owner with those two descriptors. The runner holds the lock for the
whole run, so the run is alive exactly while the lock is taken (no PID bookkeeping that PID reuse
could fool), and a service that died between claiming a run and handing it over leaves the lock
free and the log absent: the run never started.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import threading
from pathlib import Path

from . import remote
from .runnerd import RunnersClient

log = logging.getLogger("hubml.jobs.executor")

# what a run inherits from the service's own environment; never the service's hub token
_INHERIT = {
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
}
# how often a local runner sends the output so far
PROGRESS_S = 2


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


class LocalExecutor:
    """Runs on this host, each as its owner's account, through the runner service."""

    def __init__(self, runners_socket: Path, jobs_url: str):
        self.runners = RunnersClient(runners_socket)
        self.jobs_url = jobs_url
        # called (from a watcher thread) the moment a runner is gone, so the scheduler finishes
        # its run at once instead of on its next tick
        self.notify = None
        self._watched: set[str] = set()

    def _watch(self, run_dir: Path) -> None:
        """Wait, in a thread, for the run's lock to be free (its runner exited)."""
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

        threading.Thread(
            target=wait, daemon=True, name=f"runner-watch-{Path(run_dir).name}"
        ).start()

    def maintain(self) -> None:
        """Nothing to keep: the runner service is warm, and runners are nobody's children here."""

    def ready(self) -> bool:
        """Whether the runner service is there to take a run (else runs wait in the queue)."""
        return self.runners.path.exists()

    def launch(self, spec: dict) -> int:
        """Start the run described by ``spec``; returns the runner's PID (its process group)."""
        run_dir = Path(spec["run_dir"])
        token = remote.prepare(run_dir, spec, spec["env"])
        env = {
            **base_env(),
            "HOME": spec["env"]["HOME"],
            "USER": spec["env"].get("USER", spec["user"]),
            "HUBML_JOBS_URL": self.jobs_url,
            "HUBML_JOB_ID": spec["job_id"],
            "HUBML_JOB_RUN_ID": spec["run_id"],
            "HUBML_RUN_TOKEN": token,
            "HUBML_RUN_PROGRESS_S": str(PROGRESS_S),
        }
        lock_fd = os.open(lock_path(run_dir), os.O_RDONLY | os.O_CREAT, 0o600)
        log_fd = None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log_fd = os.open(run_dir / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            pid = self.runners.start(spec["user"], spec["env"]["HOME"], env, lock_fd, log_fd)
        except BaseException:
            (run_dir / "log").unlink(missing_ok=True)  # never started: the run may be queued again
            raise
        finally:
            os.close(lock_fd)  # the runner holds its own copy of the locked file now
            if log_fd is not None:
                os.close(log_fd)
        self._watch(run_dir)
        return pid

    def alive(self, run_dir: Path) -> bool:
        if runner_alive(run_dir):
            self._watch(run_dir)  # a runner re-attached after a restart is watched too
            return True
        return False

    def terminate(self, run_dir: Path, pid: int | None, force: bool = False) -> None:
        """Ask the runner to stop (it kills its kernel and sends the partial output)."""
        if not pid or not runner_alive(run_dir):
            return
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
        try:
            with contextlib.suppress(RuntimeError):
                self.runners.signal(pid, "KILL" if force else "TERM", fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.runners.close()
