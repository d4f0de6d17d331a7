"""``hubml-runners``: the service that starts each job run as its owner's Unix account.

The jobs service runs as the platform's account and cannot become anyone; this small service,
the only one of hubml's that runs as root, does one thing for it: on request it forks a runner,
which becomes the run owner's account (groups, gid, uid, for good) before anything of the run
is read, and runs :func:`hubml.extensions.jobs.runner.remote`. Papermill and nbconvert are
imported here once, so a forked runner starts at once (``jobs.warm_runners: 0`` starts a fresh
interpreter instead). The runner outlives this service: liveness is the run's lock, which only
the runner holds.

It listens on a Unix socket in ``<data_dir>/run`` (root's, open to the platform's group only) and
answers only the jobs service's account (``SO_PEERCRED``). Requests (one JSON message each,
``SOCK_SEQPACKET``):

- ``{"op": "start", "user": <hub user>, "home": <path>, "env": {...}}`` with two descriptors, the
  run's locked ``runner.lock`` and its log: forks the runner, answers ``{"pid": <pid>}``;
- ``{"op": "signal", "pid": <pid>, "signal": "TERM" | "KILL"}`` with the run's ``runner.lock``:
  signals the runner (and its kernels) only if that process holds that very lock file, so a
  reused PID or a made-up one is never signalled;
- ``{"op": "gate", "user": <hub user>, "model_dir": <path>, "trials": N, "timeout_s": T,
  "memory_mb": M}`` with two descriptors, where the probe's result channel and stderr go (the
  mlflow service's registry gates): runs a gate probe of the model as the user's account, in a
  private copy of the model read with the caller's permissions. The connection is handed over
  to the probe's supervisor, which answers ``{"started": pid}``, then ``{"exit": <returncode>,
  "timed_out": <bool>}`` (or ``{"error": ...}``), and kills the probe at its timeout or when
  the caller hangs up (:mod:`hubml.extensions.tracking.gatesupervisor`; probes fork from a warm
  process that imported mlflow, started with this service when tracking is on).

A user never gets root, another user's account or a system account: the account is
``<prefix><name>`` of a valid hub user name, created if missing, and must have a uid ≥ 1000.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import selectors
import signal
import socket
import stat
import struct
import sys
from pathlib import Path

log = logging.getLogger("hubml.jobs.runners")

SOCKET_NAME = "runners.sock"
MAX_MESSAGE = 256 * 1024
UID_MIN = 1000
_HUB_NAME = re.compile(r"^[^/\x00\s]{1,255}$")


def socket_path(data_dir) -> Path:
    from hubml.hub_config.accounts import RUN_DIR

    return Path(data_dir) / RUN_DIR / SOCKET_NAME


# -- the client (the jobs service's side) ----------------------------------------------------


class RunnersUnavailable(RuntimeError):
    """The runner service does not answer (it is restarting): runs wait, they do not fail."""


class RunnersClient:
    """The jobs service's connection to this service."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sock: socket.socket | None = None

    def _call(self, request: dict, fds: list[int]) -> dict:
        for attempt in (1, 2):  # the service may have restarted since the last call
            try:
                if self.sock is None:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    self.sock.settimeout(30)
                    self.sock.connect(str(self.path))
                socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
                answer = self.sock.recv(MAX_MESSAGE)
                if not answer:
                    raise ConnectionError("the runner service closed the connection")
                return json.loads(answer)
            except (OSError, ValueError) as e:
                self.close()
                if attempt == 2:
                    raise RunnersUnavailable(
                        f"the runner service ({self.path}) did not answer: {e}"
                    ) from None
        raise AssertionError("unreachable")

    def start(self, user: str, home: str, env: dict, lock_fd: int, log_fd: int) -> int:
        answer = self._call(
            {"op": "start", "user": user, "home": home, "env": env}, [lock_fd, log_fd]
        )
        if "pid" not in answer:
            raise RuntimeError(answer.get("error") or f"the runner service refused: {answer}")
        return int(answer["pid"])

    def signal(self, pid: int, sig: str, lock_fd: int) -> bool:
        answer = self._call({"op": "signal", "pid": int(pid), "signal": sig}, [lock_fd])
        return bool(answer.get("signalled"))

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


