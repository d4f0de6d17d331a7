"""The MLflow front door: who is asking, what they may change, then MLflow itself.

Every request to ``/services/mlflow/`` is authenticated by the service kit (a hub token, or the
hub OAuth cookie with JupyterHub's XSRF token: the MLflow UI sends it in ``X-XSRFToken``, from
the ``mlflow-request-header-X-XSRFToken`` cookie set here, which MLflow's UI turns into a request
header by design). Then :mod:`.access` classifies it on its raw path against a table of every
MLflow route (default deny), stamps owners on creation, and names the owned things it touches;
this handler looks their owners up in MLflow and lets the request through only for them (reads
for every colleague). Artifacts are served as downloads that cannot run as pages of this origin,
and the request goes to the private MLflow server with the start's secret (:mod:`.internal`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from urllib.parse import urlencode

from tornado import httpclient
from tornado.httputil import HTTPHeaders

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

from . import access, owners
from .access import forward_path
from .internal import HEADER
from .owners import tag_map

log = logging.getLogger("hubml.tracking.frontdoor")

# artifact downloads: their author's content, never a page of this origin
ARTIFACT_READ = re.compile(
    r"^(?:(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts/|get-artifact|model-versions/get-artifact)"
)
XSRF_COOKIE = "mlflow-request-header-X-XSRFToken"

HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "cookie",
}


def _code_name(status: int) -> str:
    return {
        400: "INVALID_PARAMETER_VALUE",
        403: "PERMISSION_DENIED",
        404: "RESOURCE_DOES_NOT_EXIST",
        503: "TEMPORARILY_UNAVAILABLE",  # MLflow's clients retry these
    }.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")


class FrontDoorHandler(ServiceHandler):
    """Everything under the prefix that is not the registry API: MLflow's UI and REST API."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    @property
    def path(self) -> str:
        return self.request.path[len(self.ctx.prefix) :]

    @property
    def page(self) -> bool:  # the UI: people with browsers are sent to log in first
        return not self.path.startswith(("api/", "ajax-api/"))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or getattr(exc, "log_message", None) or self._reason
        for key, value in getattr(exc, "headers", {}).items():
            self.set_header(key, value)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": _code_name(status_code), "message": message}))

    async def get(self, path):
        await self.forward()

    head = options = delete = patch = post = put = get

    async def facts(self, need: access.Need) -> access.Facts:
        """Look up the owner tags of what a request touches, in MLflow."""
        if need.kind == "run":
            code, data = await self.ctx.mlflow_json(
                "GET", "api/2.0/mlflow/runs/get", {"run_id": need.key}
            )
            run = data.get("run", {}) if code == 200 else {}
            return access.Facts(
                bool(run),
                tag_map(run.get("data", {}).get("tags")),
                str(run.get("info", {}).get("experiment_id", "")) or None,
            )
        if need.kind == "experiment":
            code, data = await self.ctx.mlflow_json(
                "GET", "api/2.0/mlflow/experiments/get", {"experiment_id": need.key}
            )
            exp = data.get("experiment", {}) if code == 200 else {}
            return access.Facts(bool(exp), tag_map(exp.get("tags")), need.key)
        if need.kind == "logged":
            code, data = await self.ctx.mlflow_json(
                "GET", f"api/2.0/mlflow/logged-models/{forward_path(need.key)}"
            )
            info = data.get("model", {}).get("info", {}) if code == 200 else {}
            fact = access.Facts(
                bool(info), tag_map(info.get("tags")), str(info.get("experiment_id", "")) or None
            )
            if info and not owners.logged_model_owner(fact.tags) and info.get("source_run_id"):
                run = await self.facts(access.Need("run", info["source_run_id"]))
                fact.source_run_owner = owners.run_owner(run.tags)
            return fact
        code, data = await self.ctx.mlflow_json(
            "GET", "api/2.0/mlflow/registered-models/get", {"name": need.key}
        )
        model = data.get("registered_model", {}) if code == 200 else {}
        # where its aliases point before the request: the audit records each move
        self._aliases_before = {
            a.get("alias"): str(a.get("version")) for a in model.get("aliases") or []
        }
        return access.Facts(bool(model), tag_map(model.get("tags")))

    async def identity(self, plan: access.Plan) -> access.Identity:
        groups: frozenset[str] = frozenset()
        if any(n.kind == "model" for n in plan.needs) and not self.is_admin:
            if "groups" in self.current_user:
                groups = frozenset(self.current_user["groups"])
            else:
                groups = frozenset(await self.ctx.hub.groups_of(self.user_name))
        return access.Identity(self.user_name, self.is_admin, groups)

    async def authorize(self) -> access.Plan:
        """Classify the request (:mod:`.access`), look up owners, allow or refuse."""
        req = self.request
        who = access.Identity(self.user_name, self.is_admin)
        try:
            plan = access.plan(req.method, self.path, req.query, req.body, who)
            if plan.needs:
                facts = [await self.facts(n) for n in plan.needs]
                access.decide(plan, await self.identity(plan), facts)
        except access.Refusal as e:
            if req.method not in access.READ_METHODS:
                log.info("refused %s %s for %s: %s", req.method, self.path, who.name, e.message)
            raise APIError(e.status, e.message) from None
        return plan

    def _ui_xsrf_cookie(self) -> None:
        """The MLflow UI sends every ``mlflow-request-header-<Name>`` cookie as a request header:
        give it JupyterHub's XSRF token, so its writes pass JupyterHub's own XSRF check."""
        if (
            self.request.method == "GET"
            and self.page
            and self.request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
        ):
            self.set_cookie(
                XSRF_COOKIE, self.xsrf_token.decode(), path=self.ctx.prefix, samesite="Strict"
            )

    async def forward(self):
        plan = await self.authorize()
        if plan.rule.kind == "admin" and plan.path.endswith(
            ("registered-models/delete", "registered-models/rename")
        ):
            name = json.loads(plan.body or b"{}").get("name")
            if isinstance(name, str) and name:
                await self.facts(access.Need("model", name))  # its aliases, for the audit
        path = plan.path
        method = self.request.method
        body = plan.body
        if body is None:
            # MLflow sends JSON bodies with DELETE too (registered-models/delete, delete-tag)
            body = self.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        if method == "DELETE" and not body:
            body = None
        # what MLflow routes is exactly what was classified: the canonical path, and for JSON
        # writes the canonical body without a query string
        url = f"{self.ctx.mlflow.url}{self.ctx.prefix}{forward_path(path)}"
        if plan.query:
            url += "?" + plan.query
        headers = HTTPHeaders()
        for k, v in self.request.headers.get_all():
            # the browser's Origin is the front door's business (authenticated, XSRF-checked
            # above); to MLflow the request comes from the front door, not from another origin
            if k.lower() not in HOP_HEADERS and k.lower() not in (HEADER.lower(), "origin"):
                headers.add(k, v)
        headers["X-Forwarded-User"] = self.user_name
        headers[HEADER] = self.ctx.mlflow.secret
        if plan.body is not None:
            headers["Content-Type"] = "application/json"
        self._ui_xsrf_cookie()
        artifact = method == "GET" and bool(ARTIFACT_READ.match(path))

        def on_header(line: str):
            line = line.strip()
            if line.startswith("HTTP/"):
                parts = line.split(" ", 2)
                self.set_status(int(parts[1]), parts[2] if len(parts) > 2 else None)
                return
            key, _, value = line.partition(":")
            if not key or key.lower() in HOP_HEADERS or key.lower() == "content-encoding":
                return
            if key.lower().startswith("access-control-"):
                return  # the front door decides: no other origin may read this service's answers
            value = value.strip()
            if key.lower() == "location" and value.startswith(self.ctx.mlflow.url):
                value = (
                    value[len(self.ctx.mlflow.url) :] or "/"
                )  # never point a client at the private server
            if key.lower() == "set-cookie":
                self.add_header(key, value)
            else:
                self.set_header(key, value)
            if artifact:
                # an artifact (an HTML report, a notebook rendering) is its author's content
                self.set_header("Content-Security-Policy", "sandbox")
                self.set_header("X-Content-Type-Options", "nosniff")

        index: list[bytes] | None = [] if method == "GET" and path in ("", "index.html") else None

        def on_chunk(chunk: bytes):
            if index is not None:
                index.append(chunk)  # the UI's page: written whole, with hubml's defaults
                return
            self.write(chunk)
            self.flush()

        check_up(self.ctx)
        req = httpclient.HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            header_callback=on_header,
            streaming_callback=on_chunk,
            request_timeout=600,
        )
        try:
            await self.ctx.http.fetch(req, raise_error=False)
            if index is not None:
                self.write(with_ui_defaults(b"".join(index)))
        except (OSError, httpclient.HTTPClientError) as e:
            # refused, reset, timed out: MLflow is restarting (the supervisor is on it)
            log.warning("%s %s: the tracking server did not answer: %s", method, path, e)
            if self._headers_written:
                raise  # part of an answer was sent: the connection is closed, not answered
            raise unavailable() from None
        if self.get_status() == 200 and plan.rule.kind in ("alias", "admin"):
            await self.audit(plan)
        self.finish()

    async def audit(self, plan: access.Plan) -> None:
        """Alias moves (and an admin's renaming or deleting a model, which moves its aliases)
        made through MLflow's own API go in the registry's audit log like the gated ones."""
        entries = audit_entries(
            self.request.method,
            plan,
            getattr(self, "_aliases_before", {}),
            self.user_name,
        )
        if not entries:
            return
        audit = self.ctx.registry().audit
        loop = asyncio.get_running_loop()
        for entry in entries:
            await loop.run_in_executor(None, lambda e=entry: audit.record(**e))


