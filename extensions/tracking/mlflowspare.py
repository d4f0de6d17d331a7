"""A warm spare of ``mlflow server``: the same server, with MLflow already imported.

Started by the mlflow service while its server runs, it waits for one line on stdin. ``go`` makes
it the server the service supervises (a process group of its own, as a cold start is); anything
else, or stdin closing, ends it. It names itself ``hubml-mlspare`` while it waits and
``hubml-mlflow`` once it serves, so operators (and tests) can tell the two apart.

A cold ``mlflow server`` imports MLflow twice: once for its command line, which checks the store
and then starts a uvicorn worker, and once more in that worker. The spare does both imports before
anyone waits, and on ``go`` serves in its own process:

1. While it waits, a forked child runs ``mlflow <arguments>`` up to the point where MLflow would
   start its worker, without opening the store, and reports the worker's command and environment. MLflow reads some of that
   environment at import time (the static prefix its routes are registered under, the allowed
   hosts of its security middleware), so the spare takes that environment first and only then
   imports MLflow's server application and hubml's wrapper of it.
2. On ``go`` it runs the command line again in this process, so the store is checked as at any
   start, and stops it at the same point. If the worker's command and environment are the ones
   learned (up to MLflow's per-start boot id), it runs that uvicorn command in this process.
   Otherwise (more than one worker, MLflow's job execution on, anything unforeseen) it runs
   ``mlflow server`` as a cold start would, only with its command line already imported.

Measured (``python -m benchmarks faults``, ``docs/RELIABILITY.md``): back after a kill in a
median of about 6 s instead of 11 s for a cold start.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import sys

PR_SET_NAME = 15
WAITING, SERVING = b"hubml-mlspare", b"hubml-mlflow"
# MLflow gives every start an id of its own; it is the only part of the worker's environment that
# may differ between the start the spare prepared for and the start it makes
PER_START = {"_MLFLOW_SERVER_BOOT_ID"}
INTERNAL = "hubml.extensions.tracking.internal"  # the app uvicorn serves (``--app-name hubml``)


def _name(name: bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


class _Worker(Exception):
    """Raised where ``mlflow server`` would start its worker: the worker's command and environment."""

    def __init__(self, command: list[str], env: dict[str, str]):
        super().__init__(command)
        self.command, self.env = command, env


def worker_of(argv: list[str], store: bool = True) -> tuple[list[str], dict[str, str]] | None:
    """Run ``mlflow <argv>`` up to the start of its uvicorn worker, and return that worker's
    command and environment; None if it returned without one. ``store=False`` leaves the store
    alone: MLflow's start-up makes a missing SQLite store, and only the service decides when a
    store may be opened (:mod:`.store`)."""
    import mlflow.cli
    import mlflow.server
    import mlflow.server.handlers
    import mlflow.tracing.trace_rollup_service as rollups

    def stop_here(cmd, extra_env=None, **_):
        raise _Worker([str(c) for c in cmd], {**os.environ, **(extra_env or {})})

    def untouched(*_, **__):
        return None

    patches = [(mlflow.server, "_exec_cmd", stop_here)]
    if not store:
        patches += [
            (mlflow.server.handlers, "initialize_backend_stores", untouched),
            (rollups, "validate_sql_trace_rollup_startup", untouched),
        ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        mlflow.cli.cli.main(args=argv, prog_name="mlflow", standalone_mode=False)
    except _Worker as w:
        return w.command, w.env
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
    return None


def learn(argv: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """:func:`worker_of`, in a forked child, so that this process has not imported MLflow yet."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running anything of the parent's
        code = 1
        try:
            os.close(read)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            with os.fdopen(write, "w") as out:
                json.dump(worker_of(argv, store=False), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as got:
        text = got.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        return None
    found = json.loads(text)
    return (found[0], found[1]) if found else None


def in_process(command: list[str], env: dict[str, str]) -> bool:
    """Whether this worker can run in this process: one uvicorn worker and nothing that MLflow
    would start beside it."""
    if command[1:3] != ["-m", "uvicorn"] or "--reload" in command:
        return False
    try:
        workers = command[command.index("--workers") + 1]
    except (ValueError, IndexError):
        return False
    jobs = env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true").strip().lower()
    return workers == "1" and jobs in ("false", "0")


def same(a: dict[str, str], b: dict[str, str]) -> bool:
    strip = lambda env: {k: v for k, v in env.items() if k not in PER_START}  # noqa: E731
    return strip(a) == strip(b)


def main(argv: list[str]) -> int:
    _name(WAITING)
    learned = learn(argv)
    if learned is not None and in_process(*learned):
        os.environ.clear()
        os.environ.update(learned[1])
        # in this order: MLflow's server installs its security middleware when it sees uvicorn
        for module in ("uvicorn.main", "mlflow.server.fastapi_app", INTERNAL):
            importlib.import_module(module)
    else:
        learned = None
    import mlflow.cli  # the slow part, done before anybody waits for it

    if sys.stdin.readline().strip() != "go":
        return 0
    _name(SERVING)
    if learned is None:
        # ``mlflow <argv>`` as the command line would run it (click exits with the server)
        return mlflow.cli.cli.main(args=argv, prog_name="mlflow", standalone_mode=True)
    now = worker_of(argv)
    if now is None:
        return 0
    command, env = now
    if command != learned[0] or not same(env, learned[1]):
        print(
            "hubml: the mlflow server's worker changed since the spare started; starting it as usual",
            file=sys.stderr,
        )
        return mlflow.cli.cli.main(args=argv, prog_name="mlflow", standalone_mode=True)
    os.environ.update(env)
    import uvicorn.main

    return uvicorn.main.main(args=command[3:], prog_name="uvicorn", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
