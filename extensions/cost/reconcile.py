"""Servers and apps in the ledger, from the hub's own records.

Every ``cost.poll_interval_s`` (and at once when the hub says a server stopped) the cost service
lists the running servers: each one not in the ledger yet is opened with the start time the hub
recorded and the price its profile has now (the price in force when it started: a charge keeps
it), and each open charge whose server is gone is closed. So a server started while this service
was down is charged from its real start, and one adopted after a hub restart is the same charge
as before (the key is its user, name and start), never a second one.

End times: while the service watches, a server's end is the moment it is first seen gone (within
one poll of its stop). A charge not confirmed for a while (this service or the hub was down) ends
at the last moment it was confirmed running, so a server that stopped unseen is not charged for
the time nobody was looking.
"""

from __future__ import annotations

import datetime as dt
import logging

from hubml.extensions.common.hub import active_users

from . import ledger

log = logging.getLogger("hubml.cost")

APP_PREFIX = "app-"
SEEN_EVERY_S = 10  # how often running charges are confirmed in the store


def parse_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ledger.naive(when if when.tzinfo else when.replace(tzinfo=dt.UTC))


def server_ref(user: str, name: str, started: dt.datetime) -> str:
    return f"{user}/{name}@{started.isoformat(timespec='milliseconds')}"


class Reconciler:
    def __init__(self, engine, settings, hub, poll_interval_s: float, jobs_url: str = ""):
        self.engine, self.settings, self.hub = engine, settings, hub
        self.poll_interval_s = poll_interval_s
        self.jobs_url = jobs_url
        self.last_ok: dt.datetime | None = None
        self._last_seen_write: dt.datetime | None = None
        self._jobs_since: dt.datetime | None = None
        self._groups: dict[str, tuple[float, list[str]]] = {}

    async def groups_of(self, user: str) -> list[str]:
        import time

        cached = self._groups.get(user)
        if cached and time.monotonic() - cached[0] < 60:
            return cached[1]
        try:
            groups = sorted(await self.hub.groups_of(user))
        except Exception:
            groups = cached[1] if cached else []
        self._groups[user] = (time.monotonic(), groups)
        return groups

    async def jobs_once(self) -> dict:
        """Job runs, from the jobs service's own clock: opened at their start, closed at their
        end; a run put back in its queue is forgotten until it starts again."""
        if not self.jobs_url:
            return {"opened": [], "closed": []}
        import json
        import os

        from tornado import httpclient

        if self._jobs_since is None:
            last = ledger.latest_end(self.engine, "job")
            start = ledger.month_start(dt.datetime.now(dt.UTC))
            self._jobs_since = min(last, start) if last else start
        since = self._jobs_since.isoformat() + "Z"
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(
                f"{self.jobs_url}api/ledger?since={since}",
                headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"},
                request_timeout=15,
            )
            data = json.loads(resp.body)
        except Exception as e:
            log.warning("cost: the jobs service's runs could not be read (%s); next pass", e)
            return {"opened": [], "closed": []}
        opened, closed = [], []
        for run in data.get("runs", []):
            started = parse_iso(run.get("started_at"))
            if started is None:
                if run.get("status") == "queued":
                    ledger.drop_charge(self.engine, "job", run["id"])
                continue
            if ledger.open_charge(
                self.engine,
                "job",
                run["id"],
                user=run["owner"],
                groups=await self.groups_of(run["owner"]),
                what=f"job {run.get('job_name') or run['id']}",
                profile=run["profile"],
                price_per_hour=run["price_per_hour"],
                started_at=started,
            ):
                opened.append(run["id"])
            finished = parse_iso(run.get("finished_at"))
            if finished and ledger.close_charge(
                self.engine, "job", run["id"], finished, run.get("status", "")
            ):
                closed.append(run["id"])
        now = parse_iso(data.get("now"))
        if now:  # a little overlap: a run finishing as this was read is seen next time
            self._jobs_since = now - dt.timedelta(minutes=5)
        return {"opened": opened, "closed": closed}

    async def running(self) -> dict[str, dict]:
        """ref -> what the hub says runs now (servers and apps with a start time)."""
        out = {}
        async for user in active_users(self.hub):
            for name, server in (user.get("servers") or {}).items():
                started = parse_iso(server.get("started"))
                if started is None:
                    continue
                options = server.get("user_options") or {}
                slug = options.get("profile") if isinstance(options, dict) else None
                profile = self.settings.profile(slug) if slug else self.settings.default_profile
                app = name.startswith(APP_PREFIX)
                out[server_ref(user["name"], name, started)] = {
                    "kind": "app" if app else "server",
                    "user": user["name"],
                    "groups": user.get("groups") or [],
                    "what": f"app {name[len(APP_PREFIX) :]}"
                    if app
                    else (
                        f"{user['name']}'s server {name}" if name else f"{user['name']}'s server"
                    ),
                    "profile": profile.slug if profile else (slug or "unknown"),
                    "price_per_hour": profile.price_per_hour if profile else 0.0,
                    "started_at": started,
                }
        return out

    async def once(self, now: dt.datetime | None = None) -> dict:
        """One pass; what it opened and closed. A hub that does not answer changes nothing."""
        try:
            running = await self.running()
        except OSError as e:
            log.warning("cost: the hub's servers could not be read (%s); charges stay open", e)
            return {"opened": [], "closed": []}
        now = ledger.naive(now or dt.datetime.now(dt.UTC))
        opened, closed = [], []
        open_rows = {r.ref: r for r in ledger.open_charges(self.engine, ("server", "app"))}
        for ref, item in running.items():
            if ref not in open_rows and ledger.open_charge(self.engine, ref=ref, now=now, **item):
                opened.append(ref)
        # a gap since the last good pass (this service or the hub was down): ends are not known
        # better than the last time each charge was confirmed
        watched = self.last_ok is not None and (now - self.last_ok).total_seconds() <= max(
            5.0, 5 * self.poll_interval_s
        )
        for ref, row in open_rows.items():
            if ref in running:
                continue
            ended = now if watched else max(row.seen_at, row.started_at)
            if ledger.close_charge(self.engine, row.kind, ref, ended, "stopped"):
                closed.append(ref)
        if (
            self._last_seen_write is None
            or (now - self._last_seen_write).total_seconds() >= SEEN_EVERY_S
        ):
            ids = [r.id for ref, r in open_rows.items() if ref in running]
            ledger.mark_seen(self.engine, ids, now)
            self._last_seen_write = now
        self.last_ok = now
        for ref in opened:
            log.info("cost: charging %s from its start", ref)
        for ref in closed:
            log.info("cost: %s ended", ref)
        return {"opened": opened, "closed": closed}