# -- the service -------------------------------------------------------------------------------


def _peer_creds(conn: socket.socket) -> tuple[int, int]:
    """The connected process's (uid, gid), from the kernel (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1:]


def _peer_uid(conn: socket.socket) -> int:
    return _peer_creds(conn)[0]


def holds_file(pid: int, fd: int) -> bool:
    """Whether process ``pid`` has the file open that ``fd`` refers to (same device and inode)."""
    want = os.fstat(fd)
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for entry in entries:
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{pid}/fd/{entry}")
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return True
    return False


def kill_tree(pid: int, sig: int) -> None:
    """Signal the runner's kernels (each leads its own session) and the runner's own group."""
    from .runner import children

    for child in children(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Runners:
    """What the service knows: who may ask, which accounts runs become, how to start them."""

    def __init__(self, settings, warm: bool = True):
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.warm = warm
        # the warm process gate probes fork from (gatesupervisor.WarmProbes), when started
        self.gates = None
        from hubml.hub_config import accounts

        self.accounts = accounts
        self.isolated = accounts.isolated(settings.hub.isolation)
        if self.isolated:
            import pwd

            self.allowed_uids = {0, pwd.getpwnam(accounts.PLATFORM_ACCOUNT).pw_uid}
        else:
            self.allowed_uids = {os.getuid()}

    def account(self, user: str, home: str):
        """The account a run of ``user`` becomes (None: stay as this process, not isolated)."""
        if not isinstance(user, str) or not _HUB_NAME.match(user) or user in (".", ".."):
            raise ValueError(f"not a hub user name: {user!r}")
        expected = self.data_dir / "homes" / user
        if Path(home) != expected:
            raise ValueError(f"a run of {user} starts in {expected}, not {home}")
        if not self.isolated:
            expected.mkdir(parents=True, exist_ok=True)
            return None
        pw = self.accounts.user_account(
            user,
            expected,
            self.data_dir / self.accounts.RUN_DIR,
            self.settings.hub.unix_user_prefix,
        )
        if pw.pw_uid < UID_MIN or not pw.pw_name.startswith(self.settings.hub.unix_user_prefix):
            raise ValueError(
                f"refusing to run as {pw.pw_name} (uid {pw.pw_uid}): not a hubml user account"
            )
        return pw

    def start(self, request: dict, fds: list[int]) -> dict:
        if len(fds) != 2:
            raise ValueError("start needs two descriptors: the run's lock and its log")
        env = request.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("env must be an object of strings")
        pw = self.account(request.get("user"), request.get("home", ""))
        lock_fd, log_fd = fds
        pid = os.fork()
        if pid == 0:  # the runner
            code = 1
            try:
                code = self._become_runner(pw, Path(request["home"]), env, lock_fd, log_fd)
            except BaseException as e:
                with contextlib.suppress(Exception):
                    os.write(log_fd, f"[hubml-jobs] the runner could not start: {e}\n".encode())
            finally:
                os._exit(code)
        return {"pid": pid}

    def _become_runner(self, pw, home: Path, env: dict, lock_fd: int, log_fd: int) -> int:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if pw is not None:
            self.accounts.drop_privileges(pw)
        else:
            os.umask(0o077)
        with contextlib.suppress(OSError):  # nobody attaches to the runner, not even its owner
            libc = ctypes.CDLL(None)
            libc.prctl(4, 0)  # PR_SET_DUMPABLE
            # what ps and top show for it (its command line is still this service's)
            libc.prctl(15, b"hubml-runner", 0, 0, 0)  # PR_SET_NAME
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        keep = {0, 1, 2, lock_fd}
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.set_inheritable(lock_fd, False)  # the kernel must not keep the run "alive"
        os.environ.clear()
        os.environ.update(env)
        os.chdir(home if home.is_dir() else "/")
        if not self.warm:
            os.execv(
                sys.executable, [sys.executable, "-m", "hubml.extensions.jobs.runner", "--remote"]
            )
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        from .runner import remote

        code = remote()
        sys.stdout.flush()
        return code

    def signal(self, request: dict, fds: list[int]) -> dict:
        if len(fds) != 1:
            raise ValueError("signal needs the run's lock")
        pid, name = request.get("pid"), request.get("signal")
        sig = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}.get(name)
        if not isinstance(pid, int) or pid <= 1 or sig is None:
            raise ValueError("signal needs a pid and TERM or KILL")
        if not holds_file(pid, fds[0]):
            return {"signalled": False, "why": f"process {pid} is not this run's runner"}
        kill_tree(pid, sig)
        return {"signalled": True}

    def gate(self, request: dict, fds: list[int], conn: socket.socket) -> None:
        """Hand a gate probe of ``request["user"]``'s model to a supervisor, with ``conn``:
        the supervisor answers on it from now on."""
        from hubml.extensions.tracking import gatesupervisor

        if len(fds) != 2:
            raise ValueError("gate needs two descriptors: the result channel and stderr")
        user = request.get("user")
        home = self.data_dir / "homes" / user if isinstance(user, str) else ""
        pw = self.account(user, str(home))
        reader = _peer_creds(conn) if self.isolated else None
        job = gatesupervisor.make_job(request, pw, reader)
        if self.gates is not None:
            self.gates.submit(job, [conn.fileno(), *fds])
        else:
            gatesupervisor.start_cold(job, [conn.fileno(), *fds])

    def handle(self, conn: socket.socket) -> bool:
        """Answer one request on ``conn``; False when the peer went away."""
        try:
            msg, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 4)
        except OSError:
            return False
        if not msg:
            return False
        try:
            request = json.loads(msg)
            op = request.get("op")
            if op == "start":
                answer = self.start(request, fds)
            elif op == "signal":
                answer = self.signal(request, fds)
            elif op == "gate":
                answer = self.gate(request, fds, conn)
            else:
                answer = {"error": f"unknown op {op!r}; start, signal or gate"}
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            log.warning("refused a request: %s", e)
            answer = {"error": str(e)}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if answer is None:  # handed over (a gate probe): its supervisor answers
            return False
        with contextlib.suppress(OSError):
            conn.send(json.dumps(answer).encode())
        return True


def _reap(signum, frame):
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def serve(runners: Runners, path: Path, warm_up=None) -> None:
    """Accept the jobs service's connections and answer them, one request at a time (this
    process forks: it keeps no threads). ``warm_up`` runs once the socket exists, so early
    requests wait in its backlog instead of finding no socket."""
    from hubml.extensions.common.parent import hub_gone, hub_parent

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(str(path))
    if runners.isolated:
        import pwd

        os.chown(path, 0, pwd.getpwnam(runners.accounts.PLATFORM_ACCOUNT).pw_gid)
        os.chmod(path, 0o660)
    else:
        os.chmod(path, 0o600)
    server.listen(64)
    if warm_up is not None:
        warm_up()
    signal.signal(signal.SIGCHLD, _reap)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    log.info(
        "runner service on %s (%s)",
        path,
        "a Unix account per user" if runners.isolated else "one shared account",
    )
    # a hub killed with SIGKILL cannot stop this process: it stops itself (runs go on)
    parent = hub_parent()
    while True:
        if hub_gone("hubml-runners", parent):
            sys.exit(0)
        try:
            events = sel.select(timeout=1 if parent else None)
        except InterruptedError:
            continue
        for key, _ in events:
            if key.fileobj is server:
                conn, _ = server.accept()
                uid = _peer_uid(conn)
                if uid not in runners.allowed_uids:
                    log.warning("refused a connection from uid %s", uid)
                    conn.close()
                    continue
                sel.register(conn, selectors.EVENT_READ)
            elif not runners.handle(key.fileobj):
                sel.unregister(key.fileobj)
                key.fileobj.close()


def main() -> int:
    from hubml.extensions.common.app import load_service_settings, setup_logging

    setup_logging()
    settings = load_service_settings()
    warm = settings.jobs.warm_runners > 0
    runners = Runners(settings, warm=warm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # runs go on: they are not ours to stop
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    from .runner import warm_up

    if runners.isolated and settings.tracking.enabled:
        from hubml.extensions.tracking.gatesupervisor import WarmProbes

        runners.gates = WarmProbes(runners.data_dir / runners.accounts.RUN_DIR / "gate-zygote")

    def ready():
        if runners.gates is not None:
            runners.gates.start()
        if warm:
            warm_up()

    serve(runners, socket_path(settings.data_dir), ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
