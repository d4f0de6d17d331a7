"""HTTP API of gated publishing and approval, served by the mlflow hub service.

All under ``/services/mlflow/hubml/api/models/<name>/``, authenticated like the rest of the
service (hub token or OAuth cookie). The registry logic lives in :mod:`.registry`; it runs here,
on the server, so nobody can skip a gate or approve their own model by calling MLflow directly
(the front door refuses direct moves of ``@champion`` and ``@challenger``).

| method | path | body / query | what |
|---|---|---|---|
| GET | ``<name>`` | | aliases, policy, versions |
| GET | ``<name>/compare`` | ``run_id``, ``against`` | candidate vs champion metrics |
| POST | ``<name>/publish`` | ``run_id``, ``artifact_path``, ``reason`` | gates, then version + @challenger |
| POST | ``<name>/versions/<v>/request-promotion`` | ``reason`` | ask an approver |
| POST | ``<name>/versions/<v>/approve`` | ``reason`` | move @champion (approvers only) |
| POST | ``<name>/rollback`` | ``reason`` | @champion back to the previous one |
| GET | ``<name>/history`` | | every alias move, oldest first |
| GET, PUT | ``<name>/policy`` | policy fields | gate policy of the model |
| GET | ``<name>/aliases/<alias>`` | | the version an alias points at |
"""

from __future__ import annotations

import asyncio
import json
import logging

from tornado import httpclient, web

log = logging.getLogger("hubml.tracking.registry")


def registry_handlers(ctx, prefix: str, hub_auth) -> list:
    from jupyterhub.services.auth import HubOAuthenticated

    from .registry import AuditLog, GatePolicy, RegistryError, RegistryService, default_audit_url

    state: dict = {}

    def service() -> RegistryService:
        if "service" not in state:
            from mlflow import MlflowClient

            from hubml.hub_config.settings import load_settings

            settings = load_settings()
            audit_url = settings.tracking.audit_db_url or default_audit_url(settings.data_dir / "mlflow")
            client = MlflowClient(tracking_uri=f"{ctx.mlflow.url}{ctx.prefix.rstrip('/')}")
            state["service"] = RegistryService(client, AuditLog(audit_url))
        return state["service"]

    class RegistryHandler(HubOAuthenticated, web.RequestHandler):
        def initialize(self):
            self.hub_auth = hub_auth

        def check_xsrf_cookie(self):
            if self.request.headers.get("Sec-Fetch-Site") == "same-origin":
                return
            return super().check_xsrf_cookie()

        def get_login_url(self):
            raise web.HTTPError(403, "a JupyterHub token with access to the mlflow service is required")

        def prepare(self):
            if self.current_user is None:
                raise web.HTTPError(403, "a JupyterHub token with access to the mlflow service is required")

        def write_error(self, status_code, **kwargs):
            exc = kwargs.get("exc_info", (None, None, None))[1]
            message = getattr(exc, "log_message", None) or self._reason
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))

        @property
        def user(self) -> str:
            return self.current_user["name"]

        def body(self) -> dict:
            try:
                data = json.loads(self.request.body or b"{}")
            except ValueError:
                raise web.HTTPError(400, "request body must be JSON") from None
            if not isinstance(data, dict):
                raise web.HTTPError(400, "request body must be a JSON object")
            return data

        async def groups(self) -> list[str]:
            """The acting user's hub groups, asked of the hub (tokens need not carry them)."""
            if "groups" in self.current_user:
                return list(self.current_user["groups"])
            url = f"{hub_auth.api_url.rstrip('/')}/users/{self.user}"
            resp = await httpclient.AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {hub_auth.api_token}"}, raise_error=False
            )
            if resp.code != 200:
                log.warning("could not read groups of %s: HTTP %s", self.user, resp.code)
                return []
            return list(json.loads(resp.body).get("groups", []))

        async def call(self, fn, *args, **kwargs):
            """Run a registry operation off the event loop; RegistryError becomes its HTTP status."""
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))
            except RegistryError as e:
                raise web.HTTPError(e.status, str(e).replace("%", "%%")) from None

        def reply(self, data, status: int = 200):
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(data, default=str))

    class ModelHandler(RegistryHandler):
        async def get(self, name):
            self.reply(await self.call(lambda: service().describe(name)))

    class CompareHandler(RegistryHandler):
        async def get(self, name):
            run_id = self.get_argument("run_id", "")
            against = self.get_argument("against", "champion")
            result = await self.call(lambda: service().compare(name, run_id, against))
            self.reply(result.to_dict())

    class PublishHandler(RegistryHandler):
        async def post(self, name):
            body = self.body()
            result = await self.call(
                lambda: service().publish(
                    name,
                    body.get("run_id", ""),
                    user=self.user,
                    artifact_path=body.get("artifact_path", "model"),
                    reason=body.get("reason", ""),
                )
            )
            # a gate refusal is an answer, not an error of the request: 422 with the report
            self.reply(result.to_dict(), 201 if result.ok else 422)

    class RequestPromotionHandler(RegistryHandler):
        async def post(self, name, version):
            body = self.body()
            entry = await self.call(
                lambda: service().request_promotion(name, version, user=self.user, reason=body.get("reason", ""))
            )
            self.reply(entry.to_dict(), 201)

    class ApproveHandler(RegistryHandler):
        async def post(self, name, version):
            body = self.body()
            groups = await self.groups()
            entry = await self.call(
                lambda: service().approve(
                    name, version, approver=self.user, approver_groups=groups, reason=body.get("reason", "")
                )
            )
            self.reply(entry.to_dict())

    class RollbackHandler(RegistryHandler):
        async def post(self, name):
            body = self.body()
            groups = await self.groups()
            entry = await self.call(
                lambda: service().rollback(name, user=self.user, user_groups=groups, reason=body.get("reason", ""))
            )
            self.reply(entry.to_dict())

    class HistoryHandler(RegistryHandler):
        async def get(self, name):
            entries = await self.call(lambda: service().history(name))
            self.reply({"model": name, "entries": [e.to_dict() for e in entries]})

    class PolicyHandler(RegistryHandler):
        async def get(self, name):
            policy = await self.call(lambda: service().policy(name))
            self.reply(policy.to_dict())

        async def put(self, name):
            body = self.body()
            reason = body.pop("reason", "")
            groups = await self.groups()

            def change():
                try:
                    policy = GatePolicy(**body)
                except TypeError as e:
                    raise RegistryError(f"unknown policy field: {e}", 400) from None
                return service().set_policy(name, policy, user=self.user, user_groups=groups, reason=reason)

            policy = await self.call(change)
            self.reply(policy.to_dict())

    class AliasHandler(RegistryHandler):
        async def get(self, name, alias):
            version = await self.call(lambda: service().resolve_alias(name, alias))
            self.reply({"model": name, "alias": alias, "version": version})

    base = prefix + "hubml/api/models/"
    name = r"([^/]+)"
    return [
        (base + name + "/compare", CompareHandler),
        (base + name + "/publish", PublishHandler),
        (base + name + r"/versions/([^/]+)/request-promotion", RequestPromotionHandler),
        (base + name + r"/versions/([^/]+)/approve", ApproveHandler),
        (base + name + "/rollback", RollbackHandler),
        (base + name + "/history", HistoryHandler),
        (base + name + "/policy", PolicyHandler),
        (base + name + r"/aliases/([^/]+)", AliasHandler),
        (base + name, ModelHandler),
    ]
