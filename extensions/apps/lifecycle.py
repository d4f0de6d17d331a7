"""An app's life: start, stop, remove, share, revoke; the sweep that expires shares and idle apps.

An app is its owner's named server ``app-<name>``, started through the hub (so the hub's spawner
and catalog apply, and on Kubernetes it is a pod). Access is JupyterHub's sharing of that server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import time
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import delete, select, update

from hubml.extensions.common import urls
from hubml.extensions.common.errors import APIError
from hubml.extensions.jobs.db import iso, utcnow

from .store import app_url, apps, server_name, shares

log = logging.getLogger("hubml.apps")


async def hub_shares(ctx, owner: str, name: str) -> list[dict]:
    code, data = await ctx.hub.request("GET", f"shares/{quote(owner)}/{server_name(name)}")
    return data.get("items", []) if code == 200 else []


async def app_model(ctx, row, with_access: bool = True) -> dict:
    profile = ctx.settings.profile(row.profile)
    usage = ctx.usage(row.owner, row.name)
    model = {
        "name": row.name,
        "owner": row.owner,
        "url": app_url(row.owner, row.name),
        "status": row.status,
        "stopped_reason": row.stopped_reason,
        "source": row.source,
        "model": row.model,
        "profile": row.profile,
        "price_per_hour": profile.price_per_hour if profile else None,
        "description": row.description,
        "idle_timeout_s": row.idle_timeout_s,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "last_used_at": iso(
            dt.datetime.fromtimestamp(usage["last_used_at"], dt.UTC).replace(tzinfo=None)
        )
        if usage.get("last_used_at")
        else None,
        "last_used_by": usage.get("last_user"),
    }
    if with_access:
        with ctx.engine.connect() as conn:
            records = conn.execute(
                select(shares).where(shares.c.owner == row.owner, shares.c.app == row.name)
            ).all()
        model["shares"] = [share_model(r) for r in records]
        granted = await hub_shares(ctx, row.owner, row.name)
        model["access"] = {
            "owner": row.owner,
            "users": sorted(s["user"]["name"] for s in granted if s.get("user")),
            "groups": sorted(s["group"]["name"] for s in granted if s.get("group")),
        }
    return model


def share_model(r) -> dict:
    link = r.accept_url or ""
    if link.startswith("/"):  # the hub answers with a path on its own origin
        link = urls.hub_public_url() + link
    return {
        "id": r.id,
        "kind": r.kind,
        "target": r.target if r.kind != "link" else None,
        "url": link if r.kind == "link" else app_url(r.owner, r.app),
        "expires_at": iso(r.expires_at),
        "created_at": iso(r.created_at),
        "accepted_by": r.accepted_by or [],
    }


def log_tail(bundle: Path, lines: int = 40) -> str:
    try:
        return "\n".join((bundle / "app.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def start_app(ctx, owner: str, name: str, profile: str, timeout: float = 120) -> None:
    """Start the app's named server and wait until it answers; APIError(422) with the log if not."""
    path = f"users/{quote(owner)}/servers/{server_name(name)}"
    code, data = await ctx.hub.request(
        "POST", path, {"profile": profile, "app": name}, timeout=timeout
    )
    if code not in (201, 202):
        tail = log_tail(ctx.bundle(owner, name))
        if code >= 500 or tail:  # the spawn failed: the app's own log says why
            raise APIError(
                422,
                f"the app {name!r} crashed while starting; the end of its log says why",
                log_tail=tail,
            )
        raise APIError(code, f"the hub refused to start the app: {data.get('message')}")
    deadline = time.monotonic() + timeout
    while True:
        code, user = await ctx.hub.request("GET", f"users/{quote(owner)}")
        server = (user.get("servers") or {}).get(server_name(name))
        if server and server.get("ready"):
            break
        if not server or not server.get("pending"):
            tail = log_tail(ctx.bundle(owner, name))
            raise APIError(
                422,
                f"the app {name!r} crashed while starting; the end of its log says why",
                log_tail=tail,
            )
        if time.monotonic() > deadline:
            raise APIError(
                504,
                f"the app {name!r} did not answer within {timeout:.0f} s",
                log_tail=log_tail(ctx.bundle(owner, name)),
            )
        await asyncio.sleep(0.25)
    with ctx.engine.begin() as conn:
        conn.execute(
            update(apps)
            .where(apps.c.owner == owner, apps.c.name == name)
            .values(status="running", started_at=utcnow(), stopped_reason=None)
        )
    log.info("app %s/%s is running", owner, name)


async def stop_app(ctx, owner: str, name: str, reason: str, remove: bool = False) -> None:
    await ctx.hub.request(
        "DELETE", f"users/{quote(owner)}/servers/{server_name(name)}", {"remove": remove}
    )
    if remove:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, user = await ctx.hub.request("GET", f"users/{quote(owner)}")
        server = (user.get("servers") or {}).get(server_name(name))
        if not server or not (server.get("ready") or server.get("pending")):
            break
        await asyncio.sleep(0.25)
    with ctx.engine.begin() as conn:
        conn.execute(
            update(apps)
            .where(apps.c.owner == owner, apps.c.name == name)
            .values(status="stopped", stopped_reason=reason)
        )


