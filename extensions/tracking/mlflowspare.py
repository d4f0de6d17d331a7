"""A warm spare of ``mlflow server``: the same server, with MLflow already imported.

Started by the mlflow service while its server runs, it waits for one line on stdin. ``go`` makes
it the server the service supervises (a process group of its own, as a cold start is); anything
else, or stdin closing, ends it. It names itself ``hubml-mlprep`` while it prepares (a ``go`` then
waits for the preparation, still sooner than a cold start), ``hubml-mlspare`` once ready and
``hubml-mlflow`` once it serves, so operators (and tests) can tell them apart.

A cold ``mlflow server`` imports MLflow twice: once for its command line, which checks the store
and then starts a uvicorn worker, and once more in that worker. The spare does both imports before
anyone waits, and on ``go`` serves in its own process:

1. While it prepares, a forked child runs ``mlflow <arguments>`` up to the point where MLflow
   would start its worker, without opening the store, and reports the worker's command and
   environment. MLflow reads some of that environment at import time (the static prefix its routes are registered under, the allowed
   hosts of its security middleware), so the spare takes that environment first and only then
   imports MLflow's server application and hubml's wrapper of it.
2. On ``go`` it runs the command line again in this process, so the store is checked as at any
   start, and stops it at the same point. If the worker's command and environment are the ones
   learned (up to what MLflow reads only when serving: see ``LATE``), it runs that uvicorn command in this process.
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
PREPARING, WAITING, SERVING = b"hubml-mlprep", b"hubml-mlspare", b"hubml-mlflow"
# The parts of the worker's environment that may differ between the start the spare prepared for
# and the start it makes, because MLflow reads them only when it serves: its per-start boot id, and
# the tracking and registry URIs its store check sets (the learning run leaves the store alone)
LATE = {"_MLFLOW_SERVER_BOOT_ID", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}
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


def learn(argv: list[str]) -> tuple[tuple[list[str], dict[str, str]] | None, str]:
    """:func:`worker_of`, in a forked child, so that this process has not imported MLflow yet;
    with why not when there is no worker."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running anything of the parent's
        try:
            os.close(read)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            with os.fdopen(write, "w") as out:
                try:
                    report = {"worker": worker_of(argv, store=False)}
                except BaseException as e:  # noqa: BLE001 (SystemExit too: it is reported)
                    report = {"error": f"{type(e).__name__}: {e}"}
                json.dump(report, out)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as got:
        text = got.read()
    os.waitpid(pid, 0)
    try:
        report = json.loads(text)
    except ValueError:
        return None, "learning the worker's command failed without a report"
    if report.get("worker"):
        command, env = report["worker"]
        return (command, env), ""
    return None, report.get("error") or "mlflow server would start no worker"


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


def main(argv: list[str]) -> int:
    _name(PREPARING)
    learned, why_not = learn(argv)
    if learned is not None and not in_process(*learned):
        learned, why_not = None, "more than one worker, or MLflow's job execution is on"
    if learned is not None:
        os.environ.clear()
        os.environ.update(learned[1])
        # in this order: MLflow's server installs its security middleware when it sees uvicorn
        for module in ("uvicorn.main", "mlflow.server.fastapi_app", INTERNAL):
            importlib.import_module(module)
    import mlflow.cli  # the slow part, done before anybody waits for it

    _name(WAITING)
    if sys.stdin.readline().strip() != "go":
        return 0
    _name(SERVING)
    if learned is not None:
        now = worker_of(argv)
        if now is None:
            return 0
        command, env = now
        changed = sorted(k for k in {*env, *learned[1]} - LATE if env.get(k) != learned[1].get(k))
        if command == learned[0] and not changed:
            say("the warm spare serves MLflow in its own process")
            os.environ.update(env)
            import uvicorn.main

            return uvicorn.main.main(args=command[3:], prog_name="uvicorn", standalone_mode=True)
        why_not = "the worker's command or environment changed since the spare started: " + (
            ", ".join(changed) if changed else "its command"
        )
    say(f"the warm spare starts mlflow server as usual ({why_not})")
    # ``mlflow <argv>`` as the command line would run it (click exits with the server)
    return mlflow.cli.cli.main(args=argv, prog_name="mlflow", standalone_mode=True)


def say(line: str) -> None:
    print(f"hubml: {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
