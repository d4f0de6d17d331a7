"""The apps service's HTTP API (``/services/apps/api/...``) and gallery (``/services/apps/``).

Authenticated by the service kit. An owner acts on their own apps only (others get 404); the
gallery shows a visitor their apps and those shared with them. What an app runs comes with the
publish request (``files``, what the apps panel sends) or is read from the owner's running
server; the service never opens a home.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import shutil
from urllib.parse import quote

from sqlalchemy import insert, select

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler, page_html
from hubml.extensions.common.profiles import resolve_profile
from hubml.extensions.common.userfiles import clean_path, fetch_from_server
from hubml.extensions.jobs.db import utcnow

from .lifecycle import (
    app_model,
    log_tail,
    remove_app,
    revoke,
    share_model,
    shared_with,
    start_app,
    stop_app,
)
from .modelapp import model_app
from .store import MODEL_URI, NAME, app_url, apps, server_name, shares

log = logging.getLogger("hubml.apps")

FIELDS = {"name", "source", "files", "model", "profile", "idle_timeout_s", "description"}
BUNDLE_FILES = ("app.py", "requirements.txt")
MAX_APP_PY = 1024**2
MAX_REQUIREMENTS = 64 * 1024
MAX_BODY = 2 * 1024**2


class AppsBase(ServiceHandler):
    @property
    def me(self) -> str:
        return self.user_name

    def body(self) -> dict:
        return self.json_body(MAX_BODY)

    def own_app(self, name: str):
        with self.ctx.engine.connect() as conn:
            row = conn.execute(
                select(apps).where(apps.c.owner == self.me, apps.c.name == name)
            ).first()
        if row is None:
            raise APIError(404, f"no app {name!r} of yours")
        return row


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.match(name) or "--" in name:
        raise APIError(
            400,
            "name: 1–26 lowercase letters, digits and single '-', starting and ending with a "
            f"letter or digit, e.g. 'churn-demo' (got {name!r})",
        )
    return name


def check_files(files) -> dict[str, str]:
    """The bundle a request brings: ``{"app.py": text, "requirements.txt": text}``."""
    if not isinstance(files, dict) or not set(files) <= set(BUNDLE_FILES) or "app.py" not in files:
        raise APIError(
            400, "files: an object with app.py (and optionally requirements.txt) as text"
        )
    for fname, limit in (("app.py", MAX_APP_PY), ("requirements.txt", MAX_REQUIREMENTS)):
        text = files.get(fname)
        if text is None:
            continue
        if not isinstance(text, str):
            raise APIError(400, f"files: {fname} must be text")
        if len(text.encode()) > limit:
            raise APIError(413, f"files: {fname} is over {limit // 1024} KiB")
    return {k: v for k, v in files.items() if v is not None}


class AppsHandler(AppsBase):
    async def get(self):
        me = self.me
        with self.ctx.engine.connect() as conn:
            mine = conn.execute(
                select(apps).where(apps.c.owner == me).order_by(apps.c.created_at)
            ).all()
        shared = await shared_with(self.ctx, me)
        self.send(
            {
                "apps": [await app_model(self.ctx, r) for r in mine],
                "shared_with_me": [await app_model(self.ctx, r, with_access=False) for r in shared],
            }
        )

    async def post(self):
        body = self.body()
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise APIError(
                400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}"
            )
        me = self.me
        name = check_name(body.get("name"))
        source, model = body.get("source"), body.get("model")
        if (source is None) == (model is None):
            raise APIError(
                400,
                "give exactly one of source (path of an app.py in your home) or model "
                "('models:/<name>@<alias>')",
            )
        if model is not None and body.get("files") is not None:
            raise APIError(400, "files: only with source (a model's app is generated)")
        profile = await resolve_profile(self.ctx, body.get("profile"), me)
        idle = body.get("idle_timeout_s", 3600)
        if isinstance(idle, bool) or not isinstance(idle, int) or not 60 <= idle <= 30 * 86400:
            raise APIError(400, f"idle_timeout_s: seconds from 60 to 2592000 (got {idle!r})")
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description) > 2000:
            raise APIError(400, "description: text of at most 2000 characters")
        with self.ctx.engine.connect() as conn:
            if conn.execute(
                select(apps.c.name).where(apps.c.owner == me, apps.c.name == name)
            ).first():
                raise APIError(
                    409,
                    f"you already have an app named {name!r}; delete it first or choose another name",
                )
        if source is not None:
            source = clean_path(source, "source", ".py")
            files = (
                check_files(body["files"])
                if body.get("files") is not None
                else await self.read_source(source)
            )
        else:
            await self.check_model(model)
            files = {"app.py": model_app(model), "requirements.txt": "mlflow\ngradio\npandas\n"}
        bundle = self.ctx.bundle(me, name)
        # from here on, anything that fails is undone
        try:
            shutil.rmtree(bundle, ignore_errors=True)
            bundle.mkdir(parents=True)
            for fname, text in files.items():
                (bundle / fname).write_text(text, encoding="utf-8")
            with self.ctx.engine.begin() as conn:
                conn.execute(
                    insert(apps).values(
                        owner=me,
                        name=name,
                        kind="source" if source is not None else "model",
                        source=source,
                        model=model,
                        profile=profile.slug,
                        description=description,
                        idle_timeout_s=idle,
                        status="starting",
                        created_at=utcnow(),
                    )
                )
            await start_app(self.ctx, me, name, profile.slug)
        except APIError:
            await remove_app(self.ctx, me, name)
            raise
        except Exception as e:
            log.exception("publishing %s/%s failed", me, name)
            tail = log_tail(bundle)
            await remove_app(self.ctx, me, name)
            raise APIError(500, f"publishing failed: {e}", log_tail=tail) from None
        with self.ctx.engine.connect() as conn:
            row = conn.execute(select(apps).where(apps.c.owner == me, apps.c.name == name)).first()
        self.send(await app_model(self.ctx, row), 201)

    async def read_source(self, source: str) -> dict[str, str]:
        """app.py and the requirements.txt beside it, from the owner's running server."""
        files = {
            "app.py": (
                await fetch_from_server(self.ctx, self.me, source, "source", MAX_APP_PY)
            ).decode()
        }
        folder = source.rsplit("/", 1)[0] + "/" if "/" in source else ""
        try:
            req = await fetch_from_server(
                self.ctx, self.me, folder + "requirements.txt", "requirements.txt", MAX_REQUIREMENTS
            )
            files["requirements.txt"] = req.decode()
        except APIError as e:
            if e.status_code != 404:
                raise
        return files

    async def check_model(self, model) -> None:
        m = MODEL_URI.match(model) if isinstance(model, str) else None
        if not m:
            raise APIError(
                400, f"model: {model!r} is not a model reference; use 'models:/<name>@<alias>'"
            )
        name, alias = m.groups()
        if not self.ctx.mlflow_url:
            raise APIError(400, "model: the tracking service (MLflow) is not enabled on this hub")
        from tornado import httpclient

        base = f"{self.ctx.mlflow_url}api/2.0/mlflow/registered-models"
        http = httpclient.AsyncHTTPClient()
        headers = {"Authorization": f"token {self.ctx.hub.token}"}
        resp = await http.fetch(
            f"{base}/alias?name={quote(name)}&alias={quote(alias)}",
            headers=headers,
            raise_error=False,
            request_timeout=30,
        )
        if resp.code == 200:
            return
        known = await http.fetch(
            f"{base}/get?name={quote(name)}", headers=headers, raise_error=False, request_timeout=30
        )
        if known.code != 200:
            raise APIError(400, f"model: no registered model {name!r}")
        aliases = [
            a["alias"] for a in json.loads(known.body)["registered_model"].get("aliases", [])
        ]
        raise APIError(
            400,
            f"model: {name!r} has no alias {alias!r}; its aliases: {', '.join(aliases) or '(none)'}",
        )


