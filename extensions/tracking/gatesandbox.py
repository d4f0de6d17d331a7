"""Run a candidate model's gate probe where it cannot harm the service: the service's side.

The registry's inference and latency gates load the candidate model and predict on its input
example: that runs code its author chose. The mlflow service holds the hub token, the front
door's secret and database URLs, so the model never runs in it. :class:`GateSandbox` runs it in
a child process (:mod:`.gaterun`), one of two ways:

- **through the runner service** (``runner_socket``; the hub is root, so the service is the
  platform account and cannot become anyone): :func:`probe_via_runner` asks
  ``hubml-runners`` (root, :mod:`hubml.extensions.jobs.runnerd`) to run the probe as the
  publisher's own Unix account, passing the two descriptors the child writes to (its result
  channel and its stderr, ``SCM_RIGHTS``). The runner service copies the model into a private
  folder of that account, runs the probe there (a fork of a process that imported mlflow once,
  or a fresh interpreter while that one starts) and kills it at the timeout or as soon as this
  side hangs up; see :mod:`.gatesupervisor`. The child cannot read this process's memory,
  environment or files: it is another uid;
- **directly** (no runner socket: the hub is not root, or ``hub.isolation: shared``, one trust
  domain): :func:`probe_isolated` starts ``python -I -m hubml.extensions.tracking.gaterun``
  itself, as this process's user, or as ``account`` when this process is root.

Either way the child gets an environment built from scratch (:func:`.gaterun.make_child_env`:
no hub token, no front-door secret, no database URL); HOME, TMPDIR and its working folder are a
fresh private temp dir, removed afterwards; it is capped: address space (``RLIMIT_AS``), CPU
seconds, file size, no core dumps, one BLAS thread, no GPU; it leads its own session, so its
whole process group is SIGKILLed at the timeout and after every probe; and it talks back only
through pipes this side reads at most ``MAX_RESULT_BYTES`` (and the last ``MAX_STDERR_BYTES`` of
stderr) from. The verdict is :mod:`.gateverdict`'s.

Memory cap. ``RLIMIT_AS`` caps virtual memory, which over-counts what is resident. Measured
(Python 3.11, mlflow 3.17, scikit-learn 1.9, numpy 2.4, pandas 3.1, pyarrow; a logistic
regression on iris loaded with ``mlflow.pyfunc``, 5-row input example, 20 trials): a fresh child
peaks at 610 MiB of address space (VmPeak) for 271 MiB resident (VmHWM); it passes with a cap
of 640 MiB and fails at 512 MiB (scipy's shared objects cannot be mapped). A trivial
models-from-code pyfunc model peaks at 411 MiB (passes at 448, fails at 384). A fork of the
runner service's warm process starts with what that process imported (about 560 MiB with the
sklearn flavour). Two allocators make the address space larger than the work: pyarrow's
default pool (mimalloc), which pandas uses to read the input example, reserves 1 GiB when the
cap allows it, hence ``ARROW_DEFAULT_MEMORY_POOL=system``; and OpenBLAS reserves a buffer per
thread, hence the thread caps. ``DEFAULT_MEMORY_MB`` (4 GiB) leaves a plain model over 3 GiB of
headroom while a model allocating 8 GiB fails at once with MemoryError. Libraries that reserve
huge address ranges (CUDA, some JITs) cannot run under ``RLIMIT_AS`` at all: on Kubernetes a
GPU profile's gate pod (:mod:`.gatekube`) has the container's memory limit as its cap instead.

What this does not protect against: the network (the child can connect wherever the host can,
without credentials), files readable by its account (world-readable files, ``/tmp``, and, run
through the runner service, the publisher's own home), a grandchild that calls ``setsid`` to
leave the process group (``RLIMIT_CPU`` still bounds its CPU), fork bombs (``RLIMIT_NPROC``
counts all of an account's processes, so it is not set), and disk filled with many files in
TMPDIR. Run directly, the child is the service's own user: the scrubbed environment hides the
service's secrets from ``os.environ``, but the child can read the service's files and
``/proc/<service pid>/environ``; that mode is only as safe as a shared trust domain.

Everything here blocks (it waits for the child): call it from a worker thread in an async
server. Importing this module imports no heavy library.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import gaterun
from .gateverdict import ChildRun, GateProbe, output_problem, verdict
from .gatewatch import LocalChild, RunnerChild, supervise

log = logging.getLogger(__name__)

__all__ = [
    "GateProbe",
    "GateSandbox",
    "InProcessGates",
    "output_problem",
    "probe_in_process",
    "probe_isolated",
    "probe_via_runner",
]

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_MB = 4096
MIN_MEMORY_MB = 256  # far below what mlflow needs (a trivial pyfunc model peaks at 411 MiB)
MAX_MEMORY_MB = 1 << 20
MAX_TIMEOUT_S = 3600.0
MAX_TRIALS = 10_000
# The child's CPU seconds are capped at this many per second of timeout: a backstop for a
# process that escaped the process group, generous for one busy thread plus mlflow's own
CPU_SECONDS_PER_TIMEOUT_SECOND = 4
# how much longer than the timeout this side waits for the runner service, which copies the
# model first and may be starting its warm process
RUNNER_SLACK_S = 60.0
CONNECT_TIMEOUT_S = 10.0
# the mlflow service's environment: the runner service's socket, set by the hub when it is root
GATE_RUNNER_ENV = "HUBML_GATE_RUNNER"


def cpu_seconds(timeout_s: float) -> int:
    return math.ceil(timeout_s) * CPU_SECONDS_PER_TIMEOUT_SECOND + 10


def check_limits(trials: Any, timeout_s: Any, memory_mb: Any) -> None:
    """``ValueError`` naming the argument unless all three are in range."""
    if not isinstance(trials, int) or isinstance(trials, bool) or not 0 <= trials <= MAX_TRIALS:
        raise ValueError(f"trials={trials!r}: expected a whole number from 0 to {MAX_TRIALS}")
    if not (
        isinstance(timeout_s, int | float)
        and not isinstance(timeout_s, bool)
        and math.isfinite(timeout_s)
        and 0 < timeout_s <= MAX_TIMEOUT_S
    ):
        raise ValueError(
            f"timeout_s={timeout_s!r}: expected a positive number of seconds, at most {MAX_TIMEOUT_S:g}"
        )
    if (
        not isinstance(memory_mb, int)
        or isinstance(memory_mb, bool)
        or not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB
    ):
        raise ValueError(
            f"memory_mb={memory_mb!r}: expected a whole number of MiB from {MIN_MEMORY_MB} "
            f"to {MAX_MEMORY_MB}"
        )


def _not_a_model(model_dir: str) -> GateProbe | None:
    if Path(model_dir, "MLmodel").is_file():
        return None
    return GateProbe(
        False, f"{model_dir} is not an MLflow model directory (it has no MLmodel file)"
    )


# -- directly: a child of this process --------------------------------------------------------


def _child_account(account: str | None):
    """The ``pwd`` entry the child becomes, or ``None`` to run as this process's user."""
    if os.geteuid() != 0:
        if account:
            log.debug("not root: the gate probe runs as this process's user, not %s", account)
        return None
    import pwd

    if not account:
        raise ValueError(
            "probe_isolated runs as root: pass account=<the model author's Unix account> so "
            "the model's code does not run as root"
        )
    try:
        pw = pwd.getpwnam(account)
    except KeyError:
        raise ValueError(f"account={account!r}: no such Unix account") from None
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        raise ValueError(f"account={account!r}: refusing to run a model with root's uid or gid")
    return pw


