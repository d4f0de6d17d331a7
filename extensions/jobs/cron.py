"""Cron schedules: validation, the next run times, and a sentence a person can check."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PRESETS = {
    "hourly": "0 * * * *",
    "nightly": "0 2 * * *",
    "weekly": "0 6 * * 1",
}
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


class CronError(ValueError):
    pass


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"timezone: unknown timezone {name!r}; use an IANA name such as UTC or Europe/Berlin"
        ) from None


def validate(expr: str, timezone: str = "UTC") -> str:
    """The normalised expression; raises :class:`CronError` naming what is wrong."""
    from croniter import croniter

    if not isinstance(expr, str) or not expr.strip():
        raise CronError(
            "schedule: give a cron expression such as '0 2 * * *' (02:00 every day), or null to run once"
        )
    expr = " ".join(PRESETS.get(expr.strip(), expr).split())
    if len(expr.split()) != 5:
        raise CronError(
            f"schedule: {expr!r} is not a 5-field cron expression (minute hour day-of-month month "
            "day-of-week), e.g. '*/15 * * * *' or '0 2 * * 1-5'"
        )
    if not croniter.is_valid(expr):
        raise CronError(
            f"schedule: {expr!r} is not a valid cron expression; fields are minute hour day-of-month month day-of-week"
        )
    zone(timezone)
    return expr


def next_times(
    expr: str, timezone: str = "UTC", after: dt.datetime | None = None, count: int = 1
) -> list[dt.datetime]:
    """The next ``count`` times (naive UTC) strictly after ``after`` (naive UTC, default now)."""
    from croniter import croniter

    tz = zone(timezone)
    start = (
        (after or dt.datetime.now(dt.UTC).replace(tzinfo=None))
        .replace(tzinfo=dt.UTC)
        .astimezone(tz)
    )
    it = croniter(expr, start)
    return [it.get_next(dt.datetime).astimezone(dt.UTC).replace(tzinfo=None) for _ in range(count)]


def _at(hour: str, minute: str) -> str:
    return f"{int(hour):02d}:{int(minute):02d}"


def describe(expr: str, timezone: str = "UTC") -> str:
    """A plain-words reading of the common shapes; the raw fields otherwise."""
    minute, hour, dom, month, dow = expr.split()
    tzs = " UTC" if timezone == "UTC" else f" ({timezone})"
    if expr == "* * * * *":
        return "Every minute"
    if minute.startswith("*/") and hour == dom == month == dow == "*":
        return f"Every {minute[2:]} minutes"
    if minute.isdigit() and hour == dom == month == dow == "*":
        return f"Every hour at minute {int(minute)}"
    if minute.isdigit() and hour.startswith("*/") and dom == month == dow == "*":
        return f"Every {hour[2:]} hours at minute {int(minute)}"
    if minute.isdigit() and hour.isdigit() and dom == month == "*":
        when = _at(hour, minute) + tzs
        if dow == "*":
            return f"Every day at {when}"
        if dow in ("1-5", "MON-FRI", "mon-fri"):
            return f"Every weekday at {when}"
        if dow.isdigit() and int(dow) <= 7:
            return f"Every {_DAYS[int(dow) % 7]} at {when}"
    if minute.isdigit() and hour.isdigit() and dom.isdigit() and month == dow == "*":
        return f"On day {int(dom)} of every month at {_at(hour, minute)}{tzs}"
    return f"At minute {minute}, hour {hour}, day-of-month {dom}, month {month}, day-of-week {dow}{tzs}"


def preview(expr: str, timezone: str = "UTC", count: int = 3) -> dict:
    expr = validate(expr, timezone)
    from hubml.extensions.jobs.db import iso

    # what a month of this schedule costs is runs × price per run: count them
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    month_end = now + dt.timedelta(days=30)
    from croniter import croniter

    it = croniter(expr, now.replace(tzinfo=dt.UTC).astimezone(zone(timezone)))
    per_month, t = 0, now
    while per_month < 2000:
        t = it.get_next(dt.datetime).astimezone(dt.UTC).replace(tzinfo=None)
        if t > month_end:
            break
        per_month += 1
    else:  # frequent schedules: extrapolate from the first 2000 runs
        per_month = round(per_month * (month_end - now) / (t - now))
    return {
        "runs_per_month": per_month,
        "schedule": expr,
        "timezone": timezone,
        "description": describe(expr, timezone),
        "next_runs": [iso(t) for t in next_times(expr, timezone, count=count)],
    }