class AppHandler(AppsBase):
    async def get(self, name):
        self.send(await app_model(self.ctx, self.own_app(name)))

    async def delete(self, name):
        self.own_app(name)
        await remove_app(self.ctx, self.me, name)
        self.set_status(204)
        self.finish()


class StartStopHandler(AppsBase):
    async def post(self, name, action):
        row = self.own_app(name)
        if action == "stop":
            await stop_app(self.ctx, self.me, name, "stopped by its owner")
        else:
            await start_app(self.ctx, self.me, name, row.profile)
        self.send(await app_model(self.ctx, self.own_app(name)))


class LogsHandler(AppsBase):
    async def get(self, name):
        row = self.own_app(name)
        value = self.get_argument("lines", "200")
        if not value.isdigit():
            raise APIError(400, f"lines: a whole number from 1 to 5000 (got {value!r})")
        lines = max(1, min(int(value), 5000))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(log_tail(self.ctx.bundle(row.owner, row.name), lines) + "\n")


class RuntimeHandler(AppsBase):
    """What an app's own server fetches and reports: its bundle, then its log tail and visitors.
    The server calls with its hub token, so only the owner's identity gets here, and only for
    their own apps."""

    async def get(self, name, what):
        if what != "bundle":
            raise APIError(405, "GET runtime/bundle only")
        row = self.own_app(name)
        bundle = self.ctx.bundle(row.owner, row.name)
        files = {
            f: (bundle / f).read_text(encoding="utf-8")
            for f in BUNDLE_FILES
            if (bundle / f).is_file()
        }
        if "app.py" not in files:
            raise APIError(404, f"app {name!r} has no bundle; publish it again")
        self.send({"files": files})

    async def put(self, name, what):
        if what != "report":
            raise APIError(405, "PUT runtime/report only")
        row = self.own_app(name)
        body = self.body()
        usage, tail = body.get("usage") or {}, body.get("log") or ""
        if not isinstance(usage, dict) or not isinstance(tail, str):
            raise APIError(400, "report: usage must be an object and log a string")
        keep = {
            "last_used_at": (int, float, type(None)),
            "last_user": (str, type(None)),
            "requests": (int,),
            "users": (list,),
        }
        usage = {k: v for k, v in usage.items() if k in keep and isinstance(v, keep[k])}
        bundle = self.ctx.bundle(row.owner, row.name)
        if not bundle.is_dir():
            raise APIError(404, f"app {name!r} has no bundle any more")
        for fname, text in (("usage.json", json.dumps(usage)), ("app.log", tail[-64 * 1024 :])):
            tmp = bundle / f".{fname}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, bundle / fname)
        self.set_status(204)
        self.finish()


