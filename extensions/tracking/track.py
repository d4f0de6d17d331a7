"""``hubml.extensions.tracking.track``: fast MLflow logging for training loops (issue 3).

    from hubml.extensions.tracking import track

    with track.start_run(experiment="mnist", run_name="baseline"):
        track.log_params({"lr": 1e-3, "batch": 64})
        for step in range(10_000):
            track.log_metric("loss", loss, step=step)   # returns at once, sent in batches
    # leaving the block sends what is left, then ends the run

The ``log_*`` calls go to the run started by ``start_run`` or, when there is none, to MLflow's
active run (``mlflow.start_run()`` called directly); like ``mlflow.log_metric``, they start a run
when none is active. Each run has one ``fastlog.BatchLogger`` whose daemon thread sends
``log_batch`` requests, keeps the data through server outages and retries it.

When everything is sent:
- ``start_run``'s block exit waits (``flush_timeout``, default 60 s) before ending the run. If
  MLflow is unreachable then, the run still ends (MLflow's ``end_run`` has its own retries) and
  the backlog keeps being retried in the background, with a warning saying so.
- ``flush()`` waits for all runs; ``status()`` reports the backlog, retries and outage.
- at interpreter (kernel) exit an ``atexit`` hook sends what is left, for at most
  ``HUBML_TRACK_EXIT_TIMEOUT`` seconds (default 10); what cannot be sent is reported on stderr.
- a run ended with ``mlflow.end_run()`` directly keeps its logger: the data queued for it is
  still sent (MLflow accepts data for finished runs) by the thread or at exit; call
  ``track.flush()`` before ``mlflow.end_run()`` to have it all on the server right then.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from hubml.extensions.tracking.fastlog import BatchLogger

_lock = threading.Lock()
_loggers: dict[str, BatchLogger] = {}  # run_id -> its logger, while it may hold data
# The logger used last: the fast path of log calls, and what status() reports (also once closed).
_current: BatchLogger | None = None


def logger(run_id: str | None = None) -> BatchLogger:
    """The ``BatchLogger`` of ``run_id`` or of MLflow's active run (started if none is active,
    as ``mlflow.log_metric`` does)."""
    global _current
    if run_id is None:
        import mlflow

        run = mlflow.active_run() or mlflow.start_run()
        run_id = run.info.run_id
    current = _current
    if current is not None and current.run_id == run_id and not current.closed:
        return current
    with _lock:
        found = _loggers.get(run_id)
        if found is None or found.closed:
            found = _loggers[run_id] = BatchLogger(run_id)
            _close_idle(keep=run_id)
        _current = found
        return found


def _close_idle(keep: str) -> None:
    """Stop the threads of other runs' loggers that have nothing left to send (lock held)."""
    for run_id, other in list(_loggers.items()):
        if run_id != keep and other.backlog == 0:
            del _loggers[run_id]
            with contextlib.suppress(TimeoutError):
                other.close(timeout=1.0)


def _experiment_id(name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name)
    except Exception:
        # created meanwhile by another process
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextlib.contextmanager
def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    *,
    flush_timeout: float = 60.0,
    **kwargs: Any,
) -> Iterator[Any]:
    """``mlflow.start_run`` (so the platform's run-context tags apply) with a fast logger
    attached; yields MLflow's ``ActiveRun``. ``experiment`` is an experiment name, created if
    missing (without changing the process's current experiment). On exit, queued data is sent
    (up to ``flush_timeout`` seconds) before the run is ended."""
    import mlflow

    if experiment is not None and "experiment_id" not in kwargs:
        kwargs["experiment_id"] = _experiment_id(experiment)
    with mlflow.start_run(run_name=run_name, **kwargs) as active:
        run_logger = logger(active.info.run_id)
        try:
            yield active
        finally:
            _finish(run_logger, flush_timeout)


def _finish(run_logger: BatchLogger, timeout: float) -> None:
    try:
        run_logger.flush(timeout)
    except TimeoutError:
        print(
            f"hubml.track: {run_logger.backlog} item(s) for run {run_logger.run_id} are not on the "
            f"MLflow server yet ({run_logger.status()['last_error']}); they stay in memory and are "
            "retried in the background until the kernel exits (see hubml track.status())",
            file=sys.stderr,
            flush=True,
        )
        return
    with _lock:
        if _loggers.get(run_logger.run_id) is run_logger:
            del _loggers[run_logger.run_id]
    with contextlib.suppress(TimeoutError):
        run_logger.close(timeout=1.0)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None
) -> None:
    """Queue one metric point (``timestamp`` in ms, default now); never waits for the server.
    Bad keys or values (non-numeric, NaN, inf) raise ``ValueError`` here."""
    logger().log_metric(key, value, step, timestamp)


def log_metrics(
    metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
) -> None:
    logger().log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> None:
    logger().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    logger().log_params(params)


def set_tag(key: str, value: Any) -> None:
    logger().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    logger().set_tags(tags)


def flush(timeout: float | None = None) -> None:
    """Wait until everything logged so far, for every run, is on the server. Raises
    ``TimeoutError`` naming the backlog (which is kept and retried)."""
    import time

    with _lock:
        loggers = list(_loggers.values())
    end = None if timeout is None else time.monotonic() + timeout
    for run_logger in loggers:
        run_logger.flush(None if end is None else max(0.0, end - time.monotonic()))


def status(run_id: str | None = None) -> dict[str, Any]:
    """Backlog and health of ``run_id``'s logger, or of the one used last: ``pending``,
    ``sent``, ``dropped``, ``requests``, ``retries``, ``last_error``, ``outage_since``."""
    with _lock:
        found = _loggers.get(run_id) if run_id is not None else _current
    if found is None:
        return {
            "run_id": run_id,
            "pending": 0,
            "sent": 0,
            "dropped": 0,
            "requests": 0,
            "retries": 0,
            "last_error": None,
            "outage_since": None,
            "closed": True,
        }
    return found.status()
