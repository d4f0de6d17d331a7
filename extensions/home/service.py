"""The ``home`` hub service: ``/services/home/`` (a page) and ``/services/home/api/home`` (JSON).

One place for what a person runs: their servers (machine, running for, cost so far), the
approvals waiting for them and their own requests, their schedules (run now, pause, resume,
edit, delete), recent job runs (status, duration, cost, output, log, MLflow run) and their apps
(URL, who they are shared with, last visitor, stop, start, delete). The page is gathered from
the hub and the other services with the person's own OAuth token (:mod:`.gather`); buttons go
through ``api/act`` (:mod:`.actions`).
"""

from __future__ import annotations

import logging
import os
import sys

from hubml.extensions.common.app import (
    ServiceContext,
    load_service_settings,
    make_app,
    serve,
    setup_logging,
)
from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler, page_html

from .actions import relay_for
from .gather import Gatherer, Unanswered, call
from .page import home_html

log = logging.getLogger("hubml.home")


class HomeContext(ServiceContext):
    def __init__(self, settings, **kw):
        super().__init__("home", settings, **kw)
        self.gatherer = Gatherer(settings, os.environ.get("JUPYTERHUB_API_URL", ""))


class HomeBase(ServiceHandler):
    def person_token(self) -> str:
        """The token this request came with (header, or the session's OAuth token): what the
        home service acts with, so nothing is asked with more than the person holds."""
        token = self.hub_auth.get_token(self)
        if not token:
            raise APIError(403, "a JupyterHub token or a session is required")
        return token

    async def gathered(self) -> dict:
        if self.current_user.get("kind", "user") != "user":
            raise APIError(403, "the home page is a person's: services have none")
        return await self.ctx.gatherer.gather(self.user_name, self.person_token())


class HomePage(HomeBase):
    page = True

    async def get(self):
        data = await self.gathered()
        page = page_html("Your hubml", home_html(data, self.ctx.settings))
        attrs = f"<body data-base='{self.ctx.prefix}' data-xsrf='{self.xsrf_token.decode()}'>"
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page.replace("<h1>", attrs + "<h1>", 1))


class HomeAPI(HomeBase):
    async def get(self):
        self.send(await self.gathered())


class ActHandler(HomeBase):
    """``POST api/act {"do": ..., ...}``: one of the page's actions, relayed to its service with
    the person's token; the service's answer (status and JSON) is passed back as it is."""

    async def post(self):
        if self.current_user.get("kind", "user") != "user":
            raise APIError(403, "the home page's actions are a person's: services have none")
        relay = relay_for(self.json_body(), set(self.ctx.gatherer.services))
        base = self.ctx.gatherer.services[relay.service]
        try:
            status, data = await call(
                base,
                f"{relay.service} service",
                relay.method,
                relay.path,
                self.person_token(),
                relay.body,
            )
        except Unanswered as e:
            raise APIError(503, f"{e}; nothing was changed here, try again in a moment") from None
        log.info(
            "%s: %s %s%s -> %s",
            self.user_name,
            relay.method,
            relay.service,
            "/" + relay.path,
            status,
        )
        if status == 204:
            self.set_status(204)
            self.finish()
            return
        self.send(data, status)


ROUTES = [
    ("", HomePage),
    ("api/home", HomeAPI),
    ("api/act", ActHandler),
]


def main() -> int:
    setup_logging()
    settings = load_service_settings()
    ctx = HomeContext(settings)
    serve(make_app(ctx, ROUTES), "home")
    return 0


if __name__ == "__main__":
    sys.exit(main())