class SharesHandler(AppsBase):
    async def get(self, name):
        row = self.own_app(name)
        self.send((await app_model(self.ctx, row))["shares"])

    async def post(self, name):
        row = self.own_app(name)
        body = self.body()
        unknown = sorted(set(body) - {"users", "groups", "expires_in_s"})
        if unknown:
            raise APIError(
                400, f"unknown field(s) {', '.join(unknown)}; allowed: users, groups, expires_in_s"
            )
        users, groups = body.get("users") or [], body.get("groups") or []
        for key, value in (("users", users), ("groups", groups)):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise APIError(400, f"{key}: a list of names")
        if self.me in users:
            raise APIError(400, "users: you own this app already; share it with others")
        expires = body.get("expires_in_s")
        if expires is not None and (
            isinstance(expires, bool)
            or not isinstance(expires, int)
            or not 60 <= expires <= 365 * 86400
        ):
            raise APIError(
                400,
                f"expires_in_s: seconds from 60 to 31536000, or null for no expiry (got {expires!r})",
            )
        expires_at = utcnow() + dt.timedelta(seconds=expires) if expires else None
        owner, server = self.me, server_name(name)
        created = []
        hub = self.ctx.hub
        # check every name before granting anything: all or nothing
        for u in users:
            if await hub.user(u) is None:
                raise APIError(400, f"users: no hub user {u!r}")
        for g in groups:
            code, _ = await hub.request("GET", f"groups/{quote(g)}")
            if code != 200:
                raise APIError(400, f"groups: no hub group {g!r}")
        for kind, targets in (("user", users), ("group", groups)):
            for target in targets:
                code, data = await hub.request(
                    "POST", f"shares/{quote(owner)}/{server}", {kind: target}
                )
                if code != 200:
                    raise APIError(
                        502, f"the hub refused to share with {kind} {target}: {data.get('message')}"
                    )
                created.append(dict(kind=kind, target=target, accept_url=None))
        if not users and not groups:
            # a link: a share code anyone logged in may accept until it expires
            code, data = await hub.request(
                "POST", f"share-codes/{quote(owner)}/{server}", {"expires_in": expires or 86400}
            )
            if code != 200:
                raise APIError(502, f"the hub refused to make a share link: {data.get('message')}")
            expires_at = utcnow() + dt.timedelta(seconds=expires or 86400)
            created.append(dict(kind="link", target=data["id"], accept_url=data.get("accept_url")))
        ids = []
        with self.ctx.engine.begin() as conn:
            for c in created:
                result = conn.execute(
                    insert(shares).values(
                        owner=owner,
                        app=name,
                        expires_at=expires_at,
                        created_at=utcnow(),
                        accepted_by=[],
                        **c,
                    )
                )
                ids.append(result.inserted_primary_key[0])
            records = conn.execute(select(shares).where(shares.c.id.in_(ids))).all()
        log.info("%s shared app %s: %s", owner, name, [(c["kind"], c["target"]) for c in created])
        self.send(
            {
                "app": name,
                "url": app_url(owner, row.name),
                "shares": [share_model(r) for r in records],
            },
            201,
        )


