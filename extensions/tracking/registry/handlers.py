"""HTTP API of gated publishing and approval, served by the mlflow hub service.

All under ``/services/mlflow/hubml/api/models/<name>/``, authenticated like the rest of the
service (the service kit: hub token, or OAuth cookie with its XSRF token). The registry logic
(:class:`.service.RegistryService`) runs here, on the server, so nobody can skip a gate or
approve their own model by calling MLflow directly (the front door refuses direct moves of
``@champion`` and ``@challenger`` and writes of ``hubml.*`` tags).

| method | path | body / query | what | who |
|---|---|---|---|---|
| GET | ``<name>`` | | owner, maintainers, aliases, policy, versions | anyone |
| GET | ``<name>/compare`` | ``run_id``, ``against`` | candidate vs champion metrics | anyone |
| POST | ``<name>/publish`` | ``run_id``, ``artifact_path``, ``reason`` | gates, then version + @challenger | a new name: anyone (becomes owner); else maintainers |
| POST | ``<name>/versions/<v>/request-promotion`` | ``reason`` | ask an approver | anyone |
| POST | ``<name>/versions/<v>/approve`` | ``reason`` | move @champion | approver group, never the author |
| DELETE | ``<name>/versions/<v>`` | ``reason`` | delete a version not @champion/@challenger | maintainers |
| POST | ``<name>/rollback`` | ``reason`` | @champion back to the previous one | maintainers, approvers |
| GET | ``<name>/history`` | | every recorded action, oldest first | anyone |
| GET, PUT | ``<name>/policy`` | policy fields, ``reason`` | gate policy of the model | PUT: maintainers |
| GET, PUT | ``<name>/owners`` | ``owner``, ``maintainers``, ``reason`` | who maintains the model | PUT: admins |
| GET | ``<name>/aliases/<alias>`` | | the version an alias points at | anyone |
| GET | ``/services/mlflow/hubml/api/approvals`` | | requests you may approve, yours waiting, yours approved | anyone (their own) |

"maintainers" above means the model's owner, its maintainer groups and admins
(:mod:`.permissions`). A refusal is JSON ``{"status", "message"}`` with a 4xx status naming the
field or rule; a gate refusal of a publish is a 422 with the gate report.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

from .validation import RegistryError, check_fields, scrub, validate_owner

log = logging.getLogger("hubml.tracking.registry")

REASON = ("reason",)
_announcing: set = set()


class RegistryHandler(ServiceHandler):
    """Authenticated by the kit; ``registry()`` is the service's :class:`.service.RegistryService`."""

    def registry(self):
        return self.ctx.registry()

    @property
    def user(self) -> str:
        return self.user_name

    def body(self, what: str, allowed: tuple[str, ...] = REASON) -> dict:
        """The JSON body (``{}`` when there is none); 400 naming fields outside ``allowed``."""
        body = self.json_body()
        try:
            check_fields(body, allowed, f"the body of {what}")
        except RegistryError as e:
            raise APIError(e.status, e.message) from None
        return body

    def announce(self, kind: str, entry: dict) -> None:
        """Tell the approvals webhook (if one is set), after the answer has gone."""
        settings = self.ctx.settings
        if settings is None or not settings.tracking.approvals_webhook_url:
            return

        async def later():
            from .inbox import promotion_facts
            from .notify import promotion_event, send

            try:
                approvers, author = await asyncio.to_thread(
                    promotion_facts, self.registry(), entry["model"], entry.get("to_version")
                )
                await send(settings, promotion_event(kind, entry, approvers, author))
            except Exception:
                log.exception("approvals webhook: %s of %s not sent", kind, entry.get("model"))

        task = asyncio.ensure_future(later())
        _announcing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(_announcing.discard)

    async def groups(self) -> list[str]:
        """The acting user's hub groups, asked of the hub (tokens need not carry them)."""
        if "groups" in self.current_user:
            return list(self.current_user["groups"])
        return sorted(await self.ctx.hub.groups_of(self.user))

    async def call(self, fn, *args, **kwargs):
        """Run a registry operation off the event loop; RegistryError becomes its HTTP status.

        Anything else is logged here and answered with a 500 that says no more (its text could
        carry the private MLflow server's address)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))
        except RegistryError as e:
            raise APIError(e.status, e.message) from None
        except Exception:
            log.exception("registry request %s %s failed", self.request.method, self.request.path)
            raise APIError(
                500, "the registry failed unexpectedly; the service log has the details"
            ) from None

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
        body = self.body("publish", ("run_id", "artifact_path", "reason"))
        groups = await self.groups()
        result = await self.call(
            lambda: self.registry().publish(
                name,
                body.get("run_id", ""),
                user=self.user,
                user_groups=groups,
                admin=self.is_admin,
                artifact_path=body.get("artifact_path", "model"),
                reason=body.get("reason", ""),
            )
        )
        # a gate refusal is an answer, not an error of the request: 422 with the report
        self.reply(result.to_dict(), 201 if result.ok else 422)


class RequestPromotionHandler(RegistryHandler):
    async def post(self, name, version):
        body = self.body("request-promotion")
        entry = await self.call(
            lambda: self.registry().request_promotion(
                name, version, user=self.user, reason=body.get("reason", "")
            )
        )
        self.reply(entry.to_dict(), 201)
        self.announce("requested", entry.to_dict())


class ApproveHandler(RegistryHandler):
    async def post(self, name, version):
        body = self.body("approve")
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
        self.announce("approved", entry.to_dict())


class VersionHandler(RegistryHandler):
    async def delete(self, name, version):
        body = self.body("a version deletion")
        groups = await self.groups()
        entry = await self.call(
            lambda: self.registry().delete_version(
                name,
                version,
                user=self.user,
                user_groups=groups,
                admin=self.is_admin,
                reason=body.get("reason", ""),
            )
        )
        self.reply(entry.to_dict())
        self.announce("approved", entry.to_dict())


class RollbackHandler(RegistryHandler):
    async def post(self, name):
        body = self.body("rollback")
        groups = await self.groups()
        entry = await self.call(
            lambda: self.registry().rollback(
                name,
                user=self.user,
                user_groups=groups,
                admin=self.is_admin,
                reason=body.get("reason", ""),
            )
        )
        self.reply(entry.to_dict())
        self.announce("approved", entry.to_dict())


class HistoryHandler(RegistryHandler):
    async def get(self, name):
        entries = await self.call(lambda: self.registry().history(name))
        self.reply({"model": name, "entries": [e.to_dict() for e in entries]})


class PolicyHandler(RegistryHandler):
    async def get(self, name):
        policy = await self.call(lambda: self.registry().policy(name))
        self.reply(policy.to_dict())

    async def put(self, name):
        body = self.json_body()
        reason = body.pop("reason", "")
        groups = await self.groups()

        def change():
            from .policy import GatePolicy

            return self.registry().set_policy(
                name,
                GatePolicy.from_request(body),
                user=self.user,
                user_groups=groups,
                admin=self.is_admin,
                reason=reason,
            )

        policy = await self.call(change)
        self.reply(policy.to_dict())


class OwnersHandler(RegistryHandler):
    async def get(self, name):
        owners = await self.call(lambda: self.registry().owners(name))
        self.reply(owners.to_dict())

    async def put(self, name):
        body = self.body("owners", ("owner", "maintainers", "reason"))
        owner = body.get("owner")
        if owner is not None and self.is_admin:
            await self._require_hub_user(owner)
        owners = await self.call(
            lambda: self.registry().set_owners(
                name,
                user=self.user,
                admin=self.is_admin,
                owner=owner,
                maintainers=body.get("maintainers"),
                reason=body.get("reason", ""),
            )
        )
        self.reply(owners.to_dict())

    async def _require_hub_user(self, owner) -> None:
        """A typo must not hand a model to nobody: the new owner must be a hub user."""
        try:
            validate_owner(owner)
        except RegistryError as e:
            raise APIError(e.status, e.message) from None
        code, model = await self.ctx.hub.request("GET", f"users/{quote(owner, safe='')}")
        if code == 404:
            raise APIError(400, f"invalid owner {owner!r}: there is no hub user of that name")
        if code != 200:
            raise APIError(
                502, f"could not check owner {owner!r} with the hub: {scrub(model.get('message'))}"
            )


class AliasHandler(RegistryHandler):
    async def get(self, name, alias):
        version = await self.call(lambda: self.registry().resolve_alias(name, alias))
        self.reply({"model": name, "alias": alias, "version": version})


class ApprovalsHandler(RegistryHandler):
    """``hubml/api/approvals``: the caller's inbox (requests they may approve), their own
    requests still waiting, and their requests approved lately."""

    async def get(self):
        from .inbox import promotions

        groups = await self.groups()
        self.reply(await self.call(lambda: promotions(self.registry(), self.user, groups)))


NAME = r"([^/]+)"
ROUTES = [
    ("hubml/api/approvals", ApprovalsHandler),
    (f"hubml/api/models/{NAME}/compare", CompareHandler),
    (f"hubml/api/models/{NAME}/publish", PublishHandler),
    (f"hubml/api/models/{NAME}/versions/([^/]+)/request-promotion", RequestPromotionHandler),
    (f"hubml/api/models/{NAME}/versions/([^/]+)/approve", ApproveHandler),
    (f"hubml/api/models/{NAME}/versions/([^/]+)", VersionHandler),
    (f"hubml/api/models/{NAME}/rollback", RollbackHandler),
    (f"hubml/api/models/{NAME}/history", HistoryHandler),
    (f"hubml/api/models/{NAME}/policy", PolicyHandler),
    (f"hubml/api/models/{NAME}/owners", OwnersHandler),
    (f"hubml/api/models/{NAME}/aliases/([^/]+)", AliasHandler),
    (f"hubml/api/models/{NAME}", ModelHandler),
]
