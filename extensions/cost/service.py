"""The ``cost`` hub service: the ledger's writer for servers and apps, and what it says.

| method | path | who | what |
|---|---|---|---|
| GET | ``api/me?month=YYYY-MM`` | anyone | their month: totals by kind and profile, items, what runs and its projected month |
| GET | ``api/usage?month=`` | admins | everyone's month: per user, group and profile, top spenders |
| GET | ``api/usage.csv?month=`` | admins | the month's charges as CSV |
| GET | ``metrics`` | admins, tokens with ``read:metrics`` | Prometheus counters per user, group, kind and profile |
| POST | ``api/reconcile`` | the hub | read the hub's servers now (it calls this when a server stops) |
| GET, PUT | ``api/budgets``, ``api/budgets/<user or group>/<name>`` | admins | the budgets in force; set one at run time |
| POST | ``api/check`` | the hub, the jobs service | may this start within the budgets? (its cost, what is left, the refusal) |
| GET | ``""`` | anyone | a page: the month by kind, per day, and what runs |
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import logging
import sys

from hubml.extensions.common.app import (
    ServiceContext,
    StoreUnavailable,
    load_service_settings,
    make_app,
    open_store,
    serve,
    serve_unavailable,
    setup_logging,
)
from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler, page_html

from . import ledger, report
from .reconcile import Reconciler

log = logging.getLogger("hubml.cost")


class CostContext(ServiceContext):
    def __init__(self, settings, engine, **kw):
        super().__init__("cost", settings, **kw)
        self.engine = engine
        from hubml.extensions.common import urls

        self.reconciler = Reconciler(
            engine,
            settings,
            self.hub,
            settings.cost.poll_interval_s,
            urls.service_internal_url("jobs") if settings.jobs.enabled else "",
        )
        self.wake = asyncio.Event()
        from .budgets import Enforcer

        self.enforcer = Enforcer(engine, settings, self.hub, self.reconciler.groups_of)

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class CostBase(ServiceHandler):
    def month(self) -> str | None:
        return self.get_argument("month", None) or None

    def usage(self, user: str | None) -> dict:
        try:
            return report.usage(self.ctx.engine, self.ctx.now(), self.month(), user)
        except ValueError as e:
            raise APIError(400, str(e)) from None

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise APIError(403, f"{what} is for admins; your own spend is at api/me")


class MeHandler(CostBase):
    async def get(self):
        from .budgets import check

        groups = await self.ctx.reconciler.groups_of(self.user_name)
        budget = check(
            self.ctx.engine, self.ctx.settings, self.user_name, groups, 0.0, "", self.ctx.now()
        )
        self.send({"user": self.user_name, **self.usage(self.user_name), "budget": budget})


class BudgetsHandler(CostBase):
    """``GET api/budgets`` (admins): the budgets in force; ``PUT api/budgets/<user|group>/<name>
    {"usd": 10}`` sets one at run time over the settings (``{"usd": null}``: none)."""

    async def get(self):
        from .budgets import effective

        self.require_admin("the budgets")
        users, groups = effective(self.ctx.engine, self.ctx.settings)
        self.send({"users": users, "groups": groups})

    async def put(self, scope, name):
        self.require_admin("setting budgets")
        body = self.json_body()
        usd = body.get("usd", "missing")
        if usd is not None and (
            isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0
        ):
            raise APIError(
                400, f"usd: a monthly budget in USD, 0 or more, or null for none (got {usd!r})"
            )
        ledger.set_budget(self.ctx.engine, scope, name, usd, self.user_name, self.ctx.now())
        log.info("cost: %s set the %s budget of %s to %s", self.user_name, scope, name, usd)
        from .budgets import effective

        users, groups = effective(self.ctx.engine, self.ctx.settings)
        self.send({"users": users, "groups": groups})


# the services that ask before something starts: the hub (with this service's own token, from
# its spawner) and the jobs service (before each run)
CHECKERS = {"cost", "jobs"}


class CheckHandler(CostBase):
    """``POST api/check {"user", "profile", "hours"?, "groups"?}``: may this start? The answer
    says what it would cost, what is left, and the refusal's words when it may not."""

    async def post(self):
        from .budgets import check, projected_cost

        model = self.current_user
        if (
            not (model.get("kind") == "service" and model.get("name") in CHECKERS)
            and not self.is_admin
        ):
            raise APIError(403, "budget checks are asked by the hub and the jobs service")
        body = self.json_body()
        user, slug, hours = body.get("user"), body.get("profile"), body.get("hours")
        if not isinstance(user, str) or not user:
            raise APIError(400, "user: the name of the person who would start it")
        profile = self.ctx.settings.profile(slug) if isinstance(slug, str) else None
        if profile is None:
            raise APIError(400, f"profile: one of the catalog's slugs (got {slug!r})")
        if hours is not None and (not isinstance(hours, int | float) or hours <= 0):
            raise APIError(400, f"hours: a positive number (got {hours!r})")
        groups = body.get("groups")
        if not isinstance(groups, list):
            groups = await self.ctx.reconciler.groups_of(user)
        cost, what = projected_cost(profile, hours, self.ctx.settings.cost.unlimited_hours)
        self.send(
            check(self.ctx.engine, self.ctx.settings, user, groups, cost, what, self.ctx.now())
        )


class UsageHandler(CostBase):
    async def get(self):
        self.require_admin("everyone's spend")
        self.send(self.usage(None))


class UsageCSVHandler(CostBase):
    async def get(self):
        self.require_admin("everyone's spend")
        data = self.usage(None)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header(
            "Content-Disposition", f'attachment; filename="hubml-cost-{data["month"]}.csv"'
        )
        self.finish(report.csv_text(data))


