"""The runner service's side of a gate probe (root): a warm process, and a supervisor per probe.

The mlflow service runs as the platform account and cannot become anyone, so it asks the
runner service (:mod:`hubml.extensions.jobs.runnerd`, root) to run each gate probe as the
publisher's own Unix account: ``{"op": "gate", "user": <hub user>, "model_dir": <path>,
"trials": N, "timeout_s": T, "memory_mb": M}`` with two descriptors, where the child's result
channel and its stderr go (:func:`.gatesandbox.probe_via_runner`). The runner service checks the
account with the same rules as for job runs (a hubml user account, uid ≥ 1000, created if
missing; never root or a system account), turns the request into a :class:`GateJob`, and hands
it, the two descriptors and the connection itself to the **warm process** (:class:`WarmProbes`),
which forks a supervisor for it (or, while the warm process is starting or gone, forks the
supervisor itself).

The warm process is a fresh interpreter (``python -I -m hubml.extensions.tracking.gatesupervisor
--zygote``), started with the child's environment (:func:`.gaterun.make_child_env`), that
imports mlflow and the sklearn flavour once (:func:`.gaterun.warm_up`, ~9 s) and then only
forks. It is not a fork of the runner service, whose memory holds the hub token and the
settings: a fork of it would hand those to the model.

A supervisor (root, one per probe, :func:`supervise`):

1. makes a private folder as the account (``mkdtemp`` under the system temp dir) and copies the
   model into it, reading as the caller (the connection's peer uid: nothing the platform account
   could not read itself) and writing as the account (its files are the account's);
2. forks the probe: its own session, the account for good (groups, gid, uid), umask 077, the
   limits of :func:`.gaterun.set_limits`, descriptors 0-2 (and 3, the result channel) and no
   others, the child's environment, the folder as cwd and HOME; then
   :func:`.gaterun.respond` in the fork (warm) or ``exec`` of ``python -I -m ...gaterun`` (cold);
3. answers ``{"started": pid}``, waits for the probe's exit, its timeout or the caller hanging
   up, kills the probe's process group in every case and answers ``{"exit": <returncode>,
   "timed_out": <bool>}`` (``{"error": ...}`` if it could not start it);
4. removes the folder (as the account) and exits.

Importing this module imports no heavy library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import gaterun
from .gatesandbox import check_limits, cpu_seconds, remove_tree
from .gatewatch import kill_group

log = logging.getLogger("hubml.gates")

MODULE = "hubml.extensions.tracking.gatesupervisor"
UID_MIN = 1000
MAX_JOB = 64 << 10
MAX_MODEL_FILES = 100_000
COPY_CHUNK = 1 << 24


@dataclasses.dataclass(frozen=True)
class GateJob:
    """One probe, as the runner service checked it. ``uid``/``gid``: the account the probe
    becomes (``None``: stay this process's user, the hub is not root); ``reader_uid``/
    ``reader_gid``: whose permissions the model is read with (the caller's)."""

    uid: int | None
    gid: int | None
    reader_uid: int | None
    reader_gid: int | None
    model_dir: str
    trials: int
    timeout_s: float
    memory_mb: int
    tmp_root: str

    def __post_init__(self):
        check_limits(self.trials, self.timeout_s, self.memory_mb)
        if (self.uid is None) != (self.gid is None):
            raise ValueError("uid and gid go together")
        if self.uid is not None and (self.uid < UID_MIN or self.gid < UID_MIN):
            raise ValueError(f"refusing to run a model as uid {self.uid}, gid {self.gid}")
        if not os.path.isabs(self.model_dir) or "\0" in self.model_dir:
            raise ValueError(f"model_dir must be an absolute path, not {self.model_dir!r}")

    @property
    def cpu_s(self) -> int:
        return cpu_seconds(self.timeout_s)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> GateJob:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a gate job is an object")
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


def make_job(request: dict[str, Any], pw, reader: tuple[int, int] | None) -> GateJob:
    """The job for a caller's ``request``, to run as ``pw`` (``None``: this process's user),
    reading the model as ``reader`` (uid, gid); ``ValueError`` naming what is wrong."""
    model_dir = request.get("model_dir")
    if not isinstance(model_dir, str):
        raise ValueError("model_dir must be a path")
    return GateJob(
        uid=None if pw is None else pw.pw_uid,
        gid=None if pw is None else pw.pw_gid,
        reader_uid=None if reader is None else reader[0],
        reader_gid=None if reader is None else reader[1],
        model_dir=model_dir,
        trials=request.get("trials"),
        timeout_s=request.get("timeout_s"),
        memory_mb=request.get("memory_mb"),
        tmp_root=tempfile.gettempdir(),
    )


# -- the supervisor ---------------------------------------------------------------------------


@contextlib.contextmanager
def _acting_as(uid: int | None, gid: int | None):
    """File system calls with another account's permissions, for a moment (root only)."""
    if uid is None or os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([gid])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def _copy_file(src: str, dst: str, reader, writer) -> None:
    with _acting_as(*reader):
        fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with _acting_as(*writer):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fout = os.open(dst, flags, 0o600)
        try:
            while os.sendfile(fout, fin, None, COPY_CHUNK) > 0:
                pass
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def copy_model(src: str, dst: str, reader=(None, None), writer=(None, None)) -> None:
    """Copy the tree ``src`` to ``dst``: read with ``reader``'s permissions, written (and so
    owned) by ``writer``; symlinks stay symlinks, other special files are left out."""
    with _acting_as(*writer):
        os.mkdir(dst, 0o700)
    stack, count = [(src, dst)], 0
    while stack:
        source, target = stack.pop()
        with _acting_as(*reader), os.scandir(source) as it:
            entries = [
                (
                    e.name,
                    e.is_symlink(),
                    e.is_dir(follow_symlinks=False),
                    e.is_file(follow_symlinks=False),
                )
                for e in it
            ]
        for name, is_link, is_dir, is_file in entries:
            count += 1
            if count > MAX_MODEL_FILES:
                raise ValueError(f"the model has more than {MAX_MODEL_FILES} files")
            s, d = os.path.join(source, name), os.path.join(target, name)
            if is_link:
                with _acting_as(*reader):
                    link = os.readlink(s)
                with _acting_as(*writer):
                    os.symlink(link, d)
            elif is_dir:
                with _acting_as(*writer):
                    os.mkdir(d, 0o700)
                stack.append((s, d))
            elif is_file:
                _copy_file(s, d, reader, writer)


def arrange_fds(fds: list[int]) -> None:
    """Make ``fds[i]`` descriptor ``i`` and close every other descriptor."""
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for i, fd in enumerate(high):
        os.dup2(fd, i)
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd >= len(fds):
            with contextlib.suppress(OSError):
                os.close(fd)


def _become_probe(job: GateJob, work: str, model_dir: str, out_fd: int, err_fd: int, warm: bool):
    """In the probe's fork: become the account, limits, descriptors, then the child (no return)."""
    try:
        supervisor = os.getppid()
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        request = {"model_dir": model_dir, "trials": job.trials}
        if warm:  # 0 nothing, 1 and 2 stderr (the model's prints), 3 the result channel
            arrange_fds([devnull, err_fd, err_fd, out_fd])
        else:  # the request on stdin, the result channel on stdout
            r, w = os.pipe()
            os.write(w, json.dumps(request).encode())
            os.close(w)
            arrange_fds([r, out_fd, err_fd])
        if job.uid is not None:
            os.setgroups([job.gid])
            os.setgid(job.gid)
            os.setuid(job.uid)
            if os.getuid() == 0 or os.geteuid() == 0:
                raise RuntimeError("could not drop root privileges")
        os.umask(0o077)
        with contextlib.suppress(OSError, AttributeError):  # die with the supervisor
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, after setuid
        if os.getppid() != supervisor:
            os._exit(1)
        gaterun.set_limits(job.memory_mb, job.cpu_s, gaterun.MAX_FILE_MB)
        os.chdir(work)
        env = gaterun.make_child_env(work)
        if not warm:
            os.execve(
                sys.executable,
                [
                    sys.executable,
                    "-I",
                    "-m",
                    gaterun.CHILD_MODULE,
                    f"--memory-mb={job.memory_mb}",
                    f"--cpu-s={job.cpu_s}",
                    f"--file-mb={gaterun.MAX_FILE_MB}",
                ],
                env,
            )
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None
        gaterun.respond(request, os.fdopen(3, "w", encoding="utf-8"))
    except BaseException as e:
        with contextlib.suppress(Exception):
            os.write(2, f"the gate's sandbox could not start the model: {e}\n".encode())
    finally:
        os._exit(127)


def _wait(pid: int, conn: socket.socket, timeout_s: float) -> tuple[int, bool]:
    """Until the probe exits, ``timeout_s`` passes or the caller hangs up; then kill its group
    (its leader is not reaped yet, so the group id is still its own) and reap it."""
    deadline = time.monotonic() + timeout_s
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)
    timed_out = False
    try:
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            watch = [conn] if pidfd is None else [conn, pidfd]
            wait = remaining if pidfd is not None else min(remaining, 0.02)
            ready, _, _ = select.select(watch, [], [], wait)
            if conn in ready:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    log.info("the caller hung up: stopping gate probe %s", pid)
                    break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # in case it had not made its own group yet
        kill_group(pid)
        _, status = os.waitpid(pid, 0)
        if pidfd is not None:
            os.close(pidfd)
    return os.waitstatus_to_exitcode(status), timed_out


def supervise(job: GateJob, conn_fd: int, out_fd: int, err_fd: int, warm: bool) -> int:
    """Run one probe as described at the top of this module; returns an exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the folder is removed on the way out
    conn = socket.socket(fileno=conn_fd)

    def answer(message: dict) -> None:
        with contextlib.suppress(OSError):
            conn.send(json.dumps(message).encode())

    work = pid = None
    writer = (job.uid, job.gid)
    try:
        with _acting_as(*writer):
            work = tempfile.mkdtemp(prefix="hubml-gate-", dir=job.tmp_root)
        model_dir = os.path.join(work, "model")
        copy_model(job.model_dir, model_dir, (job.reader_uid, job.reader_gid), writer)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _become_probe(job, work, model_dir, out_fd, err_fd, warm)
        os.close(out_fd)  # the caller sees the pipes close once the probe's group is gone
        os.close(err_fd)
        answer({"started": pid})
        code, timed_out = _wait(pid, conn, job.timeout_s)
        pid = None
        answer({"exit": code, "timed_out": timed_out})
        return 0
    except Exception as e:
        log.warning("gate probe of %s failed to start: %s", job.model_dir, e)
        answer({"error": f"could not start the model: {type(e).__name__}: {e}"})
        return 1
    finally:
        if pid:  # interrupted while it ran
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if work is not None:
            with _acting_as(*writer):
                remove_tree(work)


def start_cold(job: GateJob, fds: list[int]) -> int:
    """Fork a supervisor that execs a fresh interpreter for the probe (no warm process)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            arrange_fds([0, 1, 2, *fds])
            code = supervise(job, 3, 4, 5, warm=False)
        finally:
            os._exit(code)
    return pid


# -- the warm process -------------------------------------------------------------------------


class WarmProbes:
    """The runner service's handle on its warm process: started at once, restarted when a
    request finds it gone (that request's probe runs cold)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.sock: socket.socket | None = None
        self.pid: int | None = None

    def start(self) -> None:
        self.close()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = gaterun.make_child_env(str(self.home))
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                arrange_fds([0, 1, 2, theirs.fileno()])
                command = [sys.executable, "-I", "-m", MODULE, "--zygote", "3"]
                os.execve(sys.executable, command, env)
            finally:
                os._exit(127)
        theirs.close()
        self.sock, self.pid = ours, pid
        log.info("warm gate process %s starting", pid)

    def submit(self, job: GateJob, fds: list[int]) -> None:
        """Hand ``job`` with [connection, result channel, stderr] over; cold if that fails."""
        if self.sock is not None:
            try:
                socket.send_fds(self.sock, [job.to_json()], fds)
                return
            except OSError as e:
                log.warning("the warm gate process is gone (%s): restarting it", e)
        start_cold(job, fds)
        with contextlib.suppress(OSError):
            self.start()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = self.pid = None


def _reap(signum, frame):
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def zygote(control_fd: int) -> int:
    """The warm process: import once, then fork a supervisor per job until the runner service
    closes the control socket."""
    logging.basicConfig(level=logging.INFO, format="[hubml-gates %(levelname)s] %(message)s")
    control = socket.socket(fileno=control_fd)
    started = time.monotonic()
    gaterun.warm_up()
    threads = len(os.listdir("/proc/self/task"))
    warm = threads == 1
    if not warm:  # forking a process with threads could copy a lock another thread held
        log.warning("%s threads after the warm-up: probes run in fresh interpreters", threads)
    log.info("warm gate process ready in %.1f s", time.monotonic() - started)
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(control, MAX_JOB, 3)
        if not msg:
            return 0
        try:
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} descriptors")
            job = GateJob.from_json(msg)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("refused a gate job: %s", e)
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                control.close()
                code = supervise(job, *fds, warm=warm)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("--zygote", type=int, required=True, metavar="CONTROL_FD")
    return zygote(parser.parse_args(argv).zygote)


if __name__ == "__main__":
    sys.exit(main())