def remove_tree(path: str | Path) -> None:
    """Remove the child's folder even where it took its own permissions away."""
    import shutil

    def retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
        with contextlib.suppress(FileNotFoundError):
            func(p)

    try:
        shutil.rmtree(path, onerror=retry)
    except OSError:
        log.warning("could not remove the gate probe's folder %s", path, exc_info=True)


def _workspace(model_dir: str, pw):
    """A private folder for the child, and the model directory it reads (a copy owned by the
    child's account when that is another; symlinks stay symlinks, so a link planted in the
    artifacts gives it nothing its own account could not read)."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="hubml-gate-"))
    if pw is None:
        return work, str(Path(model_dir).resolve())
    try:
        model_copy = work / "model"
        shutil.copytree(model_dir, model_copy, symlinks=True)
        os.chown(work, pw.pw_uid, pw.pw_gid)
        for parent, dirs, files in os.walk(work):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(parent, name), pw.pw_uid, pw.pw_gid)
    except BaseException:
        remove_tree(work)
        raise
    return work, str(model_copy)


def probe_isolated(
    model_dir: str,
    trials: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    account: str | None = None,
) -> GateProbe:
    """The inference gate and the latencies for the latency gate, run in a sandboxed child of
    this process.

    Loads the model in ``model_dir`` (a downloaded MLflow model directory) with
    ``mlflow.pyfunc``, predicts on its logged input example, checks the output against the
    signature's outputs and times ``trials`` further predictions. ``timeout_s`` bounds the
    whole child (starting Python and mlflow takes seconds of it); ``memory_mb`` caps its
    address space; ``account`` is the Unix account it runs as when this process is root
    (required then, ignored otherwise).

    Never raises for anything the model does: every failure is a ``GateProbe`` with ``ok``
    false and a reason. Raises ``ValueError`` for bad arguments (including root without
    ``account``). Blocks for up to ``timeout_s`` (plus a second): call it from a thread.
    """
    check_limits(trials, timeout_s, memory_mb)
    if problem := _not_a_model(model_dir):
        return problem
    pw = _child_account(account)
    run = run_child(model_dir, trials, timeout_s=timeout_s, memory_mb=memory_mb, pw=pw)
    probe = verdict(run, trials, timeout_s, memory_mb, cpu_seconds(timeout_s))
    log.info(
        "gate probe of %s as uid %s: %s (%.1f s)",
        model_dir,
        pw.pw_uid if pw else os.getuid(),
        probe.reason,
        run.wall_s,
    )
    return probe


def run_child(
    model_dir: str,
    trials: int,
    *,
    timeout_s: float,
    memory_mb: int,
    pw=None,
    address_cap: bool = True,
    gpu: bool = False,
) -> ChildRun:
    """Start ``python -I -m ...gaterun`` on ``model_dir`` (as ``pw``'s account when given), feed
    it the request and supervise it to the end: how it went, for :func:`.gateverdict.verdict`.
    ``address_cap`` false leaves ``RLIMIT_AS`` unset (a container's memory limit caps it
    instead: CUDA cannot start under it); ``gpu`` leaves the GPUs this process sees visible."""
    cpu_s = cpu_seconds(timeout_s)
    command = [
        sys.executable,
        "-I",  # no PYTHON* variables, no user site, no cwd on sys.path
        "-m",
        gaterun.CHILD_MODULE,
        f"--memory-mb={memory_mb if address_cap else 0}",
        f"--cpu-s={cpu_s}",
        f"--file-mb={gaterun.MAX_FILE_MB}",
    ]
    # Identity and session through Popen's own arguments rather than preexec_fn: those are
    # applied in C between fork and exec, which is safe in a threaded service (preexec_fn is
    # not). The child applies its rlimits itself, first thing, before it reads the request.
    identity: dict[str, Any] = {}
    if pw is not None:
        identity = {
            "user": pw.pw_uid,
            "group": pw.pw_gid,
            "extra_groups": [pw.pw_gid],
            "umask": 0o077,
        }
    work, child_model_dir = _workspace(model_dir, pw)
    try:
        request = json.dumps({"model_dir": child_model_dir, "trials": trials}).encode()
        try:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=gaterun.make_child_env(str(work), gpu=gpu),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                **identity,
            )
        except OSError as e:
            log.error("could not start the gate probe: %s", e)
            return ChildRun(
                [], b"", None, False, False, 0.0, refused=f"could not start the gate's sandbox: {e}"
            )
        try:
            proc.stdin.write(request)  # a few hundred bytes: fits the pipe, never blocks
            proc.stdin.close()
        except OSError:  # the child died before reading: its exit status tells why
            pass
        try:
            return supervise(
                proc.stdout.fileno(), proc.stderr.fileno(), LocalChild(proc), timeout_s
            )
        finally:
            proc.stdout.close()
            proc.stderr.close()
    finally:
        remove_tree(work)


# -- through the runner service: as the publisher's account -----------------------------------


def probe_via_runner(
    runner_socket: str | Path,
    user: str,
    model_dir: str,
    trials: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> GateProbe:
    """Like :func:`probe_isolated`, run by the runner service as hub user ``user``'s Unix
    account (refused for names that are not hub user names; never root or a system account).

    The runner service reads ``model_dir`` with this process's permissions (its peer uid) and
    copies it into a private folder of the account, removed afterwards. If the runner service
    does not answer the probe fails with a reason (publishing again is the remedy); it never
    falls back to running the model here.
    """
    check_limits(trials, timeout_s, memory_mb)
    if problem := _not_a_model(model_dir):
        return problem
    request = {
        "op": "gate",
        "user": user,
        "model_dir": str(Path(model_dir).resolve()),
        "trials": trials,
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
    }
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        try:
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.connect(str(runner_socket))
            socket.send_fds(conn, [json.dumps(request).encode()], [out_w, err_w])
        except OSError as e:
            log.error("the runner service (%s) did not take the gate probe: %s", runner_socket, e)
            return GateProbe(
                False,
                "the gate's sandbox (the runner service) is not answering "
                f"({e.strerror or e}); publish again in a moment",
            )
        finally:
            os.close(out_w)  # the child holds the write ends now: EOF once it is gone
            os.close(err_w)
        conn.setblocking(False)
        run = supervise(out_r, err_r, RunnerChild(conn), timeout_s + RUNNER_SLACK_S)
    finally:
        conn.close()
        os.close(out_r)
        os.close(err_r)
    probe = verdict(run, trials, timeout_s, memory_mb, cpu_seconds(timeout_s))
    log.info(
        "gate probe of %s as %s's account (uid %s): %s (%.1f s)",
        model_dir,
        user,
        probe.resources.get("uid"),
        probe.reason,
        run.wall_s,
    )
    return probe


# -- in this process: the baseline, for benchmarks and trusted single-user use ----------------


def probe_in_process(model_dir: str, trials: int) -> GateProbe:
    """The same probe and verdict, run in this process: no isolation at all (the model can read
    everything this process holds). For benchmarks and for a one-person setup only."""
    if problem := _not_a_model(model_dir):
        return problem
    started = time.monotonic()
    result = gaterun.probe_result({"model_dir": model_dir, "trials": trials}, lambda _m: None)
    run = ChildRun(
        [{"result": json.loads(json.dumps(result))}],
        b"",
        0,
        False,
        False,
        round(time.monotonic() - started, 3),
    )
    return verdict(run, trials, math.inf, 0, 0)


# -- what the registry holds ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GateSandbox:
    """How the registry's gates run a candidate: through the runner service as the
    publisher's account (``runner_socket``), else directly as this process's user (as
    ``<unix_user_prefix><publisher>`` when this process is root), under ``timeout_s`` and
    ``memory_mb`` (the settings ``tracking.gate_timeout_s`` and ``tracking.gate_memory_mb``).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    runner_socket: str | None = None
    unix_user_prefix: str = "hubml-"

    def __post_init__(self):
        check_limits(0, self.timeout_s, self.memory_mb)

    @classmethod
    def from_settings(cls, settings, environ=None) -> GateSandbox:
        """The mlflow service's sandbox: its settings, and the runner service's socket when the
        hub passed one (``HUBML_GATE_RUNNER``: the hub is root)."""
        environ = os.environ if environ is None else environ
        return cls(
            timeout_s=float(settings.tracking.gate_timeout_s),
            memory_mb=int(settings.tracking.gate_memory_mb),
            runner_socket=environ.get(GATE_RUNNER_ENV) or None,
            unix_user_prefix=settings.hub.unix_user_prefix,
        )

    def probe(
        self, model_dir: str, trials: int, publisher: str, *, profile=None, groups=()
    ) -> GateProbe:
        """Probe the model in ``model_dir`` for hub user ``publisher`` (blocks: a thread).
        ``profile`` and ``groups`` choose a gate pod's profile on Kubernetes; here the probe
        runs on this machine's CPU whatever the profile."""
        if self.runner_socket:
            return probe_via_runner(
                self.runner_socket,
                publisher,
                model_dir,
                trials,
                timeout_s=self.timeout_s,
                memory_mb=self.memory_mb,
            )
        account = None
        if os.geteuid() == 0:
            from hubml.hub_config.accounts import unix_name

            account = unix_name(publisher, self.unix_user_prefix)
        try:
            return probe_isolated(
                model_dir,
                trials,
                timeout_s=self.timeout_s,
                memory_mb=self.memory_mb,
                account=account,
            )
        except ValueError as e:  # as root: the publisher has no account on this machine
            return GateProbe(False, f"the gate cannot run the model as {publisher}: {e}")


class InProcessGates:
    """Gates in this very process, as before the sandbox: the benchmarks' baseline only."""

    def probe(
        self, model_dir: str, trials: int, publisher: str, *, profile=None, groups=()
    ) -> GateProbe:
        return probe_in_process(model_dir, trials)
