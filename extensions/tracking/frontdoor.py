"""The MLflow front door: who is asking, what they may change, then MLflow itself.

Every request to ``/services/mlflow/`` is authenticated by the service kit (a hub token, or the
hub OAuth cookie with JupyterHub's XSRF token: the MLflow UI sends it in ``X-XSRFToken``, from
the ``mlflow-request-header-X-XSRFToken`` cookie set here, which MLflow's UI turns into a request
header by design). Then:

- identity is stamped on creation: ``runs/create`` gets ``mlflow.user``/``hubml.user`` = the hub
  user, whatever the client sent; ``experiments/create`` gets ``hubml.owner``;
- ownership is enforced: run writes only by the run's user, experiment writes only by its owner,
  admins excepted, and nobody rewrites ``mlflow.user``/``hubml.user``;
- ``@champion``/``@challenger`` move only through the registry API (:mod:`.registry_handlers`);
- artifacts are served as downloads that cannot run as pages of this origin;

and the request goes to the private MLflow server with the start's secret (:mod:`.internal`).
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from tornado import httpclient
from tornado.httputil import HTTPHeaders

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

from .internal import HEADER

# MLflow REST paths, relative to the service prefix; the UI uses ajax-api, clients api
_API = r"(?:ajax-)?api/2\.0/mlflow"
RUN_CREATE = re.compile(rf"^{_API}/runs/create$")
EXPERIMENT_CREATE = re.compile(rf"^{_API}/experiments/create$")
# run-scoped writes: the body names the run with run_id (or the legacy run_uuid)
RUN_WRITE = re.compile(
    rf"^{_API}/runs/(delete|restore|update|log-metric|log-parameter|set-tag|delete-tag|"
    rf"log-batch|log-model|log-inputs|outputs)$"
)
EXPERIMENT_WRITE = re.compile(
    rf"^{_API}/experiments/(delete|restore|update|set-experiment-tag|delete-tag)$"
)
ARTIFACT_WRITE = re.compile(r"^(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts/(\d+)/([0-9a-f]{32})/")
ARTIFACT_READ = re.compile(
    r"^(?:(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts/|get-artifact|model-versions/get-artifact)"
)
# @challenger moves only when gates pass, @champion only through approval
ALIAS = re.compile(rf"^{_API}/registered-models/alias$")
# the registry's gate policy and provenance live in hubml.* tags, its audit is keyed by
# model name and version: only the gated flow (or an admin) may touch those
REGISTRY_TAGS = re.compile(
    rf"^{_API}/(registered-models|model-versions)/(create|set-tag|delete-tag)$"
)
REGISTRY_DESTROY = re.compile(rf"^{_API}/(registered-models|model-versions)/(delete|rename)$")
PROTECTED_ALIASES = {"champion", "challenger"}
PLATFORM_TAGS = {"mlflow.user", "hubml.user"}
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
    }.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")


def _tags_without(tags, keys: set[str]) -> list:
    return [t for t in tags or [] if isinstance(t, dict) and t.get("key") not in keys]


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
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": _code_name(status_code), "message": message}))

    async def get(self, path):
        await self.forward(path)

    head = options = delete = patch = post = put = get

    def json_object(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise APIError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        return body

    async def run_owner(self, run_id: str) -> str | None:
        code, data = await self.ctx.mlflow_json(
            "GET", "api/2.0/mlflow/runs/get", {"run_id": run_id}
        )
        if code == 404:
            raise APIError(404, f"run {run_id} not found")
        tags = {
            t["key"]: t.get("value") for t in data.get("run", {}).get("data", {}).get("tags", [])
        }
        return tags.get("hubml.user") or tags.get("mlflow.user")

    async def experiment_owner(self, experiment_id: str) -> str | None:
        code, data = await self.ctx.mlflow_json(
            "GET", "api/2.0/mlflow/experiments/get", {"experiment_id": experiment_id}
        )
        if code == 404:
            raise APIError(404, f"experiment {experiment_id} not found")
        tags = {t["key"]: t.get("value") for t in data.get("experiment", {}).get("tags", [])}
        return tags.get("hubml.owner")

    async def authorize(self, path: str) -> bytes | None:
        """Apply ownership rules; return a rewritten body when one is needed."""
        name, admin = self.user_name, self.is_admin
        method = self.request.method
        if method in ("GET", "HEAD", "OPTIONS"):
            return None
        if RUN_CREATE.match(path):
            body = self.json_object()
            body["tags"] = _tags_without(body.get("tags"), PLATFORM_TAGS) + [
                {"key": "mlflow.user", "value": name},
                {"key": "hubml.user", "value": name},
            ]
            body["user_id"] = name
            return json.dumps(body).encode()
        if EXPERIMENT_CREATE.match(path):
            body = self.json_object()
            body["tags"] = _tags_without(body.get("tags"), {"hubml.owner"}) + [
                {"key": "hubml.owner", "value": name}
            ]
            return json.dumps(body).encode()
        if m := RUN_WRITE.match(path):
            body = self.json_object()
            run_id = body.get("run_id") or body.get("run_uuid")
            if not run_id or not isinstance(run_id, str):
                raise APIError(400, "run_id is required")
            owner = await self.run_owner(run_id)
            if owner != name and not admin:
                raise APIError(
                    403,
                    f"run {run_id} belongs to {owner or 'nobody'}; {name} may not {m.group(1).replace('-', ' ')} it",
                )
            keys = (
                {t.get("key") for t in body.get("tags") or [] if isinstance(t, dict)}
                if path.endswith("log-batch")
                else set()
            )
            if path.endswith("set-tag"):
                keys.add(body.get("key"))
            if keys & PLATFORM_TAGS:
                raise APIError(403, "mlflow.user and hubml.user are set by the platform")
            return None
        if EXPERIMENT_WRITE.match(path):
            body = self.json_object()
            owner = await self.experiment_owner(str(body.get("experiment_id", "")))
            if owner != name and not admin:
                raise APIError(
                    403,
                    f"experiment {body.get('experiment_id')} belongs to {owner or 'the platform'}; "
                    f"{name} may not change it",
                )
            return None
        m = ARTIFACT_WRITE.match(path)
        if m and method in ("PUT", "POST", "DELETE"):
            owner = await self.run_owner(m.group(2))
            if owner != name and not admin:
                raise APIError(
                    403, f"run {m.group(2)} belongs to {owner}; {name} may not write its artifacts"
                )
            return None
        if REGISTRY_TAGS.match(path) and not admin:
            body = self.json_object()
            keys = [t.get("key", "") for t in body.get("tags") or [] if isinstance(t, dict)]
            if body.get("key"):
                keys.append(body["key"])
            if any(str(k).startswith("hubml.") for k in keys):
                raise APIError(
                    403, "hubml.* tags of registered models are set by hubml's gated flow only"
                )
            return None
        m = REGISTRY_DESTROY.match(path)
        if m and not admin:
            raise APIError(
                403,
                f"only admins may {m.group(2)} {m.group(1).replace('-', ' ')}: the audit history refers to them",
            )
        if ALIAS.match(path):
            alias = (
                self.json_object().get("alias")
                if method == "POST"
                else self.get_argument("alias", "")
            )
            if alias in PROTECTED_ALIASES:
                raise APIError(
                    403,
                    f"@{alias} moves only through hubml's gated flow: publish (gates set "
                    "@challenger), request promotion, then an approver promotes to @champion",
                )
        return None

    def _ui_xsrf_cookie(self, path: str) -> None:
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

    async def forward(self, path: str):
        body = await self.authorize(path)
        method = self.request.method
        if body is None:
            # MLflow sends JSON bodies with DELETE too (registered-models/delete, delete-tag)
            body = self.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        if method == "DELETE" and not body:
            body = None
        url = f"{self.ctx.mlflow.url}{self.ctx.prefix}{path}"
        if self.request.query:
            url += "?" + self.request.query
        headers = HTTPHeaders()
        for k, v in self.request.headers.get_all():
            # the browser's Origin is the front door's business (authenticated, XSRF-checked
            # above); to MLflow the request comes from the front door, not from another origin
            if k.lower() not in HOP_HEADERS and k.lower() not in (HEADER.lower(), "origin"):
                headers.add(k, v)
        headers["X-Forwarded-User"] = self.user_name
        headers[HEADER] = self.ctx.mlflow.secret
        self._ui_xsrf_cookie(path)
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

        def on_chunk(chunk: bytes):
            self.write(chunk)
            self.flush()

        if not self.ctx.mlflow.alive():
            raise APIError(503, "the tracking server is restarting; try again in a few seconds")
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
        except (ConnectionError, OSError):
            raise APIError(503, "the tracking server is unavailable; try again shortly") from None
        self.finish()


async def mlflow_json(ctx, method: str, path: str, params: dict | None = None, body=None):
    """Call the private MLflow server (with the start's secret); (status, JSON)."""
    url = f"{ctx.mlflow.url}{ctx.prefix}{path}"
    if params:
        url += "?" + urlencode(params)
    resp = await ctx.http.fetch(
        url,
        method=method,
        body=json.dumps(body) if body is not None else None,
        raise_error=False,
        headers={"Content-Type": "application/json", HEADER: ctx.mlflow.secret},
        request_timeout=60,
    )
    try:
        return resp.code, (json.loads(resp.body) if resp.body else {})
    except ValueError:
        return resp.code, {}
