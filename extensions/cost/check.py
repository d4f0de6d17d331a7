"""Asking the cost service whether something may start (``POST api/check``): the one client the
hub's spawner and the jobs service share. Tornado only, so the hub imports it cheaply."""

from __future__ import annotations

import json


class Unanswered(Exception):
    """The cost service gave no usable answer (down, slow, not JSON, not 200)."""


async def ask(
    base: str,
    token: str,
    user: str,
    profile: str,
    *,
    groups: list[str] | None = None,
    hours: float | None = None,
    timeout: float = 5,
) -> dict:
    """The service's answer (``allowed``, ``message``, ``warnings``, ...) for ``user`` starting
    ``profile`` (for ``hours``: a job run's timeout; default: the profile's limit)."""
    from tornado import httpclient

    body: dict = {"user": user, "profile": profile}
    if groups is not None:
        body["groups"] = sorted(groups)
    if hours is not None:
        body["hours"] = hours
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(
            base + "api/check",
            method="POST",
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            body=json.dumps(body),
            request_timeout=timeout,
            raise_error=False,
        )
        if resp.code != 200:
            raise Unanswered(f"HTTP {resp.code}")
        return json.loads(resp.body)
    except Unanswered:
        raise
    except Exception as e:
        raise Unanswered(str(e) or type(e).__name__) from None
