"""The senders fastlog's background thread calls ``log_batch`` on, and which failures are
outages worth retrying. MLflow is imported only when a sender is made.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from .fastlogitems import Metric, Param, Tag

# (connect, read) timeout of one log_batch request of the background client. A 1000-metric batch
# takes 0.13-0.22 s on a healthy server (FACTS.md); a hung server is noticed after the read timeout.
DEFAULT_REQUEST_TIMEOUT = (3.0, 20.0)
LOG_BATCH_ENDPOINT = "/api/2.0/mlflow/runs/log-batch"

# MLflow error codes worth retrying: the server or the way to it is unwell, not the data.
# Auth failures are included because credentials can be refreshed (they are re-read for every
# request) and dropping a training run's metrics over an expired token would lose them.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "IO_ERROR",
        "ABORTED",
        "SERVICE_UNDER_MAINTENANCE",
        "WORKSPACE_TEMPORARILY_UNAVAILABLE",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "ENDPOINT_NOT_FOUND",  # a proxy without a route yet (hub restarting), not a bad payload
    }
)


def is_retryable(exc: BaseException) -> bool:
    """True for outages (connection refused, timeouts, 5xx, 429); False for rejected data."""
    code = getattr(exc, "error_code", None)
    if isinstance(code, str) and code:
        return code in RETRYABLE_ERROR_CODES
    # requests' exceptions derive from OSError; ConnectionError/TimeoutError do too.
    return isinstance(exc, OSError)


class HttpLogBatch:
    """``log_batch`` over MLflow's REST API for this logger only, with MLflow's own HTTP retries
    off and a short timeout, so an outage is seen at once and handled by the logger's backoff.

    ``MlflowClient`` reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7, with backoff: minutes)
    and ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s) inside ``call_endpoint``, which passes no
    per-call override; changing those variables would change every other MLflow call of the
    process. ``mlflow.utils.rest_utils.http_request`` accepts ``max_retries`` and ``timeout``
    per call, so this sender posts the documented ``runs/log-batch`` JSON itself with the same
    credentials (``get_default_host_creds``, re-read per request) and error handling
    (``verify_rest_response``) that MLflow's ``RestStore`` uses.
    """

    def __init__(
        self, tracking_uri: str, timeout: float | tuple[float, float] = DEFAULT_REQUEST_TIMEOUT
    ):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        self.tracking_uri = tracking_uri
        self.timeout = timeout
        self._creds = get_default_host_creds
        self._http_request = http_request
        self._verify = verify_rest_response

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[Tag] = (),
    ) -> None:
        body = {
            "run_id": run_id,
            "metrics": [
                {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
                for m in metrics
            ],
            "params": [{"key": p.key, "value": p.value} for p in params],
            "tags": [{"key": t.key, "value": t.value} for t in tags],
        }
        response = self._http_request(
            self._creds(self.tracking_uri),
            LOG_BATCH_ENDPOINT,
            "POST",
            max_retries=0,
            timeout=self.timeout,
            raise_on_status=False,
            json=body,
        )
        self._verify(response, LOG_BATCH_ENDPOINT)

    def __repr__(self) -> str:
        return f"HttpLogBatch({self.tracking_uri!r})"


class ClientLogBatch:
    """Adapts an ``MlflowClient`` whose store is not plain HTTP (a local SQL store, Databricks):
    converts the logger's tuples into MLflow entities. MLflow's own retry settings apply here."""

    def __init__(self, client: Any):
        self.client = client

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[Tag] = (),
    ) -> None:
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import Param as MlflowParam
        from mlflow.entities import RunTag

        self.client.log_batch(
            run_id,
            metrics=[MlflowMetric(m.key, m.value, m.timestamp, m.step) for m in metrics],
            params=[MlflowParam(p.key, p.value) for p in params],
            tags=[RunTag(t.key, t.value) for t in tags],
        )


def sender_for(
    client: Any, request_timeout: float | tuple[float, float] = DEFAULT_REQUEST_TIMEOUT
) -> Any:
    """What the background thread calls ``log_batch`` on. An ``MlflowClient`` talking HTTP gets
    the retry-free ``HttpLogBatch``; any other object with ``log_batch(run_id, metrics=, params=,
    tags=)`` taking this module's ``Metric``/``Param``/``Tag`` tuples is used as it is."""
    client_module = sys.modules.get("mlflow.tracking.client")  # no MlflowClient without it
    if client_module is None or not isinstance(client, client_module.MlflowClient):
        return client
    uri = str(client.tracking_uri)
    if uri.startswith(("http://", "https://")):
        return HttpLogBatch(uri, request_timeout)
    return ClientLogBatch(client)
