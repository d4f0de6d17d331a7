"""Non-blocking, batched MLflow logging for training loops (issue 3).

``BatchLogger`` is bound to one run. Its ``log_*`` methods validate the input in the caller
(bad values raise ``ValueError`` right there), stamp metrics with the current time and put them
on a queue; they never wait for the network. A daemon thread drains the queue into
``log_batch`` requests that respect MLflow's per-request limits and sends them.

Delivery is at-least-once on the wire and exactly-once in the store: a batch that failed is
sent again unchanged, and MLflow's SQL store drops metric rows identical in (key, value,
timestamp, step) to ones it already holds (``SqlAlchemyStore._log_metrics_once`` catches the
primary-key ``IntegrityError`` and inserts only the missing rows); re-sending a param with the
same value is accepted, and tags are upserts. That is why timestamps are fixed at enqueue time.

During an outage the data stays in memory and the batch is retried with exponential backoff
(0.2 s doubling to 5 s) until the server is back or ``close()``'s deadline passes; ``backlog``,
``status()`` and ``repr()`` say how much is waiting. Errors about the data itself (for example
``INVALID_PARAMETER_VALUE``) are not retried: the batch is dropped with a warning on stderr
naming its keys, so one bad request cannot wedge the queue.

The backlog is bounded (``max_backlog`` items, default ``DEFAULT_MAX_BACKLOG`` or
``$HUBML_TRACK_MAX_BACKLOG``: about 150 MB of metric points): in a long outage, metric points
logged past it are not kept (counted as ``overflow`` in ``status()``, with one warning per
outage naming how many); params and tags are always kept, so the run's record stays whole.

MLflow is imported only inside functions (``import mlflow`` costs 1.5-2 s).
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from .fastlogitems import (  # noqa: F401  (re-exported: the items and limits are part of fastlog's API)
    _INT64_MAX,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    Metric,
    Param,
    Tag,
    _Batch,
    check_int,
    check_key,
    check_metric_value,
    check_text,
)
from .fastlogsend import (  # noqa: F401  (re-exported: the senders are part of fastlog's API)
    DEFAULT_REQUEST_TIMEOUT,
    LOG_BATCH_ENDPOINT,
    RETRYABLE_ERROR_CODES,
    ClientLogBatch,
    HttpLogBatch,
    is_retryable,
    sender_for,
)

DEFAULT_MAX_BACKLOG = 1_000_000  # items kept while MLflow is unreachable (~150 B a metric point)

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
# How long the atexit hook may spend sending what is left (all loggers together).
EXIT_TIMEOUT_ENV = "HUBML_TRACK_EXIT_TIMEOUT"
DEFAULT_EXIT_TIMEOUT_S = 10.0

_STOP = object()  # queue sentinel put by close(): everything before it is sent first


# --- the logger ----------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[BatchLogger] = weakref.WeakSet()


def _warn(message: str) -> None:
    # stderr rather than warnings.warn: shows in notebooks, and works from the background thread
    print(f"hubml.track: {message}", file=sys.stderr, flush=True)


class BatchLogger:
    """Queue metrics, params and tags for one MLflow run; a background thread sends them in
    ``log_batch`` requests. See the module docstring for the delivery guarantees.

    ``client`` is an ``MlflowClient`` (default: one for the current tracking URI) or any object
    with a compatible ``log_batch`` (see ``sender_for``).
    """

    def __init__(
        self,
        run_id: str,
        client: Any = None,
        *,
        request_timeout: float | tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
        max_backlog: int | None = None,
    ):
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"run_id must be a non-empty str, got {run_id!r}")
        if max_backlog is None:
            max_backlog = int(os.environ.get("HUBML_TRACK_MAX_BACKLOG") or DEFAULT_MAX_BACKLOG)
        if isinstance(max_backlog, bool) or not isinstance(max_backlog, int) or max_backlog < 1:
            raise ValueError(
                f"max_backlog must be a whole number of items ≥ 1, got {max_backlog!r}"
            )
        self._max_backlog = max_backlog
        self._overflow = 0  # metric points not kept: the backlog was full
        self._overflow_warned = False
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient()
        self.run_id = run_id
        self._sender = sender_for(client, request_timeout)
        self._queue: queue.Queue = queue.Queue()
        self._cv = threading.Condition()
        self._kick = threading.Event()  # cuts a backoff wait short (flush, close)
        self._enqueued = 0  # items put on the queue
        self._sent = 0  # items delivered
        self._dropped = 0  # items refused by the server (non-retryable) and dropped
        self._requests = 0
        self._retries = 0
        self._last_error: str | None = None
        self._outage_since: float | None = None  # wall-clock time of the first failure in a row
        self._params: dict[str, str] = {}  # params queued by this logger (they are immutable)
        self._checked_keys: set[str] = set()  # keys already validated, to keep log calls cheap
        self._closed = False
        self._deadline: float | None = None  # monotonic; set by close()
        self._finished = False  # the thread has exited
        self._thread = threading.Thread(
            target=self._work, name=f"hubml-track-{run_id[:8]}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    # -- logging (caller's thread) --

    def _key(self, kind: str, key: Any) -> str:
        if key.__class__ is str and key in self._checked_keys:
            return key
        check_key(kind, key)
        if len(self._checked_keys) < 10_000:
            self._checked_keys.add(key)
        return key

    def _metric(self, key: Any, value: Any, step: Any, timestamp: int) -> Metric:
        key = self._key("metric", key)
        value = check_metric_value(key, value)
        step = (
            0
            if step is None
            else (
                step
                if type(step) is int and 0 <= step <= _INT64_MAX
                else check_int("step", key, step)
            )
        )
        return Metric(key, value, timestamp, step)

    def _put(self, items: list) -> None:
        warn = None
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed; start a new logger for more data")
            room = self._max_backlog - self.backlog
            if len(items) > room:
                # full (a long outage): params and tags are kept, new metric points are not
                kept = [i for i in items if i.__class__ is not Metric]
                points = [i for i in items if i.__class__ is Metric][: max(0, room - len(kept))]
                self._overflow += len(items) - len(kept) - len(points)
                items = kept + points
                if not self._overflow_warned:
                    self._overflow_warned = True
                    warn = self._full_message()
            self._enqueued += len(items)
            for item in items:
                self._queue.put(item)
        if warn:
            _warn(warn)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one metric point; ``timestamp`` is milliseconds (default: now). Never blocks."""
        ts = (
            int(time.time() * 1000)
            if timestamp is None
            else check_int("timestamp", key, timestamp, minimum=0)
        )
        item = self._metric(key, value, step, ts)
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed; start a new logger for more data")
            if self._enqueued - self._sent - self._dropped < self._max_backlog:
                self._enqueued += 1
                self._queue.put(item)
                return
            self._overflow += 1  # full: a long outage (see the module docstring)
            if self._overflow_warned:
                return
            self._overflow_warned = True
        _warn(self._full_message())

    def _full_message(self) -> str:
        return (
            f"the backlog of run {self.run_id} is full ({self._max_backlog} items waiting for "
            "MLflow): new metric points are not kept until it drains (params and tags are); "
            "status()['overflow'] counts them"
        )

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue several metrics with one step and timestamp. All are checked before any is queued."""
        if not isinstance(metrics, Mapping):
            raise ValueError(
                f"log_metrics takes a mapping of key to number, got {type(metrics).__name__}"
            )
        ts = (
            int(time.time() * 1000)
            if timestamp is None
            else check_int("timestamp", "*", timestamp, minimum=0)
        )
        self._put([self._metric(k, v, step, ts) for k, v in metrics.items()])

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queue params. MLflow params are immutable: the same value again is a no-op, a
        different value for a key this logger already logged raises ``ValueError``."""
        if not isinstance(params, Mapping):
            raise ValueError(
                f"log_params takes a mapping of key to value, got {type(params).__name__}"
            )
        items = []
        with self._cv:
            staged: dict[str, str] = {}
            for key, value in params.items():
                key = self._key("param", key)
                text = check_text("param", key, value, MAX_PARAM_VALUE_LENGTH)
                old = self._params.get(key, staged.get(key))
                if old is None:
                    staged[key] = text
                    items.append(Param(key, text))
                elif old != text:
                    raise ValueError(
                        f"param {key!r} was already logged as {old!r} for run {self.run_id}; MLflow "
                        f"params cannot change (got {text!r}). Use a metric or tag for changing values, "
                        "or a new run"
                    )
            self._put(items)  # the condition's lock is re-entrant
            self._params.update(staged)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not isinstance(tags, Mapping):
            raise ValueError(f"set_tags takes a mapping of key to value, got {type(tags).__name__}")
        self._put(
            [
                Tag(self._key("tag", k), check_text("tag", k, v, MAX_TAG_VALUE_LENGTH))
                for k, v in tags.items()
            ]
        )

    # -- state --

    @property
    def backlog(self) -> int:
        """Items logged but not yet delivered (or dropped)."""
        return self._enqueued - self._sent - self._dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def status(self) -> dict[str, Any]:
        with self._cv:
            return {
                "run_id": self.run_id,
                "pending": self.backlog,
                "sent": self._sent,
                "dropped": self._dropped,
                "overflow": self._overflow,
                "requests": self._requests,
                "retries": self._retries,
                "last_error": self._last_error,
                "outage_since": self._outage_since,
                "closed": self._closed,
            }

    def __repr__(self) -> str:
        s = self.status()
        state = "closed" if s["closed"] else "ok"
        if s["outage_since"] is not None:
            state = (
                f"OUTAGE for {time.time() - s['outage_since']:.0f}s, last error: {s['last_error']}"
            )
        dropped = f" dropped={s['dropped']}" if s["dropped"] else ""
        dropped += f" overflow={s['overflow']}" if s["overflow"] else ""
        return (
            f"<BatchLogger run={self.run_id} pending={s['pending']} sent={s['sent']}{dropped} "
            f"requests={s['requests']} retries={s['retries']} {state}>"
        )

    # -- waiting --

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything logged before this call is on the server (or dropped as
        refused). Raises ``TimeoutError`` naming the backlog; the data is kept and retried."""
        with self._cv:
            target = self._enqueued
            if self._sent + self._dropped >= target:
                return
        self._kick.set()  # retry now rather than after the current backoff
        with self._cv:
            self._cv.wait_for(
                lambda: self._sent + self._dropped >= target or self._finished, timeout
            )
            if self._sent + self._dropped >= target:
                return
            if self._finished:
                raise RuntimeError(f"{self!r} stopped with {self.backlog} item(s) unsent")
            raise TimeoutError(
                f"{self.backlog} item(s) for MLflow run {self.run_id} not yet sent after {timeout}s "
                f"(last error: {self._last_error}); they are kept and retried in the background"
            )

    def _begin_close(self, timeout: float | None) -> None:
        with self._cv:
            if not self._closed:
                self._closed = True
                self._deadline = None if timeout is None else time.monotonic() + timeout
                self._queue.put(_STOP)
        self._kick.set()

    def _end_close(self, timeout: float | None) -> None:
        self._thread.join(timeout)
        if self.backlog:
            raise TimeoutError(
                f"{self.backlog} item(s) for MLflow run {self.run_id} could not be sent before the "
                f"close deadline ({timeout}s; last error: {self._last_error}) and are lost"
            )

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is queued (retrying up to ``timeout`` seconds), then stop the thread.
        Raises ``TimeoutError`` with the number of items that could not be sent."""
        self._begin_close(timeout)
        self._end_close(None if timeout is None else timeout + 1.0)

    def __enter__(self) -> BatchLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the background thread --

    def _work(self) -> None:
        try:
            carry: Metric | Param | Tag | None = None  # item that did not fit the previous batch
            stopping = False
            while True:
                if carry is None:
                    if stopping:
                        return
                    item = self._queue.get()
                    if item is _STOP:
                        return
                    carry = item
                batch = _Batch()
                batch.add(carry)
                carry = None
                # Take what is already queued, up to the limits; no waiting for more.
                while not stopping:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                    elif not batch.add(item):
                        carry = item
                        break
                if not self._deliver(batch):
                    return  # close() deadline passed during an outage
        finally:
            with self._cv:
                self._finished = True
                self._cv.notify_all()
            _LIVE.discard(self)

    def _deliver(self, batch: _Batch) -> bool:
        """Send ``batch``, retrying outages. False when the close deadline ends the retries."""
        delay = BACKOFF_START_S
        while True:
            try:
                with self._cv:
                    self._requests += 1
                self._sender.log_batch(
                    self.run_id,
                    metrics=batch.metrics,
                    params=batch.params,
                    tags=list(batch.tags.values()),
                )
            except Exception as exc:
                if not is_retryable(exc):
                    parts = batch.split_by_kind()
                    if (
                        len(parts) > 1
                    ):  # do not lose the metrics over a refused param, or vice versa
                        return all(self._deliver(part) for part in parts)
                    self._drop(batch, exc)
                    return True
                self._failed(exc)
                deadline = self._deadline
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    delay = min(delay, left)
                self._kick.wait(delay)
                self._kick.clear()
                delay = min(delay * 2, BACKOFF_MAX_S)
            else:
                self._delivered(batch)
                return True

    def _failed(self, exc: Exception) -> None:
        with self._cv:
            self._retries += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:500]
            first = self._outage_since is None
            if first:
                self._outage_since = time.time()
            backlog = self.backlog
        if first:
            _warn(
                f"MLflow unreachable for run {self.run_id} ({self._last_error[:200]}); "
                f"{backlog} item(s) kept in memory and retried in the background"
            )

    def _delivered(self, batch: _Batch) -> None:
        # Warn before counting the batch as sent, so a flush() that returns has seen the warning.
        with self._cv:
            since, self._outage_since = self._outage_since, None
            backlog = self.backlog - batch.items
            overflow = self._overflow
            if since is not None:
                self._overflow_warned = False  # the next outage that fills it says so again
        if since is not None:
            lost = f"; {overflow} metric point(s) were not kept (backlog full)" if overflow else ""
            _warn(
                f"MLflow reachable again for run {self.run_id} after {time.time() - since:.0f}s; {backlog} item(s) still queued{lost}"
            )
        with self._cv:
            self._sent += batch.items
            self._cv.notify_all()

    def _drop(self, batch: _Batch, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        _warn(
            f"MLflow refused {batch.items} item(s) for run {self.run_id}, dropped them ({error[:300]}): {batch.describe()}"
        )
        with self._cv:
            self._dropped += batch.items
            self._last_error = error
            self._cv.notify_all()


# --- process exit -------------------------------------------------------------------------------


def close_all(timeout: float) -> int:
    """Close every live logger, all sending in parallel within ``timeout`` seconds in total.
    Prints a warning per logger that could not send everything; returns the items lost."""
    loggers = list(_LIVE)
    end = time.monotonic() + timeout
    for logger in loggers:
        logger._begin_close(timeout)
    lost = 0
    for logger in loggers:
        try:
            logger._end_close(max(0.0, end - time.monotonic()) + 1.0)
        except TimeoutError:
            lost += logger.backlog
            _warn(
                f"{logger.backlog} item(s) for MLflow run {logger.run_id} could not be sent before "
                f"exit ({timeout:.0f}s, {EXIT_TIMEOUT_ENV}; last error: {logger._last_error}) and are lost"
            )
    return lost


def _close_all_at_exit() -> None:
    if not _LIVE:
        return
    try:
        timeout = float(os.environ.get(EXIT_TIMEOUT_ENV, DEFAULT_EXIT_TIMEOUT_S))
    except ValueError:
        timeout = DEFAULT_EXIT_TIMEOUT_S
    close_all(timeout)


atexit.register(_close_all_at_exit)
