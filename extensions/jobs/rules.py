"""What a job definition may say: every check names the field and what is allowed."""

from __future__ import annotations

import asyncio
import json

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.netcheck import URLNotAllowed, check_url

from . import cron

# data belongs in files, not in parameters
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600
FIELDS = {
    "notebook",
    "content",
    "parameters",
    "profile",
    "schedule",
    "timezone",
    "timeout_s",
    "max_retries",
    "name",
    "retry_delay_s",
    "concurrency",
    "webhook_url",
    "notify_on",
    "track_latest",
    "keep_runs",
    "keep_days",
}
PATCHABLE = FIELDS - {"notebook", "content"} | {"paused"}


def whole_number(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise APIError(400, f"{key}: must be a whole number from {lo} to {hi} (got {value!r})")
    return value


def check_fields(body: dict, allowed: set[str], verb: str = "unknown field(s)") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise APIError(400, f"{verb} {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def check_parameters_size(body: dict) -> None:
    size = len(json.dumps(body.get("parameters") or {}))
    if size > MAX_PARAMETERS_BYTES:
        raise APIError(
            413,
            f"parameters are {size} bytes; at most {MAX_PARAMETERS_BYTES} (keep data out of "
            "parameters: pass a path)",
        )


class JobRules:
    """Checks a job definition against the settings (schedules, webhooks, limits)."""

    def __init__(self, settings):
        self.settings = settings

    def schedule(self, body: dict) -> tuple[str | None, str]:
        tz = body.get("timezone") or "UTC"
        if not isinstance(tz, str):
            raise APIError(400, "timezone: must be an IANA timezone name such as UTC")
        try:
            cron.zone(tz)
            schedule = body.get("schedule")
            return (cron.validate(schedule, tz) if schedule is not None else None), tz
        except cron.CronError as e:
            raise APIError(400, str(e)) from None

    async def webhook(self, url) -> str | None:
        """``url`` if webhooks may go there (resolved off the loop); APIError 400 saying why not."""
        if url is None:
            return None
        try:
            return await asyncio.to_thread(check_url, url, self.settings.jobs.webhook_allowed_hosts)
        except URLNotAllowed as e:
            raise APIError(400, f"webhook_url: {e}") from None

    async def common(self, body: dict, out: dict) -> None:
        if "timeout_s" in body:
            out["timeout_s"] = whole_number(body, "timeout_s", 3600, 1, MAX_TIMEOUT_S)
        if "max_retries" in body:
            out["max_retries"] = whole_number(body, "max_retries", 0, 0, 10)
        if "retry_delay_s" in body:
            value = body["retry_delay_s"]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 86400
            ):
                raise APIError(
                    400, f"retry_delay_s: must be seconds from 0 to 86400 (got {value!r})"
                )
            out["retry_delay_s"] = float(value)
        if "concurrency" in body:
            if body["concurrency"] not in ("skip", "queue"):
                raise APIError(
                    400,
                    "concurrency: 'skip' (a slot due while the previous run is going is skipped) or "
                    f"'queue' (it waits); got {body['concurrency']!r}",
                )
            out["concurrency"] = body["concurrency"]
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > 200:
                raise APIError(400, "name: must be a non-empty string of at most 200 characters")
            out["name"] = name.strip()
        if "webhook_url" in body:
            out["webhook_url"] = await self.webhook(body["webhook_url"])
        if "notify_on" in body:
            value = body["notify_on"]
            if not isinstance(value, list) or not set(value) <= {"failure", "success"}:
                raise APIError(400, "notify_on: a list of 'failure' and/or 'success'")
            out["notify_on"] = sorted(set(value))
        if "track_latest" in body:
            if not isinstance(body["track_latest"], bool):
                raise APIError(
                    400,
                    "track_latest: true (run the latest saved notebook) or false (run the snapshot)",
                )
            out["track_latest"] = body["track_latest"]
        for key, hi in (("keep_runs", 1_000_000), ("keep_days", 36500)):
            if key in body:  # null: the service's own jobs.keep_runs / jobs.keep_days
                out[key] = None if body[key] is None else whole_number(body, key, 0, 1, hi)
        if "paused" in body:
            if not isinstance(body["paused"], bool):
                raise APIError(400, "paused: true or false")
            out["paused"] = body["paused"]
