"""The verdict on a gate probe: what the sandboxed child reported, as a :class:`GateProbe`.

Pure functions of plain values (no process, no mlflow), so every reason a publisher can see is
unit-tested: :func:`output_problem` compares the child's *description* of its first prediction
with the signature's outputs, and :func:`verdict` turns how the child ended (its messages, its
stderr, its exit, whether it timed out or was refused) into one readable reason, e.g. ``predict
did not return within 20 s``, ``the model ran out of memory (cap 1024 MiB)``, ``the model
crashed in predict (signal SIGSEGV)``.

The child could lie either way (it is the model's process), so this is not about trust: the
gates guard against mistakes, and the author controls the metrics anyway. What protects the
*service* and other users is the process boundary, the account and the limits
(:mod:`.gatesandbox`), not the verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
from typing import Any

from .gaterun import MAX_FILE_MB, MAX_TEXT

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1 << 20  # what the parent reads from the child's result channel
MAX_STDERR_BYTES = 16 << 10  # the tail of the child's stderr kept for reasons and logs

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


@dataclasses.dataclass
class ChildRun:
    """How supervising one child went: its messages and how it ended. ``refused`` is why the
    sandbox would not start it at all (the runner service's answer)."""

    messages: list[dict[str, Any]]
    stderr: bytes
    returncode: int | None
    timed_out: bool
    overflow: bool
    wall_s: float
    refused: str | None = None


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


def _no_result_reason(run: ChildRun, phase: str, stderr: str, timeout_s: float, cpu_s: int) -> str:
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


def verdict(run: ChildRun, trials: int, timeout_s: float, memory_mb: int, cpu_s: int) -> GateProbe:
    """The probe's outcome from how its child ended (``cpu_s``: the CPU limit it had)."""
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
    if run.refused and result is None:  # never started, or its supervisor went away
        return fail(run.refused)
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
