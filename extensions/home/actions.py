"""What the home page's buttons may do: a short, fixed list, each one request to one service.

The page cannot call the other services itself (each is on an origin of its own), so it asks the
home service, which relays the request with the person's own token. Only these actions exist;
their arguments are checked here for shape, and the service they reach decides, as always,
whether this person may do it (their schedule, their app, an approval they may give).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from hubml.extensions.common.errors import APIError

JOB_ID = re.compile(r"[0-9a-f]{1,32}")
APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
VERSION = re.compile(r"[0-9]{1,9}")
MODEL_NAME = re.compile(r"[^/\x00-\x1f]{1,256}")
REASON_MAX = 1000


@dataclass(frozen=True)
class Relay:
    service: str
    method: str
    path: str
    body: dict | None


def _arg(body: dict, key: str, pattern: re.Pattern, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise APIError(400, f"{key}: {what} (got {value!r})")
    return value


def _job(body):
    return _arg(body, "id", JOB_ID, "a job id as the jobs service gives it")


def _app(body):
    return _arg(body, "name", APP_NAME, "an app name (lower-case letters, digits and dashes)")


def _reason(body) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > REASON_MAX:
        raise APIError(400, f"reason: text of at most {REASON_MAX} characters")
    return reason


def _schedule(body) -> str:
    value = body.get("schedule")
    if not isinstance(value, str) or len(value) > 200:
        raise APIError(
            400, "schedule: a cron expression such as '0 2 * * *' (at most 200 characters)"
        )
    return value


ACTIONS = {
    "pause": lambda b: Relay("jobs", "PATCH", f"api/jobs/{_job(b)}", {"paused": True}),
    "resume": lambda b: Relay("jobs", "PATCH", f"api/jobs/{_job(b)}", {"paused": False}),
    "reschedule": lambda b: Relay(
        "jobs", "PATCH", f"api/jobs/{_job(b)}", {"schedule": _schedule(b)}
    ),
    "run": lambda b: Relay("jobs", "POST", f"api/jobs/{_job(b)}/runs", {}),
    "delete-schedule": lambda b: Relay("jobs", "DELETE", f"api/jobs/{_job(b)}", None),
    "stop-app": lambda b: Relay("apps", "POST", f"api/apps/{_app(b)}/stop", {}),
    "start-app": lambda b: Relay("apps", "POST", f"api/apps/{_app(b)}/start", {}),
    "delete-app": lambda b: Relay("apps", "DELETE", f"api/apps/{_app(b)}", None),
    "approve": lambda b: Relay(
        "mlflow",
        "POST",
        f"hubml/api/models/{quote(_arg(b, 'model', MODEL_NAME, 'a registered model name'), safe='')}"
        f"/versions/{_arg(b, 'version', VERSION, 'a version number')}/approve",
        {"reason": _reason(b)},
    ),
}


def relay_for(body: dict, enabled: set[str]) -> Relay:
    """The one request ``body`` (``{"do": <action>, ...}``) stands for; 400 saying what is allowed."""
    do = body.get("do")
    if do not in ACTIONS:
        raise APIError(400, f"do: one of {', '.join(sorted(ACTIONS))} (got {do!r})")
    relay = ACTIONS[do](body)
    if relay.service not in enabled:
        raise APIError(404, f"the {relay.service} service is not part of this platform")
    return relay