async def remove_app(ctx, owner: str, name: str) -> None:
    """Everything of an app goes: server and its route, shares, codes, bundle, records."""
    with ctx.engine.connect() as conn:
        links = conn.execute(
            select(shares).where(
                shares.c.owner == owner, shares.c.app == name, shares.c.kind == "link"
            )
        ).all()
    for link in links:
        await ctx.hub.request(
            "DELETE", f"share-codes/{quote(owner)}/{server_name(name)}?id={link.target}"
        )
    await ctx.hub.request("DELETE", f"shares/{quote(owner)}/{server_name(name)}")
    await ctx.hub.request(
        "DELETE", f"users/{quote(owner)}/servers/{server_name(name)}", {"remove": True}
    )
    # the hub answers 202 while stopping: wait until the server (and its route) is gone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, user = await ctx.hub.request("GET", f"users/{quote(owner)}", timeout=10)
        if server_name(name) not in (user.get("servers") or {}):
            break
        await asyncio.sleep(0.25)
        await ctx.hub.request(
            "DELETE", f"users/{quote(owner)}/servers/{server_name(name)}", {"remove": True}
        )
    await drop_server_tokens(ctx, owner, name)
    with ctx.engine.begin() as conn:
        conn.execute(delete(shares).where(shares.c.owner == owner, shares.c.app == name))
        conn.execute(delete(apps).where(apps.c.owner == owner, apps.c.name == name))
    shutil.rmtree(ctx.bundle(owner, name), ignore_errors=True)


async def drop_server_tokens(ctx, owner: str, name: str) -> None:
    """No token of the app's server outlives it (the hub deletes it when the server stops; a
    server removed while its start was failing is checked here)."""
    code, data = await ctx.hub.request("GET", f"users/{quote(owner)}/tokens")
    prefix = f"Server at /user/{quote(owner, safe='@~')}/{server_name(name)}/"
    for token in data.get("api_tokens", []) if code == 200 else []:
        if (token.get("note") or "").startswith(prefix):
            await ctx.hub.request("DELETE", f"users/{quote(owner)}/tokens/{quote(token['id'])}")
            log.info("removed the token of %s's app %s (its server is gone)", owner, name)


async def shared_with(ctx, user: str) -> list:
    code, data = await ctx.hub.request("GET", f"users/{quote(user)}/shared")
    servers = (
        {(s["server"]["user"]["name"], s["server"]["name"]) for s in data.get("items", [])}
        if code == 200
        else set()
    )
    groups = await ctx.hub.groups_of(user)
    for g in groups:
        code, data = await ctx.hub.request("GET", f"groups/{quote(g)}/shared")
        if code == 200:
            servers |= {
                (s["server"]["user"]["name"], s["server"]["name"]) for s in data.get("items", [])
            }
    wanted = [(o, n[len("app-") :]) for o, n in servers if n.startswith("app-") and o != user]
    rows = []
    with ctx.engine.connect() as conn:
        for owner, name in sorted(wanted):
            row = conn.execute(
                select(apps).where(apps.c.owner == owner, apps.c.name == name)
            ).first()
            if row is not None:
                rows.append(row)
    return rows


async def revoke(ctx, record) -> None:
    """Take a share away at the hub now, and forget it."""
    path = f"shares/{quote(record.owner)}/{server_name(record.app)}"
    with ctx.engine.begin() as conn:
        conn.execute(delete(shares).where(shares.c.id == record.id))
        remaining = conn.execute(
            select(shares).where(shares.c.owner == record.owner, shares.c.app == record.app)
        ).all()
    explicit_users = {r.target for r in remaining if r.kind == "user"}
    explicit_groups = {r.target for r in remaining if r.kind == "group"}
    if record.kind == "user" and record.target not in explicit_users:
        await ctx.hub.request("PATCH", path, {"user": record.target})
    elif record.kind == "group" and record.target not in explicit_groups:
        await ctx.hub.request("PATCH", path, {"group": record.target})
    elif record.kind == "link":
        await ctx.hub.request(
            "DELETE",
            f"share-codes/{quote(record.owner)}/{server_name(record.app)}?id={record.target}",
        )
        # whoever came in through this link loses access, unless shared with them by name
        still_linked = {u for r in remaining if r.kind == "link" for u in (r.accepted_by or [])}
        for user in set(record.accepted_by or []) - explicit_users - still_linked:
            await ctx.hub.request("PATCH", path, {"user": user})
    log.info("revoked %s share %s of %s/%s", record.kind, record.target, record.owner, record.app)


