"""Budgets: what is left of each monthly budget that applies to a person, and whether something
that would cost ``cost_usd`` may start.

A person is held to their own budget (``cost.budgets.users``) and to each of their groups'
(``cost.budgets.groups``, what all the group's members spent); none set, nothing is limited.
The month is the calendar month in UTC; running things count what they have cost so far.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from . import ledger


def usd(x: float) -> str:
    from hubml.hub_config.catalog import format_usd

    return format_usd(x) if x >= 0.001 else ("$0.00" if x <= 0 else f"${x:.4f}")


def projected_cost(profile, hours: float | None, unlimited_hours: float) -> tuple[float, str]:
    """(USD, basis in words) of one start on ``profile`` for ``hours`` (a job run's timeout;
    default: the profile's limit, or ``unlimited_hours`` for a profile without one)."""
    given = hours is not None
    if not given:
        hours = profile.max_runtime / 3600 if profile.max_runtime else unlimited_hours
    shown = f"{hours:g} h" if hours >= 1 else f"{hours * 60:g} min"
    price = f"{profile.display_name} at {usd(profile.price_per_hour)}/h"
    if given:
        basis = f"{price} for its {shown} timeout"
    elif profile.max_runtime:
        basis = f"{price} for its {shown} limit"
    else:
        basis = f"{price} for {shown}, as it has no limit"
    return profile.price_per_hour * hours, basis


def standing(engine, settings, user: str, groups: Iterable[str], now: dt.datetime) -> list[dict]:
    """Each budget that applies to ``user``: scope, budget, spent and left this month."""
    now = ledger.naive(now)
    budgets = settings.cost.budgets
    groups = sorted(set(groups))
    out = []
    start = ledger.month_start(now)
    rows = None
    if user in budgets.users:
        out.append(
            {
                "scope": "user",
                "name": user,
                "budget_usd": budgets.users[user],
                "spent_usd": ledger.spent(engine, user, now),
            }
        )
    for group in groups:
        if group not in budgets.groups:
            continue
        if rows is None:
            rows = ledger.rows_between(engine, start, now)
        spent = sum(
            ledger.cost_between(r, start, now)[1] for r in rows if group in (r.groups or [])
        )
        out.append(
            {
                "scope": "group",
                "name": group,
                "budget_usd": budgets.groups[group],
                "spent_usd": spent,
            }
        )
    for b in out:
        b["left_usd"] = max(0.0, b["budget_usd"] - b["spent_usd"])
        b["spent_usd"] = round(b["spent_usd"], 6)
    return out


def whose(b: dict) -> str:
    return "your" if b["scope"] == "user" else f"group {b['name']}'s"


def check(
    engine, settings, user: str, groups: Iterable[str], cost_usd: float, what: str, now: dt.datetime
) -> dict:
    """Whether something costing up to ``cost_usd`` (described by ``what``) may start for
    ``user`` now: ``allowed``, the ``message`` of a refusal, ``warnings`` and the ``budgets``."""
    budgets = standing(engine, settings, user, groups, now)
    admins = ", ".join(settings.auth.admin_users) or "an admin"
    refusal = ""
    for b in budgets:
        if cost_usd > b["left_usd"] + 1e-9:
            refusal = (
                f"This would cost up to {usd(cost_usd)} ({what}), and {whose(b)} budget has "
                f"{usd(b['left_usd'])} left of {usd(b['budget_usd'])} this month "
                f"({usd(b['spent_usd'])} spent). Choose a cheaper profile, or ask {admins} to "
                "raise the budget."
            )
            break
    warnings = [
        f"{whose(b).capitalize()} budget is {b['spent_usd'] / b['budget_usd']:.0%} spent: "
        f"{usd(b['left_usd'])} left of {usd(b['budget_usd'])} this month."
        for b in budgets
        if b["budget_usd"] > 0 and b["spent_usd"] >= settings.cost.warn_at * b["budget_usd"]
    ] + [
        f"{whose(b).capitalize()} budget is $0: nothing that costs can start."
        for b in budgets
        if b["budget_usd"] == 0
    ]
    return {
        "allowed": not refusal,
        "message": refusal,
        "warnings": warnings,
        "budgets": budgets,
        "cost_usd": round(cost_usd, 6),
    }
