"""What the home page shows, asked of the hub and of each service with the person's own token.

The home service holds no data of its own. Its OAuth tokens carry only what the page needs on a
person's behalf (``oauth_client_allowed_scopes``: reading their own servers, and access to the
jobs, apps and mlflow services), so every service decides what this person may see exactly as it
would for their own browser or kernel: nothing here can show more than they could fetch
themselves. Each section is asked for at once; one that does not answer is reported in its place,
the others still show.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from urllib.parse import quote

from tornado import httpclient

from hubml.extensions.common import urls

TIMEOUT_S = 10
RECENT_RUNS = 10
APP_PREFIX = "app-"


class Unanswered(Exception):
    """A service or the hub gave no usable answer; the message says which and why."""


async def call(base: str, what: str, method: str, path: str, token: str, body=None):
    """``(status, JSON)`` of ``method base+path`` with the person's token; Unanswered when the
    other side is down or answers something that is not JSON."""
    http = httpclient.AsyncHTTPClient()
    try:
        resp = await http.fetch(
            base + path,
            method=method,
            raise_error=False,
            allow_nonstandard_methods=True,
            request_timeout=TIMEOUT_S,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
        )
    except (OSError, httpclient.HTTPClientError) as e:
        raise Unanswered(f"the {what} did not answer ({e})") from None
    if resp.code == 599:
        raise Unanswered(f"the {what} did not answer ({resp.error})")
    try:
        data = json.loads(resp.body) if resp.body else {}
    except ValueError:
        raise Unanswered(f"the {what} answered HTTP {resp.code} without JSON") from None
    return resp.code, data


def _ok(status: int, data: dict, what: str) -> dict:
    if status >= 400:
        raise Unanswered(
            f"the {what} answered HTTP {status}: {data.get('message', '')}".rstrip(": ")
        )
    return data


def _parse(iso: str | None) -> dt.datetime | None:
    if not iso:
        return None
    try:
        when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def running_cost(price_per_hour: float | None, started: str | None, now=None) -> dict:
    """Seconds running and cost so far of something started at ``started`` (ISO)."""
    start = _parse(started)
    if start is None or price_per_hour is None:
        return {"running_s": None, "cost_usd": None}
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0.0, (now - start).total_seconds())
    return {"running_s": seconds, "cost_usd": price_per_hour * seconds / 3600}


class Gatherer:
    """Asks the hub and the enabled services for one person's sections."""

    def __init__(self, settings, hub_api_url: str):
        self.settings = settings
        self.hub_api_url = hub_api_url.rstrip("/") + "/"
        self.services = {
            name: urls.service_internal_url(name)
            for name, on in (
                ("jobs", settings.jobs.enabled),
                ("apps", settings.apps.enabled),
                ("mlflow", settings.tracking.enabled),
                ("cost", settings.cost.enabled),
                ("features", settings.features.enabled),
            )
            if on and urls.service_internal_url(name)
        }

    async def servers(self, user: str, token: str) -> list[dict]:
        status, data = await call(
            self.hub_api_url, "hub", "GET", f"users/{quote(user, safe='')}", token
        )
        data = _ok(status, data, "hub")
        out = []
        for name, server in sorted((data.get("servers") or {}).items()):
            if name.startswith(APP_PREFIX):
                continue  # apps are listed with the apps
            slug = (server.get("user_options") or {}).get("profile")
            profile = self.settings.profile(slug) if slug else None
            price = profile.price_per_hour if profile else None
            out.append(
                {
                    "name": name,
                    "url": urls.user_server_url(user, name),
                    "ready": bool(server.get("ready")),
                    "pending": server.get("pending"),
                    "profile": slug,
                    "profile_name": profile.display_name if profile else slug,
                    "price_per_hour": price,
                    "started": server.get("started"),
                    "last_activity": server.get("last_activity"),
                    **running_cost(price, server.get("started")),
                }
            )
        return out

    async def section(self, service: str, path: str, token: str) -> dict:
        base = self.services[service]
        status, data = await call(base, f"{service} service", "GET", path, token)
        return _ok(status, data, f"{service} service")

    async def gather(self, user: str, token: str) -> dict:
        """Every section for ``user``; ``problems`` names the sections that could not be had."""
        asks = {"servers": self.servers(user, token)}
        if "jobs" in self.services:
            asks["schedules"] = self.section("jobs", "api/jobs", token)
            asks["runs"] = self.section("jobs", f"api/runs?limit={RECENT_RUNS}", token)
        if "apps" in self.services:
            asks["apps"] = self.section("apps", "api/apps", token)
        if "mlflow" in self.services:
            asks["approvals"] = self.section("mlflow", "hubml/api/approvals", token)
        if "cost" in self.services:
            asks["month"] = self.section("cost", "api/me", token)
        if "features" in self.services:
            asks["proposals"] = self.section("features", "api/proposals?state=pending", token)
        answers = await asyncio.gather(*asks.values(), return_exceptions=True)
        out: dict = {"user": user, "problems": {}}
        for key, answer in zip(asks, answers, strict=True):
            if isinstance(answer, Unanswered):
                out["problems"][key] = str(answer)
                answer = None
            elif isinstance(answer, BaseException):
                raise answer
            out[key] = answer
        return shape(out)


def shape(out: dict) -> dict:
    """The services' answers as the page lists them."""
    schedules = out.get("schedules")
    if schedules is not None:
        out["schedules"] = schedules.get("jobs", [])
        names = {j["id"]: j["name"] for j in out["schedules"]}
    else:
        names = {}
    runs = out.get("runs")
    if runs is not None:
        out["runs"] = [{**r, "job_name": names.get(r["job_id"], "")} for r in runs.get("runs", [])]
    apps = out.get("apps")
    if apps is not None:
        mine = []
        for a in apps.get("apps", []):
            running = a.get("status") == "running"
            mine.append(
                {
                    **a,
                    **(
                        running_cost(a.get("price_per_hour"), a.get("started_at"))
                        if running
                        else {"running_s": None, "cost_usd": None}
                    ),
                }
            )
        out["apps"] = mine
        out["shared_with_me"] = apps.get("shared_with_me", [])
    proposals = out.get("proposals")
    if proposals is not None:
        pending = proposals.get("proposals", [])
        out["proposals"] = {
            "to_review": [p for p in pending if p.get("you_may_review")],
            "mine": [p for p in pending if p.get("proposed_by") == out["user"]],
        }
    return out
