"""HTTP API of gated publishing and approval, served by the mlflow hub service.

All under ``/services/mlflow/hubml/api/models/<name>/``, authenticated like the rest of the
service (the service kit: hub token, or OAuth cookie with its XSRF token). The registry logic
lives in :mod:`.registry`; it runs here,
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
import logging

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

log = logging.getLogger("hubml.tracking.registry")


class RegistryHandler(ServiceHandler):
    """Authenticated by the kit; ``registry()`` is the service's :class:`~.registry.RegistryService`."""

    def registry(self):
        return self.ctx.registry()

    @property
    def user(self) -> str:
        return self.user_name

    def body(self) -> dict:
        return self.json_body()

    async def groups(self) -> list[str]:
        """The acting user's hub groups, asked of the hub (tokens need not carry them)."""
        if "groups" in self.current_user:
            return list(self.current_user["groups"])
        return sorted(await self.ctx.hub.groups_of(self.user))

    async def call(self, fn, *args, **kwargs):
        """Run a registry operation off the event loop; RegistryError becomes its HTTP status."""
        from .registry import RegistryError

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))
        except RegistryError as e:
            raise APIError(e.status, str(e)) from None

    def reply(self, data, status: int = 200):
        self.send(data, status)


class ModelHandler(RegistryHandler):
    async def get(self, name):
        self.reply(await self.call(lambda: self.registry().describe(name)))


class CompareHandler(RegistryHandler):
    async def get(self, name):
        run_id = self.get_argument("run_id", "")
        against = self.get_argument("against", "champion")
        result = await self.call(lambda: self.registry().compare(name, run_id, against))
        self.reply(result.to_dict())


class PublishHandler(RegistryHandler):
    async def post(self, name):
        body = self.body()
        result = await self.call(
            lambda: self.registry().publish(
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
            lambda: self.registry().request_promotion(
                name, version, user=self.user, reason=body.get("reason", "")
            )
        )
        self.reply(entry.to_dict(), 201)


class ApproveHandler(RegistryHandler):
    async def post(self, name, version):
        body = self.body()
        groups = await self.groups()
        entry = await self.call(
            lambda: self.registry().approve(
                name,
                version,
                approver=self.user,
                approver_groups=groups,
                reason=body.get("reason", ""),
            )
        )
        self.reply(entry.to_dict())


class RollbackHandler(RegistryHandler):
    async def post(self, name):
        body = self.body()
        groups = await self.groups()
        entry = await self.call(
            lambda: self.registry().rollback(
                name, user=self.user, user_groups=groups, reason=body.get("reason", "")
            )
        )
        self.reply(entry.to_dict())


class HistoryHandler(RegistryHandler):
    async def get(self, name):
        entries = await self.call(lambda: self.registry().history(name))
        self.reply({"model": name, "entries": [e.to_dict() for e in entries]})


class PolicyHandler(RegistryHandler):
    async def get(self, name):
        policy = await self.call(lambda: self.registry().policy(name))
        self.reply(policy.to_dict())

    async def put(self, name):
        body = self.body()
        reason = body.pop("reason", "")
        groups = await self.groups()

        def change():
            from .registry import GatePolicy, RegistryError

            try:
                policy = GatePolicy(**body)
            except TypeError as e:
                raise RegistryError(f"unknown policy field: {e}", 400) from None
            return self.registry().set_policy(
                name, policy, user=self.user, user_groups=groups, reason=reason
            )

        policy = await self.call(change)
        self.reply(policy.to_dict())


class AliasHandler(RegistryHandler):
    async def get(self, name, alias):
        version = await self.call(lambda: self.registry().resolve_alias(name, alias))
        self.reply({"model": name, "alias": alias, "version": version})


NAME = r"([^/]+)"
ROUTES = [
    (f"hubml/api/models/{NAME}/compare", CompareHandler),
    (f"hubml/api/models/{NAME}/publish", PublishHandler),
    (f"hubml/api/models/{NAME}/versions/([^/]+)/request-promotion", RequestPromotionHandler),
    (f"hubml/api/models/{NAME}/versions/([^/]+)/approve", ApproveHandler),
    (f"hubml/api/models/{NAME}/rollback", RollbackHandler),
    (f"hubml/api/models/{NAME}/history", HistoryHandler),
    (f"hubml/api/models/{NAME}/policy", PolicyHandler),
    (f"hubml/api/models/{NAME}/aliases/([^/]+)", AliasHandler),
    (f"hubml/api/models/{NAME}", ModelHandler),
]
