"""Approvals that reach people outside the platform: a webhook per request and per decision.

When ``tracking.approvals_webhook_url`` is set (an operator's URL: a chat relay, an incoming
webhook of Slack, Mattermost or Teams, a ticketing bridge), the mlflow service POSTs one JSON
event when someone asks for a promotion (``promotion.requested``: for the approvers) and one
when a request is approved (``promotion.approved``: for its author). Each event has a ``text``
line that chat tools show as it is, the facts as fields, and a link to the home page, where the
approver finds the request with its gates and an Approve button. With
``tracking.approvals_webhook_secret`` the body is signed: ``X-Hubml-Signature-256:
sha256=<HMAC-SHA256 of the body>``, so the receiver can tell it came from this platform.

Sent after the answer, never before it: a slow or broken receiver delays and fails nothing, and
its outcome is one line in the service's log. The URL is the operator's (from settings, not from
a user), so it may point inside the network.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from hubml.extensions.common import urls

log = logging.getLogger("hubml.tracking.registry")

TIMEOUT_S = 10
SIGNATURE_HEADER = "X-Hubml-Signature-256"


def promotion_event(kind: str, entry: dict, approvers: str, author: str | None = None) -> dict:
    """The event for an audit ``entry`` of a request (``kind="requested"``) or an approval."""
    model, version = entry["model"], entry.get("to_version")
    home = urls.service_public_url("home")
    reason = (entry.get("reason") or "").strip()
    if kind == "requested":
        text = (
            f"{entry['actor']} asks to promote {model} version {version} to @champion"
            + (f" ({reason})" if reason else "")
            + f". Who may approve: {approvers}. Open the request: {home}#approvals"
        )
    else:
        text = (
            f"{entry['actor']} approved {model} version {version} as @champion"
            + (f" ({reason})" if reason else "")
            + (f", as {author} asked" if author else "")
            + "."
        )
    return {
        "event": f"promotion.{kind}",
        "text": text,
        "model": model,
        "version": str(version),
        "alias": "champion",
        "by": entry["actor"],
        "author": author if kind != "requested" else entry["actor"],
        "reason": reason,
        "approvers": approvers,
        "at": entry.get("at"),
        "home_url": f"{home}#approvals",
        "model_url": f"{urls.service_public_url('mlflow')}#/models/{model}/versions/{version}",
    }


def signed(body: bytes, secret: str) -> dict:
    if not secret:
        return {}
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {SIGNATURE_HEADER: f"sha256={digest}"}


async def send(settings, event: dict) -> int | None:
    """POST ``event`` to the approvals webhook, if one is set; the HTTP status, None if unsent."""
    url = settings.tracking.approvals_webhook_url
    if not url:
        return None
    from tornado import httpclient

    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "hubml-registry"}
    headers.update(signed(body, settings.tracking.approvals_webhook_secret))
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(
            url,
            method="POST",
            body=body,
            headers=headers,
            raise_error=False,
            request_timeout=TIMEOUT_S,
            follow_redirects=False,
        )
    except Exception as e:  # the receiver's problem is a log line, never the request's
        log.warning(
            "approvals webhook: %s %s/%s not sent: %s",
            event["event"],
            event["model"],
            event["version"],
            e,
        )
        return None
    level = logging.INFO if resp.code < 400 else logging.WARNING
    log.log(
        level,
        "approvals webhook: %s %s/%s: HTTP %s",
        event["event"],
        event["model"],
        event["version"],
        resp.code,
    )
    return resp.code