class ShareHandler(AppsBase):
    async def delete(self, name, share_id):
        self.own_app(name)
        with self.ctx.engine.connect() as conn:
            record = conn.execute(
                select(shares).where(
                    shares.c.id == int(share_id), shares.c.owner == self.me, shares.c.app == name
                )
            ).first()
        if record is None:
            raise APIError(404, f"no share {share_id} on your app {name!r}")
        await revoke(self.ctx, record)
        self.set_status(204)
        self.finish()


class GalleryHandler(AppsBase):
    page = True

    async def get(self):
        me = self.me
        with self.ctx.engine.connect() as conn:
            mine = conn.execute(select(apps).where(apps.c.owner == me)).all()
        shared = await shared_with(self.ctx, me)

        def card(row) -> str:
            usage = self.ctx.usage(row.owner, row.name)
            last = (
                f"last used by {html.escape(usage['last_user'])}"
                if usage.get("last_user")
                else "not used yet"
            )
            url = html.escape(app_url(row.owner, row.name), quote=True)
            what = html.escape(row.description or (f"model {row.model}" if row.model else ""))
            return (
                f"<li class='app' data-app='{html.escape(row.name)}'>"
                f"<div class='top'><a class='name' href='{url}' target='_blank'>{html.escape(row.name)}</a>"
                f"<span class='status {html.escape(row.status)}'>{html.escape(row.status)}</span></div>"
                f"<div class='what'>{what or '<i>no description</i>'}</div>"
                + (
                    f"<div class='why'><small>{html.escape(row.stopped_reason)}</small></div>"
                    if row.owner == self.me and row.status != "running" and row.stopped_reason
                    else ""
                )
                + f"<small>by <b>{html.escape(row.owner)}</b> · {html.escape(row.profile)} · {last}</small>"
                f"<div><a class='open' href='{url}' target='_blank'>Open</a></div></li>"
            )

        style = (
            "<style>ul.apps{list-style:none;padding:0;display:grid;gap:.8rem;"
            "grid-template-columns:repeat(auto-fill,minmax(15rem,1fr))}"
            "ul.apps li.app{border:1px solid #d0d7de;border-radius:8px;padding:.8rem;margin:0}"
            "li.app .top{display:flex;justify-content:space-between;align-items:center}"
            "li.app .name{font-weight:600;font-size:1.05rem}li.app .what{margin:.4rem 0}"
            ".status{font-size:.75rem;border-radius:10px;padding:0 .5rem;background:#eaeef2}"
            ".status.running{background:#dafbe1;color:#116329}"
            ".status.failed{background:#ffebe9;color:#82071e}"
            "a.open{display:inline-block;margin-top:.5rem;padding:.2rem .8rem;border-radius:6px;"
            "background:#1f6feb;color:#fff;text-decoration:none}"
            "ul.apps li.empty{border:none;color:#57606a}</style>"
        )
        body = (
            style + f"<p>Signed in as <b>{html.escape(me)}</b>.</p>"
            "<h2>Shared with you</h2><ul class='apps' id='shared'>"
            + (
                "".join(card(r) for r in shared)
                or "<li class='empty'><i>Nothing shared with you yet.</i></li>"
            )
            + "</ul><h2>Yours</h2><ul class='apps' id='mine'>"
            + (
                "".join(card(r) for r in mine)
                or "<li class='empty'><i>Publish one from a notebook with the apps panel.</i></li>"
            )
            + "</ul>"
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page_html("Apps", body))


NAME_RE = r"([a-z0-9][a-z0-9-]*)"
ROUTES = [
    ("", GalleryHandler),
    ("api/apps", AppsHandler),
    (f"api/apps/{NAME_RE}", AppHandler),
    (f"api/apps/{NAME_RE}/(start|stop)", StartStopHandler),
    (f"api/apps/{NAME_RE}/logs", LogsHandler),
    (f"api/apps/{NAME_RE}/runtime/(bundle|report)", RuntimeHandler),
    (f"api/apps/{NAME_RE}/shares", SharesHandler),
    (f"api/apps/{NAME_RE}/shares/([0-9]+)", ShareHandler),
]
