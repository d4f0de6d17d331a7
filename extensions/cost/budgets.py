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
    # the selector's own estimate (hub_config.catalog): the same numbers on every screen
    from hubml.hub_config.catalog import estimate_cost

    return estimate_cost(profile, hours), basis


def effective(engine, settings) -> tuple[dict[str, float], dict[str, float]]:
    """(user budgets, group budgets) in force: the settings', with what admins set at run time
    over them (a budget set to none removes the settings' one)."""
    users = dict(settings.cost.budgets.users)
    groups = dict(settings.cost.budgets.groups)
    for (scope, name), usd_ in ledger.budget_overrides(engine).items():
        target = users if scope == "user" else groups
        if usd_ is None:
            target.pop(name, None)
        else:
            target[name] = usd_
    return users, groups


def standing(engine, settings, user: str, groups: Iterable[str], now: dt.datetime) -> list[dict]:
    """Each budget that applies to ``user``: scope, budget, spent and left this month."""
    now = ledger.naive(now)
    users, groups_budgets = effective(engine, settings)
    groups = sorted(set(groups))
    out = []
    start = ledger.month_start(now)
    rows = None
    if user in users:
        out.append(
            {
                "scope": "user",
                "name": user,
                "budget_usd": users[user],
                "spent_usd": ledger.spent(engine, user, now),
            }
        )
    for group in groups:
        if group not in groups_budgets:
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
                "budget_usd": groups_budgets[group],
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
        (
            f"{whose(b).capitalize()} budget of {usd(b['budget_usd'])} this month is spent "
            f"({usd(b['spent_usd'])})."
            + (" What runs on it stops soon." if settings.cost.when_exhausted == "stop" else "")
            if b["left_usd"] <= 0
            else f"{whose(b).capitalize()} budget is {b['spent_usd'] / b['budget_usd']:.0%} spent: "
            f"{usd(b['left_usd'])} left of {usd(b['budget_usd'])} this month."
        )
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


class Enforcer:
    """``cost.when_exhausted: stop``: a person's servers and apps stop ``exhausted_grace_s``
    after one of their budgets ran out (an hour to save their work; the home page and the
    selector say so meanwhile). Job runs end by their own timeout, which their check counted."""

    def __init__(self, engine, settings, hub, groups_of):
        self.engine, self.settings, self.hub, self.groups_of = engine, settings, hub, groups_of
        self.exhausted: dict[str, dt.datetime] = {}

    async def once(self, now: dt.datetime) -> list[str]:
        """Stop what must stop now; the servers stopped (``user/name``)."""
        from urllib.parse import quote

        if self.settings.cost.when_exhausted != "stop":
            return []
        now = ledger.naive(now)
        running: dict[str, list[str]] = {}
        for row in ledger.open_charges(self.engine, ("server", "app")):
            running.setdefault(row.user, []).append(row.ref.rsplit("@", 1)[0].split("/", 1)[1])
        stopped = []
        for user, servers in running.items():
            spent = [
                b
                for b in standing(self.engine, self.settings, user, await self.groups_of(user), now)
                if b["left_usd"] <= 0
            ]
            if not spent:
                self.exhausted.pop(user, None)
                continue
            since = self.exhausted.setdefault(user, now)
            if since == now:
                import logging

                logging.getLogger("hubml.cost").info(
                    "cost: the %s budget of %s is spent; %s's servers and apps stop in %s s",
                    spent[0]["scope"],
                    spent[0]["name"],
                    user,
                    self.settings.cost.exhausted_grace_s,
                )
            if (now - since).total_seconds() < self.settings.cost.exhausted_grace_s:
                continue
            for name in servers:
                path = (
                    f"users/{quote(user)}/servers/{quote(name)}"
                    if name
                    else f"users/{quote(user)}/server"
                )
                code, answer = await self.hub.request("DELETE", path)
                if code in (202, 204):
                    stopped.append(f"{user}/{name}")
        return stopped