async def reconcile(ctx, restart: bool) -> None:
    """Make the listing true. An app listed running whose server is not is started again when
    ``restart`` (the first pass after this service starts, i.e. after a hub restart that stopped
    it), else recorded stopped with the reason (its owner or an admin stopped it at the hub); an
    app listed stopped whose server was started at the hub (its launch button) is running."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(apps).where(apps.c.status.in_(("running", "stopped")))).all()
    by_owner: dict[str, list] = {}
    for row in rows:
        by_owner.setdefault(row.owner, []).append(row)
    for owner, listed in by_owner.items():
        code, user = await ctx.hub.request("GET", f"users/{quote(owner)}")
        if code != 200:
            continue  # the hub cannot say: leave the records as they are
        servers = user.get("servers") or {}
        for row in listed:
            server = servers.get(server_name(row.name)) or {}
            up = bool(server.get("ready") or server.get("pending") == "spawn")
            if row.status == "stopped":
                if server.get("ready"):
                    log.info("app %s/%s was started at the hub: running", owner, row.name)
                    _record(ctx, owner, row.name, "stopped", status="running", started_at=utcnow())
                continue
            if up:
                continue
            if not restart:
                reason = "its server was stopped at the hub (by its owner or an administrator)"
                log.info("app %s/%s: %s", owner, row.name, reason)
                _record(ctx, owner, row.name, "running", status="stopped", stopped_reason=reason)
                continue
            log.info(
                "app %s/%s is listed running but its server is not: starting it", owner, row.name
            )
            try:
                await start_app(ctx, owner, row.name, row.profile)
            except APIError as e:
                reason = f"it could not be started again after a hub restart: {e.message}"
                log.warning("app %s/%s: %s", owner, row.name, reason)
                _record(ctx, owner, row.name, "running", status="stopped", stopped_reason=reason)


def _record(ctx, owner: str, name: str, was: str, **values) -> None:
    """Set ``values`` on the app's record if it still has the status ``was``."""
    if values.get("status") == "running":
        values.setdefault("stopped_reason", None)
    with ctx.engine.begin() as conn:
        conn.execute(
            update(apps)
            .where(apps.c.owner == owner, apps.c.name == name, apps.c.status == was)
            .values(**values)
        )


def past_max_runtime(settings, row, now: dt.datetime) -> str | None:
    """Why a running app on a GPU profile must stop now (it ran past its profile's
    ``max_runtime``), or None: CPU apps, profiles without a limit and exempt apps run on."""
    import fnmatch

    from hubml.hub_config.catalog import format_duration

    profile = settings.profile(row.profile)
    if profile is None or not profile.gpu_count or not profile.max_runtime or not row.started_at:
        return None
    if any(fnmatch.fnmatchcase(f"{row.owner}/{row.name}", p) for p in settings.apps.runtime_exempt):
        return None
    ran = (now - row.started_at).total_seconds()
    if ran < profile.max_runtime:
        return None
    limit = format_duration(profile.max_runtime)
    return (
        f"stopped after {limit} on {profile.display_name}: apps on a GPU stop at their profile's "
        f"maximum runtime ({limit}), as servers do. Start it again from the apps panel, or ask "
        "an admin to exempt it (apps.runtime_exempt)"
    )


async def sweep(ctx) -> None:
    """Note who accepted links, revoke expired shares, stop idle apps."""
    now = utcnow()
    with ctx.engine.connect() as conn:
        records = conn.execute(select(shares)).all()
        rows = conn.execute(select(apps).where(apps.c.status == "running")).all()
    by_app: dict[tuple, list] = {}
    for r in records:
        by_app.setdefault((r.owner, r.app), []).append(r)
    for (owner, app), recs in by_app.items():
        links = [r for r in recs if r.kind == "link"]
        if links:
            granted = {
                s["user"]["name"] for s in await hub_shares(ctx, owner, app) if s.get("user")
            }
            explicit = {r.target for r in recs if r.kind == "user"}
            newcomers = granted - explicit - {u for r in links for u in (r.accepted_by or [])}
            if newcomers:
                newest = max(links, key=lambda r: r.created_at)
                with ctx.engine.begin() as conn:
                    conn.execute(
                        update(shares)
                        .where(shares.c.id == newest.id)
                        .values(accepted_by=sorted({*(newest.accepted_by or []), *newcomers}))
                    )
        for r in recs:
            if r.expires_at and r.expires_at <= now:
                with ctx.engine.connect() as conn:
                    fresh = conn.execute(select(shares).where(shares.c.id == r.id)).first()
                if fresh is not None:
                    await revoke(ctx, fresh)
    for row in rows:
        reason = past_max_runtime(ctx.settings, row, now)
        if reason:
            log.info("stopping app %s/%s: %s", row.owner, row.name, reason)
            await stop_app(ctx, row.owner, row.name, reason)
            continue
        usage = ctx.usage(row.owner, row.name)
        last = max(
            filter(
                None,
                [
                    usage.get("last_used_at"),
                    row.started_at.replace(tzinfo=dt.UTC).timestamp() if row.started_at else None,
                ],
            ),
            default=None,
        )
        if last is not None and time.time() - last > row.idle_timeout_s:
            log.info(
                "stopping idle app %s/%s (idle %.0f s > %s s)",
                row.owner,
                row.name,
                time.time() - last,
                row.idle_timeout_s,
            )
            await stop_app(ctx, row.owner, row.name, f"idle for more than {row.idle_timeout_s} s")
