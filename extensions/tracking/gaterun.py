"""The gate probe's child: load a candidate model, predict on its input example, time it.

This is the process that runs code the model's author chose. It never runs inside a service:
:mod:`.gatesandbox` (the service's side) starts it, either as ``python -I -m
hubml.extensions.tracking.gaterun`` (a fresh interpreter) or, through the runner service, as a
fork of a warm process that imported mlflow once (:mod:`.gatesupervisor`); both end in
:func:`respond`. Whoever starts it gives it the environment of :func:`make_child_env` and
nothing else of theirs.

Protocol. The request is ``{"model_dir": ..., "trials": N}`` (on stdin for a fresh
interpreter, in memory for a fork). The child writes JSON lines on its result channel:
``{"phase": "load" | "predict" | "trials"}`` as it goes (so a timeout can say what hung) and
finally ``{"result": {...}}`` with ``ok``, ``error``, ``stage``, ``memory_error``,
``latencies_ms``, ``rows``, ``output`` and ``resources``. The model's own prints go to stderr:
the result channel is a descriptor of its own (a fresh interpreter moves fd 1 to fd 2 before
loading the model).

Limits first: :func:`main` sets its rlimits (``RLIMIT_AS``, CPU, file size, no core dumps)
before it reads the request; a fork gets them from its supervisor before it is handed the
request. The child sends a *description* of the first prediction (:func:`describe_output`),
never the prediction itself; the verdict is the parent's (``gatesandbox.output_problem``).

Importing this module imports no heavy library; :func:`respond` imports mlflow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

CHILD_MODULE = "hubml.extensions.tracking.gaterun"
MAX_FILE_MB = 1024  # RLIMIT_FSIZE: no single file the model writes grows past this
MAX_COLUMNS = 4096  # prediction columns described to the parent
MAX_TEXT = 300  # characters of an error or stderr line in a reason
MAX_REQUEST_BYTES = 1 << 16
# what the NVIDIA device plugin and container runtime tell a pod's processes about its GPUs
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES")
# Per-process thread pools of the numeric libraries: one thread each keeps the address space
# small (OpenBLAS reserves a buffer per thread) and leaves the machine's cores to its users
THREAD_CAPS = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# What a warm process imports once so that a fork of it loads a model at once: mlflow's pyfunc
# loader and the sklearn flavour (with skops, its safe format: 3.6 s to import). Each is
# optional: a missing one is imported, if a model needs it, by that model's child.
WARM_MODULES = (
    "numpy",
    "pandas",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "sklearn.linear_model",
    "skops.io",
)


def make_child_env(home: str, gpu: bool = False) -> dict[str, str]:
    """The child's whole environment: nothing of the service's (tokens, secrets, database
    URLs, MLflow settings) reaches it. ``home`` is its private temp dir (HOME, TMPDIR).
    ``gpu``: a gate pod on a GPU profile, whose GPUs are the model's (the device plugin's
    variables pass through); otherwise the child sees no GPU."""
    devices = (
        {k: v for k, v in os.environ.items() if k in GPU_VARIABLES}
        if gpu
        else {"CUDA_VISIBLE_DEVICES": ""}
    )
    return {
        "PATH": os.pathsep.join(
            [os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]
        ),
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # on one machine the gate measures CPU latency; the GPUs belong to users' servers
        **devices,
        # pyarrow's default pool (mimalloc) reserves 1 GiB of address space when the cap
        # allows it and so makes RLIMIT_AS fail at caps that would otherwise pass
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        # pyarrow's jemalloc starts a background thread at import; a warm process must have
        # one thread only, or forking it could copy a lock some other thread held
        "JE_ARROW_MALLOC_CONF": "background_thread:false",
        # no usage telemetry from a sandbox (MLflow and others honour this convention)
        "DO_NOT_TRACK": "true",
        **THREAD_CAPS,
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def set_limits(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    """Hard limits too, so the model cannot raise them again. ``memory_mb`` 0: no address-space
    cap (a gate pod on a GPU profile, capped by its container's memory limit instead)."""
    import resource

    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    for which, soft, hard in (
        # SIGXCPU at the soft limit, so the parent can tell it from other SIGKILLs
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 5),
        (resource.RLIMIT_FSIZE, file_mb << 20, file_mb << 20),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        resource.setrlimit(which, (soft, hard))


def _schema_pairs(schema) -> list[tuple[str | None, str]]:
    """An MLflow output ``Schema`` as ``(name, type name)`` pairs for the parent's
    ``output_problem`` (the one place that turns a signature into plain values)."""
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


def warm_up() -> None:
    """Import what loading a typical model needs and fill mlflow's caches (a warm process)."""
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # an optional flavour: its models import it themselves
            logging.getLogger(__name__).info("gate warm-up: %s not imported (%s)", name, e)
    with contextlib.suppress(Exception):
        # which package provides which module: mlflow builds this map (3 s) on the first load
        # of a model, to compare the model's requirements with this environment
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    _quiet_mlflow()


def probe_result(request: Any, emit, *, quiet: bool = False) -> dict[str, Any]:
    """The probe's result for ``request`` (a dict, or the exception that reading it raised);
    ``emit`` sends the phases. ``quiet`` drops mlflow's warnings (a child of its own)."""
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
        if isinstance(request, BaseException):  # the request could not be read
            raise request
        model_dir, trials = str(request["model_dir"]), int(request["trials"])
    except Exception as e:
        result.update(stage="request", error=f"bad request: {_first_line(e)}")
    else:
        if quiet:
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
    return result


def respond(request: Any, channel) -> None:
    """Answer ``request`` on ``channel`` (a text file) and exit the process: never returns."""

    def emit(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    result = probe_result(request, emit, quiet=True)
    with contextlib.suppress(OSError, ValueError):
        emit({"result": result})
    # no atexit handlers, no waiting for the model's threads: the parent has what it needs
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """A fresh interpreter: limits first, then the request from stdin, then :func:`respond`."""
    import argparse

    parser = argparse.ArgumentParser(prog=CHILD_MODULE)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--file-mb", type=int, default=MAX_FILE_MB)
    args = parser.parse_args(argv)
    set_limits(args.memory_mb, args.cpu_s, args.file_mb)
    # The result channel is the original stdout; the model's prints go to stderr
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        request = json.loads(sys.stdin.read(MAX_REQUEST_BYTES))
    except Exception as e:
        request = e
    respond(request, channel)


if __name__ == "__main__":
    main()