# MLflow's UI opens on GenAI screens unless the browser remembers the classic view: hubml's
# users train models, so the classic view is the default (anyone may still switch). Its
# assistant is not configured here (its routes are refused, which hides its button off
# loopback); its panel and buttons carry data-assistant-ui and are hidden in case one opens.
# Telemetry is off on the server, so the home page's telemetry notice and the browser's
# telemetry worker are turned off too (MLflow's keys: <name>_v1, JSON values).
UI_DEFAULTS = (
    b"<script>try{var d={'mlflow.workflowType_v1':'\"machine_learning\"',"
    b"'mlflow.telemetry.info.alert.dismissed_v1':'true',"
    b"'mlflow.settings.telemetry.enabled_v1':'false',"
    b"'mlflow.assistant.panelOpen_v1':'false'};"
    b"for(var k in d)if(!localStorage.getItem(k)||k.indexOf('telemetry')>0||k.indexOf('assistant')>0)"
    b"localStorage.setItem(k,d[k])"
    b"}catch(e){}</script>"
    b"<style>[data-assistant-ui]{display:none!important}</style>"
)


def with_ui_defaults(page: bytes) -> bytes:
    head = page.find(b"<head>")
    if head < 0:
        return page
    head += len(b"<head>")
    return page[:head] + UI_DEFAULTS + page[head:]


