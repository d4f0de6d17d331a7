"""The ledger as people read it: month to date by kind and profile, what runs now and where the
month is heading, per person and (for admins) per group and profile; Prometheus counters."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from . import ledger


def month_bounds(month: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of ``month`` (``YYYY-MM``, default this one); ValueError saying what is allowed."""
    if month:
        try:
            start = dt.datetime.strptime(month, "%Y-%m")
        except ValueError:
            raise ValueError(f"month: YYYY-MM, such as {now:%Y-%m} (got {month!r})") from None
    else:
        start = ledger.month_start(now)
    return start, ledger.next_month(start)


def _item(row, start, until, now) -> dict:
    seconds, cost = ledger.cost_between(row, start, until)
    item = {
        "kind": row.kind,
        "what": row.what,
        "user": row.user,
        "profile": row.profile,
        "price_per_hour": row.price_per_hour,
        "started_at": row.started_at.isoformat() + "Z",
        "ended_at": row.ended_at.isoformat() + "Z" if row.ended_at else None,
        "running": row.ended_at is None,
        "seconds": round(seconds, 3),
        "cost_usd": round(cost, 6),
    }
    if row.ended_at is None:
        left = max(0.0, (ledger.next_month(ledger.month_start(now)) - now).total_seconds())
        item["projected_month_usd"] = round(cost + row.price_per_hour * left / 3600, 2)
    return item


def usage(engine, now: dt.datetime, month: str | None = None, user: str | None = None) -> dict:
    """Spend in ``month`` (until now for the current one): totals by kind, profile, user and
    group, the items, and what runs now with its projected month."""
    now = ledger.naive(now)
    start, end = month_bounds(month, now)
    until = min(end, now)
    rows = ledger.rows_between(engine, start, until, user) if until > start else []
    items = [_item(r, start, until, now) for r in rows]
    by_kind: dict[str, float] = {k: 0.0 for k in ledger.KINDS}
    by_profile: dict[str, float] = defaultdict(float)
    by_user: dict[str, float] = defaultdict(float)
    by_group: dict[str, float] = defaultdict(float)
    by_day: dict[str, dict[str, float]] = defaultdict(lambda: {k: 0.0 for k in ledger.KINDS})
    for row, item in zip(rows, items, strict=True):
        by_kind[row.kind] += item["cost_usd"]
        by_profile[row.profile] += item["cost_usd"]
        by_user[row.user] += item["cost_usd"]
        for g in row.groups or []:
            by_group[g] += item["cost_usd"]
        day = max(row.started_at, start)
        stop = min(row.ended_at or until, until)
        while day < stop:  # spend per day, for the plot
            next_day = (day + dt.timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            part_end = min(next_day, stop)
            by_day[day.strftime("%Y-%m-%d")][row.kind] += (
                row.price_per_hour * (part_end - day).total_seconds() / 3600
            )
            day = part_end
    r2 = lambda d: {k: round(v, 4) for k, v in sorted(d.items())}  # noqa: E731
    total = sum(i["cost_usd"] for i in items)
    return {
        "month": start.strftime("%Y-%m"),
        "until": until.isoformat() + "Z",
        "spent_usd": round(total, 4),
        "by_kind": r2(by_kind),
        "by_profile": r2(by_profile),
        "by_user": r2(by_user),
        "by_group": r2(by_group),
        "by_day": {d: r2(v) for d, v in sorted(by_day.items())},
        "top_spenders": [
            {"user": u, "spent_usd": round(v, 4)}
            for u, v in sorted(by_user.items(), key=lambda kv: -kv[1])[:10]
        ],
        "running": [i for i in items if i["running"]],
        "items": items,
    }


def prometheus(engine, now: dt.datetime) -> str:
    """All-time spend as Prometheus counters (and what runs as gauges), text format 0.0.4."""
    now = ledger.naive(now)
    rows = ledger.rows_between(engine, dt.datetime(2000, 1, 1), now)
    spent: dict[tuple, float] = defaultdict(float)
    seconds: dict[tuple, float] = defaultdict(float)
    running: dict[tuple, int] = defaultdict(int)
    by_group: dict[tuple, float] = defaultdict(float)
    for row in rows:
        s, c = ledger.cost_between(row, row.started_at, now)
        key = (row.user, row.kind, row.profile)
        spent[key] += c
        seconds[key] += s
        for g in row.groups or []:
            by_group[(g, row.kind, row.profile)] += c
        if row.ended_at is None:
            running[key] += 1

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    def labels(names, values) -> str:
        return "{" + ",".join(f'{n}="{esc(v)}"' for n, v in zip(names, values, strict=True)) + "}"

    per_user = ("user", "kind", "profile")
    families = [
        (
            "hubml_cost_usd_total",
            "counter",
            "What servers, apps and job runs have cost, in USD.",
            per_user,
            spent,
            "{:.6f}",
        ),
        (
            "hubml_cost_group_usd_total",
            "counter",
            "What each group's members' servers, apps and job runs have cost, in USD.",
            ("group", "kind", "profile"),
            by_group,
            "{:.6f}",
        ),
        (
            "hubml_runtime_seconds_total",
            "counter",
            "How long servers, apps and job runs have run.",
            per_user,
            seconds,
            "{:.3f}",
        ),
        (
            "hubml_running",
            "gauge",
            "Servers, apps and job runs running now.",
            per_user,
            running,
            "{}",
        ),
    ]
    lines = []
    for name, kind, help_text, names, values, fmt in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels(names, k)} {fmt.format(v)}" for k, v in sorted(values.items())]
    return "\n".join(lines) + "\n"


def csv_text(report: dict) -> str:
    import csv
    import io

    out = io.StringIO()
    fields = [
        "user",
        "kind",
        "what",
        "profile",
        "price_per_hour",
        "started_at",
        "ended_at",
        "seconds",
        "cost_usd",
    ]
    writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for item in report["items"]:
        writer.writerow(item)
    return out.getvalue()
