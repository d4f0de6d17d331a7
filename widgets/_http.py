"""The panels' one way to call a hubml service: its JSON answer, and patience while it restarts.

A service the hub is restarting (about 20 s after a crash) refuses connections: nothing was
sent, so the request is sent again, for up to :data:`RETRY_S` (``HUBML_SERVICE_RETRY_S``),
instead of losing a person's click. A read (GET) answered 502/503 (the proxy's, or a service's
"restarting" with ``Retry-After``) is asked again as well. A request that may have reached the
service (a write answered 503, a connection dropped mid-way, a read timeout) is never repeated:
the error says so and the caller decides.
"""

from __future__ import annotations

import os
import time

RETRY_S = 30.0
RETRY_STATUSES = (502, 503)


def _not_sent(exc: BaseException) -> bool:
    """Whether a requests error happened before the request left (refused, unreachable)."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NewConnectionError | ConnectTimeoutError):
            return True
        stack.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return False


def call(
    method: str,
    url: str,
    token: str,
    *,
    body=None,
    params=None,
    timeout: float = 60,
    retry_s: float | None = None,
):
    """``(status, JSON body as a dict, reason)``; waits out a restarting service. Raises
    ``requests`` errors for a service that stayed away past the retry window, or a request
    that may have been sent."""
    import requests

    if retry_s is None:
        retry_s = float(os.environ.get("HUBML_SERVICE_RETRY_S", RETRY_S))
    deadline = time.monotonic() + retry_s
    delay = 0.5
    while True:
        try:
            resp = requests.request(
                method,
                url,
                json=body,
                params=params,
                timeout=timeout,
                headers={"Authorization": f"token {token}"},
            )
        except requests.RequestException as e:
            if not _not_sent(e) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
            continue
        if (
            resp.status_code in RETRY_STATUSES
            and method.upper() in ("GET", "HEAD")
            and time.monotonic() + delay <= deadline
        ):
            try:
                wait = float(resp.headers.get("Retry-After", delay))
            except ValueError:
                wait = delay
            time.sleep(max(0.2, min(wait, 4.0, deadline - time.monotonic())))
            delay = min(delay * 2, 4.0)
            continue
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            data = {"message": resp.text[:300]}
        if not isinstance(data, dict):
            data = {"items": data}
        return resp.status_code, data, resp.reason
