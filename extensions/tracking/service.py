"""The ``mlflow`` hub service: a real MLflow tracking server behind JupyterHub authentication.

JupyterHub starts this process as a managed service at ``/services/mlflow/``. It starts
``mlflow server`` on a private loopback port (one worker, background jobs off, proxied artifact
store) and serves a small tornado front door on the service port that:

- authenticates every request with the hub (``Authorization: token|Bearer <jupyterhub token>``
  or the hub's OAuth cookie for browsers), and requires the ``access:services!service=mlflow``
  scope, so RBAC decides who may use tracking at all;
- stamps the authenticated user onto everything it creates (runs: ``mlflow.user`` and
  ``hubml.user``; experiments: ``hubml.owner``), whatever the client claimed;
- lets only the owner (or an admin) change or delete a run or an experiment;
- forwards everything else to MLflow unchanged, so plain ``mlflow`` clients and the MLflow UI work.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from urllib.parse import urlencode

from tornado import httpclient, ioloop, web
from tornado.httputil import HTTPHeaders

log = logging.getLogger("hubml.tracking")

# MLflow REST paths, relative to the service prefix; the UI uses ajax-api, clients api
_API = r"(?:ajax-)?api/2\.0/mlflow"
RUN_CREATE = re.compile(rf"^{_API}/runs/create$")
EXPERIMENT_CREATE = re.compile(rf"^{_API}/experiments/create$")
# run-scoped writes: the body names the run with run_id (or the legacy run_uuid)
RUN_WRITE = re.compile(
    rf"^{_API}/runs/(delete|restore|update|log-metric|log-parameter|set-tag|delete-tag|"
    rf"log-batch|log-model|log-inputs|outputs)$"
)
EXPERIMENT_WRITE = re.compile(rf"^{_API}/experiments/(delete|restore|update|set-experiment-tag|delete-tag)$")
ARTIFACT_WRITE = re.compile(r"^(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts/(\d+)/([0-9a-f]{32})/")
# @challenger moves only when gates pass, @champion only through approval
ALIAS = re.compile(rf"^{_API}/registered-models/alias$")
# the registry's gate policy and provenance live in hubml.* tags, its audit is keyed by
# model name and version: only the gated flow (or an admin) may touch those
REGISTRY_TAGS = re.compile(rf"^{_API}/(registered-models|model-versions)/(create|set-tag|delete-tag)$")
REGISTRY_DESTROY = re.compile(rf"^{_API}/(registered-models|model-versions)/(delete|rename)$")
PROTECTED_ALIASES = {"champion", "challenger"}

HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length", "authorization", "cookie",
}


def _pdeathsig():
    """Make the child die with us even if we are killed with SIGKILL (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MLflowServer:
    """The ``mlflow server`` child process, restarted if it dies."""

    def __init__(self, backend_store_uri: str, artifacts_destination: str, prefix: str, workers: int = 1):
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.prefix = prefix.rstrip("/")
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--static-prefix", self.prefix,
            "--allowed-hosts", f"127.0.0.1:{self.port},localhost:{self.port}",
        ]

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        # the front door's credentials are not the tracking server's business
        for key in list(env):
            if key.startswith("JUPYTERHUB_"):
                env.pop(key)
        log.info("starting mlflow server on %s (backend %s)", self.url, self.backend_store_uri.split("@")[-1])
        self.proc = subprocess.Popen(self.command(), env=env, preexec_fn=_pdeathsig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class TrackingContext:
    """What the handlers share: the internal MLflow URL and an HTTP client."""

    def __init__(self, mlflow: MLflowServer, prefix: str):
        self.mlflow = mlflow
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.http = httpclient.AsyncHTTPClient(max_body_size=2 * 1024**3)

    async def mlflow_json(self, method: str, path: str, params: dict | None = None, body=None):
        url = f"{self.mlflow.url}{self.prefix}{path}"
        if params:
            url += "?" + urlencode(params)
        resp = await self.http.fetch(
            url,
            method=method,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"},
            raise_error=False,
            request_timeout=60,
        )
        return resp.code, (json.loads(resp.body) if resp.body else {})


def _user_name(model: dict) -> str:
    return model.get("name", "")


def _is_admin(model: dict) -> bool:
    return bool(model.get("admin")) or "admin:users" in set(model.get("scopes", []))


def _tags_without(tags: list, keys: set[str]) -> list:
    return [t for t in tags or [] if t.get("key") not in keys]


def make_app(ctx: TrackingContext, prefix: str):
    from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated

    hub_auth = HubOAuth(cache_max_age=60)

    class ProxyHandler(HubOAuthenticated, web.RequestHandler):
        SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

        def initialize(self):
            self.hub_auth = hub_auth

        def check_xsrf_cookie(self):
            # The MLflow UI sends fetch() POSTs without JupyterHub's XSRF token. Browsers mark
            # same-origin requests with Sec-Fetch-Site, which a cross-site page cannot forge.
            if self.request.headers.get("Sec-Fetch-Site") == "same-origin":
                return
            return super().check_xsrf_cookie()

        def write_error(self, status_code, **kwargs):
            exc = kwargs.get("exc_info", (None, None, None))[1]
            message = getattr(exc, "log_message", None) or self._reason
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error_code": _code_name(status_code), "message": message}))

        def refuse(self, status: int, message: str):
            raise web.HTTPError(status, message.replace("%", "%%"))

        def get_login_url(self):
            if self.request.method not in ("GET", "HEAD") or self.request.headers.get("Authorization"):
                # API clients get a JSON 403, not a redirect to an HTML login page
                self.refuse(403, "a JupyterHub token with access to the mlflow service is required")
            return super().get_login_url()

        async def prepare(self):
            user = self.current_user
            if user is None:
                path = self.request.path[len(prefix):]
                is_api = path.startswith(("api/", "ajax-api/"))
                if self.request.method in ("GET", "HEAD") and not is_api and not self.request.headers.get("Authorization"):
                    self.redirect(self.get_login_url())  # a person with a browser: log in first
                    return
                self.refuse(403, "a JupyterHub token with access to the mlflow service is required")

        async def get(self, path):
            await self.forward(path)

        head = options = delete = patch = get

        async def post(self, path):
            await self.forward(path)

        put = post

        def json_body(self) -> dict:
            try:
                body = json.loads(self.request.body or b"{}")
            except ValueError:
                self.refuse(400, "request body must be JSON")
            if not isinstance(body, dict):
                self.refuse(400, "request body must be a JSON object")
            return body

        async def run_owner(self, run_id: str) -> str | None:
            code, data = await ctx.mlflow_json("GET", "api/2.0/mlflow/runs/get", {"run_id": run_id})
            if code == 404:
                self.refuse(404, f"run {run_id} not found")
            tags = {t["key"]: t.get("value") for t in data.get("run", {}).get("data", {}).get("tags", [])}
            return tags.get("hubml.user") or tags.get("mlflow.user")

        async def experiment_owner(self, experiment_id: str) -> str | None:
            code, data = await ctx.mlflow_json(
                "GET", "api/2.0/mlflow/experiments/get", {"experiment_id": experiment_id}
            )
            if code == 404:
                self.refuse(404, f"experiment {experiment_id} not found")
            tags = {t["key"]: t.get("value") for t in data.get("experiment", {}).get("tags", [])}
            return tags.get("hubml.owner")

        async def authorize(self, path: str) -> bytes | None:
            """Apply ownership rules; return a rewritten body when one is needed."""
            user = self.current_user
            name, admin = _user_name(user), _is_admin(user)
            method = self.request.method
            if method in ("GET", "HEAD", "OPTIONS"):
                return None
            if RUN_CREATE.match(path):
                body = self.json_body()
                body["tags"] = _tags_without(body.get("tags"), {"mlflow.user", "hubml.user"}) + [
                    {"key": "mlflow.user", "value": name},
                    {"key": "hubml.user", "value": name},
                ]
                body["user_id"] = name
                return json.dumps(body).encode()
            if EXPERIMENT_CREATE.match(path):
                body = self.json_body()
                body["tags"] = _tags_without(body.get("tags"), {"hubml.owner"}) + [
                    {"key": "hubml.owner", "value": name}
                ]
                return json.dumps(body).encode()
            if RUN_WRITE.match(path):
                body = self.json_body()
                run_id = body.get("run_id") or body.get("run_uuid")
                if not run_id:
                    self.refuse(400, "run_id is required")
                owner = await self.run_owner(run_id)
                if owner != name and not admin:
                    action = RUN_WRITE.match(path).group(1).replace("-", " ")
                    self.refuse(403, f"run {run_id} belongs to {owner or 'nobody'}; {name} may not {action} it")
                if body.get("tags") and path.endswith("log-batch"):
                    keys = {t.get("key") for t in body["tags"]}
                    if keys & {"mlflow.user", "hubml.user"}:
                        self.refuse(403, "mlflow.user and hubml.user are set by the platform")
                if path.endswith("set-tag") and body.get("key") in {"mlflow.user", "hubml.user"}:
                    self.refuse(403, "mlflow.user and hubml.user are set by the platform")
                return None
            if EXPERIMENT_WRITE.match(path):
                body = self.json_body()
                owner = await self.experiment_owner(str(body.get("experiment_id", "")))
                if owner != name and not admin:
                    self.refuse(
                        403,
                        f"experiment {body.get('experiment_id')} belongs to {owner or 'the platform'}; "
                        f"{name} may not change it",
                    )
                return None
            m = ARTIFACT_WRITE.match(path)
            if m and method in ("PUT", "POST", "DELETE"):
                owner = await self.run_owner(m.group(2))
                if owner != name and not admin:
                    self.refuse(403, f"run {m.group(2)} belongs to {owner}; {name} may not write its artifacts")
                return None
            m = REGISTRY_TAGS.match(path)
            if m and not admin:
                body = self.json_body()
                keys = [t.get("key", "") for t in body.get("tags") or [] if isinstance(t, dict)]
                if body.get("key"):
                    keys.append(body["key"])
                if any(str(k).startswith("hubml.") for k in keys):
                    self.refuse(403, "hubml.* tags of registered models are set by hubml's gated flow only")
                return None
            m = REGISTRY_DESTROY.match(path)
            if m and not admin:
                self.refuse(
                    403,
                    f"only admins may {m.group(2)} {m.group(1).replace('-', ' ')}: the audit history refers to them",
                )
            if ALIAS.match(path):
                alias = (self.json_body().get("alias") if method == "POST" else self.get_argument("alias", ""))
                if alias in PROTECTED_ALIASES:
                    self.refuse(
                        403,
                        f"@{alias} moves only through hubml's gated flow: publish (gates set "
                        "@challenger), request promotion, then an approver promotes to @champion",
                    )
            return None

        async def forward(self, path: str):
            body = await self.authorize(path)
            if body is None:
                # MLflow sends JSON bodies with DELETE too (registered-models/delete, delete-tag)
                body = self.request.body if self.request.method in ("POST", "PUT", "PATCH", "DELETE") else None
            if self.request.method in ("POST", "PUT", "PATCH") and body is None:
                body = b""
            if self.request.method == "DELETE" and not body:
                body = None
            url = f"{ctx.mlflow.url}{ctx.prefix}{path}"
            if self.request.query:
                url += "?" + self.request.query
            headers = HTTPHeaders()
            for k, v in self.request.headers.get_all():
                if k.lower() not in HOP_HEADERS:
                    headers.add(k, v)
            headers["X-Forwarded-User"] = _user_name(self.current_user)

            def on_header(line: str):
                line = line.strip()
                if not line or line.startswith("HTTP/"):
                    if line.startswith("HTTP/"):
                        parts = line.split(" ", 2)
                        self.set_status(int(parts[1]), parts[2] if len(parts) > 2 else None)
                    return
                key, _, value = line.partition(":")
                if key.lower() not in HOP_HEADERS and key.lower() != "content-encoding":
                    self.add_header(key, value.strip()) if key.lower() == "set-cookie" else self.set_header(key, value.strip())

            def on_chunk(chunk: bytes):
                self.write(chunk)
                self.flush()

            if not ctx.mlflow.alive():
                self.refuse(503, "the tracking server is restarting; try again in a few seconds")
            req = httpclient.HTTPRequest(
                url,
                method=self.request.method,
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
                await ctx.http.fetch(req, raise_error=False)
            except (ConnectionError, OSError) as e:
                self.refuse(503, f"the tracking server is unavailable ({e}); try again shortly")
            self.finish()

    class HealthHandler(web.RequestHandler):
        def get(self):
            self.set_header("Content-Type", "application/json")
            self.finish({"mlflow": "up" if ctx.mlflow.alive() else "down"})

    class CallbackHandler(HubOAuthCallbackHandler):
        # the PKCE verifier is cached on the HubOAuth instance that started the login
        def initialize(self):
            self.hub_auth = hub_auth

    handlers = [
        (prefix + "oauth_callback", CallbackHandler),
        (prefix + "hubml/health", HealthHandler),
    ]
    from .registry_handlers import registry_handlers

    handlers += registry_handlers(ctx, prefix, hub_auth)
    handlers.append((prefix + "(.*)", ProxyHandler))
    return web.Application(
        handlers,
        cookie_secret=os.urandom(32),
        max_body_size=2 * 1024**3,
        hub_auth=hub_auth,
    )


def _code_name(status: int) -> str:
    return {400: "INVALID_PARAMETER_VALUE", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST"}.get(
        status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST"
    )


def main() -> int:
    from hubml.hub_config.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    settings = load_settings()
    data = settings.data_dir / "mlflow"
    data.mkdir(parents=True, exist_ok=True)
    tracking = settings.tracking
    backend = tracking.backend_store_uri or f"sqlite:///{data / 'mlflow.db'}"
    artifacts = tracking.artifacts_destination or str(data / "artifacts")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/mlflow/")
    server = MLflowServer(backend, artifacts, prefix, workers=tracking.workers)
    server.start()
    ctx = TrackingContext(server, prefix)
    app = make_app(ctx, prefix)
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:5000")
    port = int(service_url.rsplit(":", 1)[-1].split("/")[0])
    app.listen(port, address=os.environ.get("HUBML_SERVICE_BIND", "127.0.0.1"), xheaders=True)
    log.info("mlflow front door on 127.0.0.1:%s%s", port, prefix)

    def supervise():
        if not server.alive():
            log.warning("mlflow server exited with %s; restarting", server.proc.returncode if server.proc else None)
            server.start()

    ioloop.PeriodicCallback(supervise, 2000).start()

    def shutdown(signum, frame):
        log.info("stopping (signal %s)", signum)
        server.stop()
        ioloop.IOLoop.current().add_callback_from_signal(ioloop.IOLoop.current().stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        ioloop.IOLoop.current().start()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