class MetricsHandler(CostBase):
    async def get(self):
        scopes = set(self.current_user.get("scopes", []))
        if not (self.is_admin or "read:metrics" in scopes):
            raise APIError(
                403, "the metrics need an admin's token or one with the read:metrics scope"
            )
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(report.prometheus(self.ctx.engine, self.ctx.now()))


class ReconcileHandler(CostBase):
    async def post(self):
        model = self.current_user
        if (
            not (model.get("kind") == "service" and model.get("name") == "cost")
            and not self.is_admin
        ):
            raise APIError(403, "only the hub asks for this")
        self.ctx.wake.set()
        self.set_status(202)
        self.finish()


def _money(x: float) -> str:
    from hubml.hub_config.catalog import format_usd

    return format_usd(x) if x >= 0.001 else ("$0" if x <= 0 else f"${x:.4f}")


def day_plot(by_day: dict) -> str:
    """Spend per day, stacked by kind, as a small inline SVG (no script, no third party)."""
    if not by_day:
        return ""
    colours = {"server": "#0969da", "app": "#8250df", "job": "#1a7f37"}
    days = sorted(by_day)
    top = max(sum(v.values()) for v in by_day.values()) or 1
    w, h, bar = 560, 120, max(4, min(24, 560 // max(1, len(days)) - 2))
    parts = [f"<svg role='img' aria-label='spend per day, by kind' width='{w}' height='{h + 20}'>"]
    for i, d in enumerate(days):
        y = h
        for kind in ("server", "app", "job"):
            v = by_day[d].get(kind, 0.0)
            bh = v / top * h
            if bh <= 0:
                continue
            y -= bh
            parts.append(
                f"<rect x='{i * (bar + 2)}' y='{y:.1f}' width='{bar}' height='{bh:.1f}' "
                f"fill='{colours[kind]}'><title>{d} {kind}: {_money(v)}</title></rect>"
            )
    parts.append(f"<text x='0' y='{h + 15}' font-size='11'>{days[0]}</text>")
    if len(days) > 1:
        parts.append(f"<text x='{w - 70}' y='{h + 15}' font-size='11'>{days[-1]}</text>")
    parts.append("</svg>")
    legend = " ".join(f"<span style='color:{c}'>■</span> {k}s" for k, c in colours.items())
    return "".join(parts) + f"<p><small>{legend}</small></p>"


class CostPage(CostBase):
    page = True

    async def get(self):
        data = self.usage(self.user_name)
        e = html.escape
        kinds = "".join(
            f"<tr><td>{e(k)}s</td><td>{e(_money(v))}</td></tr>" for k, v in data["by_kind"].items()
        )
        running = (
            "".join(
                f"<li>{e(i['what'])} on {e(i['profile'])}: {e(_money(i['cost_usd']))} this month, "
                f"about {e(_money(i['projected_month_usd']))} by the month's end if it keeps running</li>"
                for i in data["running"]
            )
            or "<li>nothing</li>"
        )
        from .budgets import check

        groups = await self.ctx.reconciler.groups_of(self.user_name)
        budget = check(
            self.ctx.engine, self.ctx.settings, self.user_name, groups, 0.0, "", self.ctx.now()
        )
        budgets = "".join(
            f"<li>{'Your' if b['scope'] == 'user' else 'Group ' + e(b['name']) + chr(39) + 's'} budget: "
            f"{e(_money(b['left_usd']))} left of {e(_money(b['budget_usd']))}</li>"
            for b in budget["budgets"]
        )
        warnings = "".join(f"<p role='alert'><b>{e(w)}</b></p>" for w in budget["warnings"])
        body = (
            warnings
            + (f"<ul>{budgets}</ul>" if budgets else "")
            + f"<p>Signed in as <b>{e(self.user_name)}</b>. {e(data['month'])}, until now: "
            f"<b>{e(_money(data['spent_usd']))}</b>.</p>"
            f"<table>{kinds}</table>{day_plot(data['by_day'])}"
            f"<h2 style='font-size:1.1rem'>Running now</h2><ul>{running}</ul>"
            "<p><small>The same as JSON: <a href='api/me'>api/me</a>"
            + (
                " · everyone: <a href='api/usage'>api/usage</a>, <a href='api/usage.csv'>CSV</a>"
                if self.is_admin
                else ""
            )
            + "</small></p>"
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page_html("What you spent", body))


ROUTES = [
    ("", CostPage),
    ("api/me", MeHandler),
    ("api/usage", UsageHandler),
    ("api/usage.csv", UsageCSVHandler),
    ("api/reconcile", ReconcileHandler),
    ("api/check", CheckHandler),
    ("api/budgets", BudgetsHandler),
    (r"api/budgets/(user|group)/([^/]+)", BudgetsHandler),
    ("metrics", MetricsHandler),
]


def main() -> int:
    setup_logging()
    settings = load_service_settings()
    try:
        engine = open_store("cost", ledger.db_url(settings), ledger.open_ledger_at)
    except StoreUnavailable as problem:
        return serve_unavailable("cost", problem)
    ctx = CostContext(settings, engine)
    app = make_app(ctx, ROUTES)

    async def loop():
        while True:
            for one in (
                ctx.reconciler.once,
                ctx.reconciler.jobs_once,
                lambda: ctx.enforcer.once(ctx.now()),
            ):
                try:
                    await one()
                except Exception:
                    log.exception("cost: a pass failed; the next one tries again")
            ctx.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.wake.wait(), settings.cost.poll_interval_s)

    serve(app, "cost", on_start=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