def audit_entries(method: str, plan: access.Plan, before: dict, actor: str) -> list[dict]:
    """What the audit log records for a write MLflow accepted (pure; empty for other writes)."""
    body = json.loads(plan.body or b"{}")
    name = body.get("name")
    how = "through MLflow's API"
    if plan.path.endswith("registered-models/alias"):
        alias = body.get("alias")
        if method == "POST":
            version = str(body.get("version"))
            return [
                dict(
                    action="set_alias",
                    model=name,
                    actor=actor,
                    alias=alias,
                    from_version=before.get(alias),
                    to_version=version,
                    reason=how,
                )
            ]
        return [
            dict(
                action="delete_alias",
                model=name,
                actor=actor,
                alias=alias,
                from_version=before.get(alias),
                to_version=None,
                reason=how,
            )
        ]
    if plan.path.endswith(("registered-models/delete", "registered-models/rename")):
        verb = "delete_model" if plan.path.endswith("delete") else "rename_model"
        why = how + (f"; renamed to {body.get('new_name')!r}" if verb == "rename_model" else "")
        moves = [
            dict(
                action=verb,
                model=name,
                actor=actor,
                alias=alias,
                from_version=version,
                to_version=None,
                reason=why,
            )
            for alias, version in sorted(before.items())
        ]
        return moves or [dict(action=verb, model=name, actor=actor, reason=why)]
    return []


RETRY_AFTER_S = 5


def unavailable() -> APIError:
    return APIError(
        503,
        "the tracking server is restarting; try again in a few seconds",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def check_up(ctx) -> None:
    """503 (with Retry-After) unless the private MLflow server is running."""
    if ctx.mlflow.alive():
        return
    if ctx.mlflow.refused:
        raise APIError(
            503,
            "the tracking store is unavailable: an administrator has to restore it (the mlflow "
            "service's log says what is wrong); nothing was changed",
        )
    raise unavailable()


async def mlflow_json(ctx, method: str, path: str, params: dict | None = None, body=None):
    """Call the private MLflow server (with the start's secret); (status, JSON). A server that
    does not answer, or answers 5xx, is a 503 for the caller: never a decision on no facts."""
    check_up(ctx)
    url = f"{ctx.mlflow.url}{ctx.prefix}{path}"
    if params:
        url += "?" + urlencode(params)
    try:
        resp = await ctx.http.fetch(
            url,
            method=method,
            body=json.dumps(body) if body is not None else None,
            raise_error=False,
            headers={"Content-Type": "application/json", HEADER: ctx.mlflow.secret},
            request_timeout=60,
        )
    except (OSError, httpclient.HTTPClientError) as e:
        log.warning("%s %s: the tracking server did not answer: %s", method, path, e)
        raise unavailable() from None
    if resp.code >= 500:
        log.warning("%s %s: the tracking server answered %s", method, path, resp.code)
        raise unavailable()
    try:
        return resp.code, (json.loads(resp.body) if resp.body else {})
    except ValueError:
        return resp.code, {}
