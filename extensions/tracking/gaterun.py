"""Run a candidate model's gate probe in a child process that cannot harm the service.

The registry's inference and latency gates load the candidate model and predict on its input
example: that runs code its author chose. :func:`probe_isolated` runs it in a child process
(``python -I -m hubml.extensions.tracking.gaterun``) that

- runs as the model author's Unix account when the service is root (``account``), so it can do
  nothing the author's own notebooks cannot already do; as the current user otherwise;
- gets an environment built from scratch (``make_child_env``): no hub token, no front-door
  secret, no database URL; HOME, TMPDIR and the working folder are a fresh private temp dir
  (with a copy of the model when the child runs as another account), removed afterwards;
- is capped: address space (``RLIMIT_AS``), CPU seconds, file size, no core dumps, one BLAS
  thread, no GPU; its own session, so the whole process group is SIGKILLed at the timeout and
  after every probe (no process of it is left behind). The child sets its rlimits itself as
  its first act, before it reads the request; the account and session come from Popen's own
  ``user``/``group``/``start_new_session``, because ``preexec_fn`` can deadlock a threaded
  caller (the service calls this from a worker thread);
- can only talk back through a pipe the parent reads at most ``MAX_RESULT_BYTES`` from (and at
  most the last ``MAX_STDERR_BYTES`` of stderr), so a chatty model cannot exhaust the service.

Protocol. The parent writes ``{"model_dir": ..., "trials": N}`` on the child's stdin. The child
writes JSON lines on its stdout: ``{"phase": "load" | "predict" | "trials"}`` as it goes (so a
timeout can say what hung) and finally ``{"result": {...}}`` with ``ok``, ``error``,
``stage``, ``memory_error``, ``latencies_ms``, ``rows``, ``output`` and ``resources``. The
model's own prints go to stderr (the child moves fd 1 to fd 2 before loading the model).

Where the output is checked. The child sends a *description* of the first prediction (type,
shape, row count, each column's name, dtype and numpy dtype kind, capped at ``MAX_COLUMNS``)
and the signature's output ``(name, type)`` pairs; the parent decides with
:func:`output_problem`. The child could lie either way (it is the model's process), so this
is not about trust: the gates guard against mistakes, and the author controls the metrics
anyway. It keeps the verdict in one pure, unit-testable function of plain values, keeps the
child small, and never ships a whole prediction to the service. What protects the *service*
and other users is the process boundary, the account and the limits, not the verdict.

Memory cap. ``RLIMIT_AS`` caps virtual memory, which over-counts what is resident. Measured
(Python 3.11, mlflow 3.17, scikit-learn 1.9, numpy 2.4, pandas 3.1, pyarrow; a logistic
regression on iris loaded with ``mlflow.pyfunc``, 5-row input example, 20 trials): the child
peaks at 610 MiB of address space (VmPeak) for 271 MiB resident (VmHWM); it passes with a cap
of 640 MiB and fails at 512 MiB (scipy's shared objects cannot be mapped). A trivial
models-from-code pyfunc model peaks at 411 MiB (passes at 448, fails at 384). Two allocators
make the address space larger than the work: pyarrow's default pool (mimalloc), which pandas
uses to read the input example, reserves 1 GiB when the cap allows it (VmPeak 1.63 GiB; caps
of 1.5 and 1.6 GiB then failed while 1 GiB passed), hence ``ARROW_DEFAULT_MEMORY_POOL=system``;
and OpenBLAS reserves a buffer per thread (+80 MiB on 2 cores, more on big machines), hence the
thread caps. ``DEFAULT_MEMORY_MB`` (4 GiB) leaves a plain model over 3 GiB of headroom while a
model allocating 8 GiB fails at once with MemoryError. Libraries that reserve huge address
ranges (CUDA, some JITs) cannot run under ``RLIMIT_AS`` at all: gate those in a sandbox with a
cgroup memory limit instead.

What this does not protect against: the network (the child can connect wherever the host can,
without credentials), files readable by its account (world-readable files, ``/tmp``), a
grandchild that calls ``setsid`` to leave the process group (``RLIMIT_CPU`` still bounds its
CPU), fork bombs (``RLIMIT_NPROC`` counts all of an account's processes, so it is not set),
and disk filled with many files in TMPDIR. When the service is not root the child runs as the
service's own user: the scrubbed environment hides the service's secrets from ``os.environ``,
but the child can read the service's files and, unless the service is non-dumpable,
``/proc/<service pid>/environ``; that mode is only as safe as a shared trust domain.

Everything here blocks (it waits for the child): call it from a worker thread in an async
server. Importing this module imports no heavy library; the child imports mlflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_MB = 4096
MIN_MEMORY_MB = 256  # far below what mlflow needs (a trivial pyfunc model peaks at 411 MiB)
MAX_TRIALS = 10_000
# The child's CPU seconds are capped at this many per second of timeout: a backstop for a
# process that escaped the process group, generous for one busy thread plus mlflow's own
CPU_SECONDS_PER_TIMEOUT_SECOND = 4
MAX_FILE_MB = 1024  # RLIMIT_FSIZE: no single file the model writes grows past this
MAX_RESULT_BYTES = 1 << 20  # what the parent reads from the child's stdout
MAX_STDERR_BYTES = 16 << 10  # the tail of the child's stderr kept for reasons and logs
MAX_COLUMNS = 4096  # prediction columns described to the parent
MAX_TEXT = 300  # characters of an error or stderr line in a reason
# after the child exits or sends its result, how long grandchildren may keep the pipes open
EXIT_GRACE_S = 1.0
CHILD_MODULE = "hubml.extensions.tracking.gaterun"
# Per-process thread pools of the numeric libraries: one thread each keeps the address space
# small (OpenBLAS reserves a buffer per thread) and leaves the machine's cores to its users
THREAD_CAPS = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# text that means an allocation failed (Python, numpy, C++, glibc and the dynamic loader)
_OOM_MARKERS = (
    "MemoryError",
    "Unable to allocate",
    "std::bad_alloc",
    "Cannot allocate memory",
    "failed to map segment from shared object",
)


@dataclasses.dataclass
class GateProbe:
    """What one isolated probe found.

    ``ok``: the model loaded, predicted on its input example with an output that matches the
    signature, and ``trials`` further predictions succeeded. ``reason`` says so, or what went
    wrong, for people. ``latencies_ms`` has one entry per trial (``None`` unless ``ok``);
    ``rows`` is the input example's row count. ``output`` describes the first prediction
    (``output_type``, ``output_shape``, ``rows``, ``first_ms``, ``columns``, ``signature``);
    ``resources`` what the child used and ran as (``uid``, ``vm_peak_mb``, ``rss_peak_mb``,
    ``wall_s``, ``memory_cap_mb``, ``timeout_s``, ``returncode``). ``stderr_tail`` is the end of
    the child's stderr (the model's own prints and tracebacks), for the author and the log.
    """

    ok: bool
    reason: str
    latencies_ms: list[float] | None = None
    rows: int | None = None
    output: dict[str, Any] = dataclasses.field(default_factory=dict)
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    stderr_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- the verdict on a prediction's description (parent side, pure) ---------------------------

# numpy dtype kinds that satisfy each MLflow DataType (ints are acceptable where floats are declared)
_KINDS = {
    "boolean": "b",
    "integer": "iu",
    "long": "iu",
    "float": "fiu",
    "double": "fiu",
    "string": "OUST",
    "binary": "OS",
    "datetime": "M",
}


def output_problem(
    output: dict[str, Any], expected: list[tuple[str | None, str]], rows: int | None
) -> str | None:
    """Compare a prediction's description (see ``describe_output``) with the signature's
    outputs; return what is wrong, or ``None``.

    ``expected`` is the output schema as ``(column name or None, MLflow type name)`` pairs; type
    names outside ``_KINDS`` (objects, arrays, tensors' numpy dtypes) are not type-checked.
    Checks: row count, column count or names, and each column's dtype kind.
    """
    what = output.get("output_type", "object")
    if output.get("problem"):
        return str(output["problem"])
    length = output.get("rows")
    if length is None:
        return f"the prediction is a single {what}, not one value per input row"
    if rows is not None and length != rows:
        return f"the prediction has {length} rows for {rows} input rows"
    columns = output.get("columns")
    if not columns:  # tensors: only rows are checked
        return None
    by_name = {c[0]: c for c in columns}
    count = output.get("n_columns", len(columns))
    named = bool(expected) and all(n is not None for n, _ in expected)
    if named and output.get("labelled"):
        missing = [n for n, _ in expected if n not in by_name]
        if missing:
            shown = list(by_name) if count == len(columns) else [*by_name, "..."]
            return f"the prediction lacks the signature's output columns {missing} (it has {shown})"
        values = [by_name[n] for n, _ in expected]
    elif count != len(expected):
        return f"the prediction has {count} columns; the signature declares {len(expected)}"
    else:
        values = columns
    for (col_name, type_name), (_, dtype, kind) in zip(expected, values, strict=True):
        kinds = _KINDS.get(type_name)
        if kinds and kind not in kinds:
            label = f"column {col_name!r}" if col_name else "the output"
            return f"{label} has dtype {dtype}; the signature declares {type_name}"
    return None


# -- the parent ---------------------------------------------------------------------------


def make_child_env(home: str) -> dict[str, str]:
    """The child's whole environment: nothing of the service's (tokens, secrets, database
    URLs, MLflow settings) reaches it. ``home`` is its private temp dir (HOME, TMPDIR)."""
    return {
        "PATH": os.pathsep.join(
            [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
        ),
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # the gate measures CPU latency; the machine's GPUs belong to its users' servers
        "CUDA_VISIBLE_DEVICES": "",
        # pyarrow's default pool (mimalloc) reserves 1 GiB of address space when the cap
        # allows it and so makes RLIMIT_AS fail at caps that would otherwise pass
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        # no usage telemetry from a sandbox (MLflow and others honour this convention)
        "DO_NOT_TRACK": "true",
        **THREAD_CAPS,
    }


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


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(parent, name), uid, gid)


def _remove_tree(path: Path) -> None:
    """Remove the child's folder even where it took its own permissions away."""

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


@contextlib.contextmanager
def _workspace(model_dir: str, pw):
    """A private folder for the child, and the model directory it reads.

    As another account the child cannot reach the service's download folder: it gets a copy,
    owned by it (symlinks stay symlinks, so a link planted in the artifacts gives it nothing
    its own account could not read).
    """
    work = Path(tempfile.mkdtemp(prefix="hubml-gate-"))
    try:
        if pw is None:
            yield work, str(Path(model_dir).resolve())
            return
        model_copy = work / "model"
        shutil.copytree(model_dir, model_copy, symlinks=True)
        _chown_tree(work, pw.pw_uid, pw.pw_gid)
        yield work, str(model_copy)
    finally:
        _remove_tree(work)


@dataclasses.dataclass
class _Run:
    """What supervising the child gave: its messages and how it ended."""

    messages: list[dict[str, Any]]
    stderr: bytes
    returncode: int | None
    timed_out: bool
    overflow: bool
    wall_s: float


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its pid, which is also its process
    group's id, cannot be reused before we kill the group)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _supervise(proc: subprocess.Popen, request: bytes, timeout_s: float) -> _Run:
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        proc.stdin.write(request)  # a few hundred bytes: fits the pipe, never blocks
        proc.stdin.close()
    except OSError:  # the child died before reading: its exit status tells why
        pass
    messages: list[dict[str, Any]] = []
    pending = bytearray()
    received = 0
    stderr = bytearray()
    timed_out = overflow = False
    done_at = None  # when the child exited or sent its result
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    try:
        while sel.get_map():
            now = time.monotonic()
            if done_at is None and _exited(proc.pid):
                done_at = now
            if done_at is not None and now >= done_at + EXIT_GRACE_S:
                break  # a grandchild holds the pipes open: the group is killed below
            if now >= deadline:
                timed_out = done_at is None
                break
            for key, _ in sel.select(min(deadline - now, 0.2)):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                if key.data == "err":
                    stderr += data
                    del stderr[:-MAX_STDERR_BYTES]
                    continue
                received += len(data)
                if received > MAX_RESULT_BYTES:
                    overflow = True
                    break
                pending += data
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # not ours: the result is checked for shape later
                    if isinstance(message, dict):
                        messages.append(message)
                        if "result" in message and done_at is None:
                            done_at = time.monotonic()
            if overflow:
                break
    finally:
        # The leader is not reaped yet, so its pid still names the group: kill everything in it
        _kill_group(proc.pid)
        proc.wait()
        sel.close()
        for f in (proc.stdout, proc.stderr):
            f.close()
    return _Run(
        messages,
        bytes(stderr),
        proc.returncode,
        timed_out,
        overflow,
        round(time.monotonic() - started, 3),
    )


def probe_isolated(
    model_dir: str,
    trials: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    account: str | None = None,
) -> GateProbe:
    """The inference gate and the latencies for the latency gate, run in a sandboxed child.

    Loads the model in ``model_dir`` (a downloaded MLflow model directory) with
    ``mlflow.pyfunc``, predicts on its logged input example, checks the output against the
    signature's outputs and times ``trials`` further predictions. ``timeout_s`` bounds the
    whole child (starting Python and mlflow takes a few seconds of it); ``memory_mb`` caps its
    address space; ``account`` is the Unix account it runs as when this process is root
    (required then, ignored otherwise).

    Never raises for anything the model does: every failure is a ``GateProbe`` with ``ok``
    false and a reason. Raises ``ValueError`` for bad arguments (including root without
    ``account``). Blocks for up to ``timeout_s`` (plus a second): call it from a thread.
    """
    if not isinstance(trials, int) or isinstance(trials, bool) or not 0 <= trials <= MAX_TRIALS:
        raise ValueError(f"trials={trials!r}: expected a whole number from 0 to {MAX_TRIALS}")
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r}: expected a positive number of seconds")
    if not isinstance(memory_mb, int) or memory_mb < MIN_MEMORY_MB:
        raise ValueError(
            f"memory_mb={memory_mb!r}: expected a whole number of MiB, at least {MIN_MEMORY_MB}"
        )
    if not Path(model_dir, "MLmodel").is_file():
        return GateProbe(
            False, f"{model_dir} is not an MLflow model directory (it has no MLmodel file)"
        )
    pw = _child_account(account)
    cpu_s = math.ceil(timeout_s) * CPU_SECONDS_PER_TIMEOUT_SECOND + 10
    command = [
        sys.executable,
        "-I",  # no PYTHON* variables, no user site, no cwd on sys.path
        "-m",
        CHILD_MODULE,
        f"--memory-mb={memory_mb}",
        f"--cpu-s={cpu_s}",
        f"--file-mb={MAX_FILE_MB}",
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
    with _workspace(model_dir, pw) as (work, child_model_dir):
        request = json.dumps({"model_dir": child_model_dir, "trials": trials}).encode()
        try:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=make_child_env(str(work)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                **identity,
            )
        except OSError as e:
            log.error("could not start the gate probe: %s", e)
            return GateProbe(False, f"could not start the gate's sandbox: {e}")
        run = _supervise(proc, request, timeout_s)
    probe = _verdict(run, trials, timeout_s, memory_mb, cpu_s)
    log.info(
        "gate probe of %s as uid %s: %s (%.1f s)",
        model_dir,
        pw.pw_uid if pw else os.getuid(),
        probe.reason,
        run.wall_s,
    )
    return probe


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


_STAGE_REASONS = {
    "request": "the gate's sandbox failed: {error}",
    "meta": "{error}",
    "example": "could not load the model's input example: {error}",
    "load": "could not load the model: {error}",
    "predict": "test inference on the input example failed: {error}",
    "trial": "{error}",
}


def _no_result_reason(run: _Run, phase: str, stderr: str, timeout_s: float, cpu_s: int) -> str:
    """Why a child that sent no result failed, from how it ended."""
    if run.timed_out:
        if phase in ("start", "load"):
            return f"the model did not load within {timeout_s:g} s"
        return f"predict did not return within {timeout_s:g} s"
    code = run.returncode
    if code == -signal.SIGXCPU:
        return f"the model used more than {cpu_s} s of CPU time"
    if code == -signal.SIGXFSZ:
        return f"the model wrote a file larger than {MAX_FILE_MB} MiB"
    if code == -signal.SIGKILL:
        return "the model was killed (SIGKILL; the machine's out-of-memory killer?)"
    where = {"start": " while starting", "load": " while loading"}.get(phase, " in predict")
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = f": {_clip(lines[-1])}" if lines else ""
    return f"the model crashed{where} ({_describe_exit(code)}){last}"


def _plain_output(raw: dict[str, Any]) -> dict[str, Any]:
    """The child's description of the prediction, with every value of the type it should
    have (a ValueError or TypeError for anything else: the model's process wrote it)."""

    def optional(convert, value):
        return None if value is None else convert(value)

    columns = optional(lambda cs: [tuple(str(x) for x in c) for c in cs], raw["columns"])
    if columns and any(len(c) != 3 for c in columns):
        raise ValueError("a column is not (name, dtype, kind)")
    signature = [(optional(str, name), str(type_name)) for name, type_name in raw["signature"]]
    return {
        "rows": optional(int, raw["rows"]),
        "output_type": _clip(raw["output_type"]),
        "output_shape": [int(n) for n in raw["output_shape"]],
        "first_ms": float(raw["first_ms"]),
        "labelled": bool(raw["labelled"]),
        "columns": columns,
        "n_columns": int(raw["n_columns"]),
        "problem": optional(_clip, raw["problem"]),
        "signature": signature,
        "signature_text": _clip(raw["signature_text"]),
    }


def _verdict(run: _Run, trials: int, timeout_s: float, memory_mb: int, cpu_s: int) -> GateProbe:
    stderr = run.stderr.decode("utf-8", "replace")
    results = [m["result"] for m in run.messages if isinstance(m.get("result"), dict)]
    phases = [m["phase"] for m in run.messages if isinstance(m.get("phase"), str)]
    result = results[0] if results else None
    resources: dict[str, Any] = {
        "wall_s": run.wall_s,
        "memory_cap_mb": memory_mb,
        "timeout_s": timeout_s,
        "returncode": run.returncode,
    }
    if result is not None and isinstance(result.get("resources"), dict):
        for key in ("uid", "vm_peak_mb", "rss_peak_mb"):
            if isinstance(result["resources"].get(key), int | float):
                resources[key] = result["resources"][key]

    def fail(reason: str, **kw) -> GateProbe:
        return GateProbe(False, reason, resources=resources, stderr_tail=stderr, **kw)

    oom = f"the model ran out of memory (cap {memory_mb} MiB)"
    if run.overflow:
        return fail(f"the model wrote more than {MAX_RESULT_BYTES >> 20} MiB to the gate's results")
    if result is None:
        if not run.timed_out and any(marker in stderr for marker in _OOM_MARKERS):
            return fail(oom)
        return fail(
            _no_result_reason(run, phases[-1] if phases else "start", stderr, timeout_s, cpu_s)
        )
    try:
        rows = result["rows"]
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0):
            raise ValueError(f"rows {rows!r}")
        if not result["ok"]:
            error = str(result["error"] or "no reason given")
            if result["memory_error"] or any(marker in error for marker in _OOM_MARKERS):
                return fail(oom, rows=rows)
            template = _STAGE_REASONS.get(result["stage"], "the model failed: {error}")
            return fail(template.format(error=_clip(error)), rows=rows)
        latencies = [float(ms) for ms in result["latencies_ms"]]
        if len(latencies) != trials or not all(math.isfinite(ms) and ms >= 0 for ms in latencies):
            raise ValueError("latencies")
        output = _plain_output(result["output"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log.warning("malformed gate probe result (%s): %.500r", e, result)
        return fail("the gate's sandbox sent a malformed result")
    problem = output_problem(output, output["signature"], rows)
    if problem:
        reason = f"{problem} (signature outputs: {output['signature_text']})"
        return fail(reason, rows=rows, output=output)
    return GateProbe(
        True,
        f"predicted {rows} rows of the input example; output {output['output_type']} "
        "matches the signature",
        latencies_ms=latencies,
        rows=rows,
        output=output,
        resources=resources,
        stderr_tail=stderr,
    )


# -- the child ----------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _limit(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    """Hard limits too, so the model cannot raise them again."""
    import resource

    for which, soft, hard in (
        (resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
        # SIGXCPU at the soft limit, so the parent can tell it from other SIGKILLs
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 5),
        (resource.RLIMIT_FSIZE, file_mb << 20, file_mb << 20),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(which, (soft, hard))


def _schema_pairs(schema) -> list[tuple[str | None, str]]:
    """An MLflow output ``Schema`` as ``(name, type name)`` pairs for ``output_problem``."""
    # tensors declare numpy dtypes: compare them by kind like the column types
    tensor_types = {
        "b": "boolean",
        "i": "long",
        "u": "long",
        "f": "double",
        "U": "string",
        "S": "binary",
    }
    pairs = []
    for spec in schema.inputs:
        t = spec.type
        if hasattr(t, "to_numpy"):  # DataType
            type_name = t.name
        elif hasattr(t, "kind"):  # numpy dtype of a TensorSpec
            type_name = tensor_types.get(t.kind, str(t))
        else:  # Array, Object, Map, Any: not type-checked
            type_name = str(t)
        pairs.append((spec.name, type_name))
    return pairs


def describe_output(output: Any) -> dict[str, Any]:
    """What ``output_problem`` needs to know about a prediction, in plain JSON values."""
    import numpy as np

    described: dict[str, Any] = {
        "output_type": type(output).__name__,
        "output_shape": [int(s) for s in (getattr(output, "shape", ()) or ())],
        "labelled": False,
        "columns": None,
        "n_columns": 0,
        "rows": None,
        "problem": None,
    }
    if hasattr(output, "columns") and hasattr(output, "dtypes"):  # a DataFrame, without pandas
        described["labelled"] = True
        described["rows"] = len(output)
        names = list(output.columns)
        described["n_columns"] = len(names)
        described["columns"] = [
            [str(c), str(output[c].dtype), output[c].to_numpy().dtype.kind]
            for c in names[:MAX_COLUMNS]
        ]
        return described
    try:
        arr = np.asarray(output)
    except Exception as e:  # ragged lists and the like
        described["problem"] = f"the prediction ({type(output).__name__}) is not array-like: {e}"
        return described
    described["output_shape"] = [int(s) for s in arr.shape]
    if arr.ndim == 0:
        return described
    described["rows"] = int(arr.shape[0])
    if arr.ndim == 1:
        described["n_columns"] = 1
        described["columns"] = [["0", str(arr.dtype), arr.dtype.kind]]
    elif arr.ndim == 2:
        described["n_columns"] = int(arr.shape[1])
        described["columns"] = [
            [str(i), str(arr.dtype), arr.dtype.kind] for i in range(min(arr.shape[1], MAX_COLUMNS))
        ]
    return described


class _Failed(Exception):
    def __init__(self, stage: str, error: str):
        super().__init__(error)
        self.stage, self.error = stage, error


def _probe(model_dir: str, trials: int, emit) -> dict[str, Any]:
    """Load, predict once and describe, then time ``trials`` predictions (in the child)."""

    def attempt(stage: str, fn, what: str = ""):
        try:
            return fn()
        except MemoryError:
            raise
        except BaseException as e:  # the candidate's own code: SystemExit included
            raise _Failed(stage, f"{what}{_first_line(e)}") from None

    emit({"phase": "load"})
    from mlflow.models import Model
    from mlflow.pyfunc import load_model

    fix = "log the model with input_example=<a few input rows> so MLflow saves it and infers a signature"
    meta = attempt(
        "meta", lambda: Model.load(model_dir), "could not read the model's MLmodel file: "
    )
    if meta.saved_input_example_info is None:
        raise _Failed("meta", f"the model has no input example; {fix}")
    if meta.signature is None or meta.signature.outputs is None:
        raise _Failed("meta", f"the model has no signature with outputs; {fix}")
    example = attempt("example", lambda: meta.load_input_example(model_dir))
    try:
        rows = len(example)
    except TypeError:
        rows = None
    model = attempt("load", lambda: load_model(model_dir))
    emit({"phase": "predict"})
    started = time.perf_counter()
    output = attempt("predict", lambda: model.predict(example))
    first_ms = (time.perf_counter() - started) * 1000
    described = attempt(
        "predict", functools.partial(describe_output, output), "describing the prediction: "
    )
    del output  # the trials need not keep it
    described["first_ms"] = first_ms
    described["signature"] = _schema_pairs(meta.signature.outputs)
    described["signature_text"] = repr(meta.signature.outputs)[:MAX_TEXT]
    emit({"phase": "trials"})
    latencies = []
    predict = functools.partial(model.predict, example)
    for trial in range(1, trials + 1):
        started = time.perf_counter()
        # works once, then fails: as unfit to serve as failing at once
        attempt("trial", predict, f"prediction {trial + 1} on the input example failed: ")
        latencies.append((time.perf_counter() - started) * 1000)
    return {"latencies_ms": latencies, "rows": rows, "output": described}


def _resources() -> dict[str, Any]:
    used: dict[str, Any] = {"uid": os.getuid()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmPeak", "VmHWM"):  # kB
                name = "vm_peak_mb" if key == "VmPeak" else "rss_peak_mb"
                used[name] = round(int(value.split()[0]) / 1024, 1)
    return used


def _quiet_mlflow() -> None:
    """mlflow's hints and version warnings would bury the model's own last words in stderr
    (mlflow changes warning filters itself, so drop them where they are shown)."""
    import warnings

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}mlflow{os.sep}" not in filename:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> None:
    """The child: limits first, then the request from stdin, then JSON lines on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog=CHILD_MODULE)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--file-mb", type=int, default=MAX_FILE_MB)
    args = parser.parse_args(argv)
    _limit(args.memory_mb, args.cpu_s, args.file_mb)
    # The result channel is the original stdout; the model's prints go to stderr
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)

    def emit(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    result: dict[str, Any] = {
        "ok": False,
        "error": None,
        "stage": None,
        "memory_error": False,
        "latencies_ms": None,
        "rows": None,
        "output": None,
    }
    reserve = bytearray(8 << 20)  # freed on MemoryError so the report can still be written
    try:
        request = json.loads(sys.stdin.read(1 << 16))
        model_dir, trials = str(request["model_dir"]), int(request["trials"])
    except Exception as e:
        result.update(stage="request", error=f"bad request: {_first_line(e)}")
    else:
        _quiet_mlflow()
        try:
            result.update(ok=True, **_probe(model_dir, trials, emit))
        except MemoryError:
            del reserve
            result.update(stage="memory", error="MemoryError", memory_error=True)
        except _Failed as e:
            result.update(stage=e.stage, error=e.error)
        except Exception as e:  # mlflow itself could not be imported, and the like
            result.update(stage="load", error=_first_line(e))
    result["resources"] = _resources()
    emit({"result": result})
    # no atexit handlers, no waiting for the model's threads: the parent has what it needs
    os._exit(0)


if __name__ == "__main__":
    main()
