"""A hubml service's application and process: route table, OAuth callback, health, listening.

A service module builds its handlers on :class:`~.handlers.ServiceHandler`, lists them in a route
table relative to its prefix, and calls :func:`serve`::

    ctx = ServiceContext("jobs", settings)
    app = make_app(ctx, [("api/jobs", JobsHandler), ...])
    serve(app, on_start=..., on_stop=...)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
from urllib.parse import urlsplit

from tornado import ioloop, web

from .handlers import HealthHandler
from .hub import HubAPI

log = logging.getLogger("hubml.service")


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )


def load_service_settings():
    """The platform settings as the hub resolved them (see ``hub_config.services.service_environment``)."""
    from hubml.hub_config.settings import load_settings

    return load_settings()


# how long a service trusts the hub's answer about a token: a revoked token (a finished job
# run's, an expired share's) stops working within this many seconds
TOKEN_CACHE_S = 5


class ServiceContext:
    """What a service's handlers share: its name, settings, the hub (API and OAuth), its prefix."""

    def __init__(
        self,
        name: str,
        settings=None,
        *,
        hub_auth=None,
        hub: HubAPI | None = None,
        prefix: str = "",
    ):
        from jupyterhub.services.auth import HubOAuth

        self.name = name
        self.settings = settings
        self.hub_auth = hub_auth if hub_auth is not None else HubOAuth(cache_max_age=TOKEN_CACHE_S)
        self.hub = hub or HubAPI()
        prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{name}/")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def health(self) -> dict:
        return {"pid": os.getpid(), "started_at": self.started_at}


def make_app(ctx: ServiceContext, routes: list, **settings) -> web.Application:
    """The tornado application of a service: ``routes`` are ``(pattern, handler[, kwargs])``
    relative to the service's prefix; each handler gets ``ctx`` unless kwargs say otherwise.
    The OAuth callback and ``hubml/health`` are added here."""
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    class CallbackHandler(HubOAuthCallbackHandler):
        # the PKCE verifier is kept on the HubOAuth instance that started the login
        def initialize(self):
            self.hub_auth = ctx.hub_auth

    table = [
        (ctx.prefix + "oauth_callback", CallbackHandler),
        (ctx.prefix + "hubml/health", HealthHandler, {"ctx": ctx}),
    ]
    for route in routes:
        pattern, handler, *rest = route
        table.append((ctx.prefix + pattern, handler, rest[0] if rest else {"ctx": ctx}))
    settings.setdefault("cookie_secret", os.urandom(32))
    return web.Application(table, hub_auth=ctx.hub_auth, **settings)


def service_port(default: int = 5000) -> int:
    """The port JupyterHub gave this service (``JUPYTERHUB_SERVICE_URL``)."""
    url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    return urlsplit(url).port or default if url else default


def listen_when_free(app, name: str, port: int, address: str, wait_s: float = 15, **listen):
    """Listen on ``port``, waiting up to ``wait_s`` while it is taken (the copy a killed hub left
    behind stops itself within a second: :mod:`.parent`); then one line and exit status 1."""
    import errno
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            app.listen(port, address=address, xheaders=True, **listen)
            return
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if time.monotonic() > deadline:
                log.error(
                    "%s: port %s is taken by another process, so this service cannot start; "
                    "stop that process, or give the service another port "
                    "(hub.internal_ports.%s, kept in the data dir's ports.json)",
                    name,
                    port,
                    name,
                )
                raise SystemExit(1) from None
            time.sleep(0.2)


def serve(app: web.Application, name: str, *, on_start=None, on_stop=None, **listen) -> None:
    """Listen where JupyterHub said, run ``on_start`` (a coroutine function) once the loop runs,
    and stop on SIGTERM/SIGINT after ``on_stop`` (a plain function)."""
    from .parent import exit_with_parent

    port = service_port()
    address = os.environ.get("HUBML_SERVICE_BIND", "127.0.0.1")
    listen_when_free(app, name, port, address, **listen)
    log.info("%s service on %s:%s (pid %s)", name, address or "*", port, os.getpid())
    exit_with_parent(name)
    loop = ioloop.IOLoop.current()
    if on_start is not None:
        loop.add_callback(lambda: asyncio.ensure_future(on_start()))

    stopping = []

    def stop_now():
        if stopping:
            return
        stopping.append(True)
        try:
            if on_stop is not None:
                on_stop()
        finally:
            loop.stop()

    def shutdown(signum, frame):
        # the stop runs in the loop, not inside whatever the signal interrupted: a handler that
        # waited for a child from inside the loop's own poll of that child could not, and the
        # service would run on (orphaned, restarting its child) after its hub was gone
        log.info("%s: stopping (signal %s)", name, signum)
        loop.add_callback_from_signal(stop_now)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    loop.start()


# -- a store that cannot be opened ------------------------------------------------------------


class StoreUnavailable(Exception):
    """A service's store cannot be opened; the message is one line: what, why, what to do."""


def store_url(configured: str, data_dir, *path: str) -> str:
    """A store's SQLAlchemy URL: the configured one (production: PostgreSQL), else a SQLite
    file at ``data_dir/<path...>`` (its folder made)."""
    if configured:
        return configured
    from pathlib import Path

    file = Path(data_dir).joinpath(*path)
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def open_store(name: str, url: str, init) -> object:
    """The service's SQLAlchemy engine for ``url``, made and initialised by ``init(url)``;
    :class:`StoreUnavailable` (one readable line) when the store is corrupt or unreachable."""
    try:
        return init(url)
    except Exception as e:
        from sqlalchemy.engine import make_url

        try:
            where = make_url(url).render_as_string(hide_password=True)
        except Exception:
            where = "its configured URL"
        first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
        raise StoreUnavailable(
            f"the {name} store {where} cannot be opened ({first}): restore it from a backup, or "
            f"move it aside to start with an empty one, then restart the hub; until then the "
            f"{name} service answers 503 and the rest of the hub works"
        ) from None


class UnavailableHandler(web.RequestHandler):
    """Every request to a service whose store cannot be opened: a 503 saying so (JSON)."""

    def initialize(self, name: str, prefix: str):
        self.name, self.prefix = name, prefix

    def prepare(self):
        path = self.request.path.rstrip("/")
        health = path.endswith("hubml/health")
        # the service's root answers 200: JupyterHub waits for a non-5xx answer there before
        # it finishes starting, and would otherwise stop the whole hub after its timeout
        root = path == self.prefix.rstrip("/")
        self.set_status(200 if root else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Retry-After", "60")
        self.finish(
            {
                "status": "store unavailable" if health or root else 503,
                "service": self.name,
                "message": (
                    f"the {self.name} service cannot open its store; an administrator has been "
                    "told (the service's log says what to do). Nothing was changed."
                ),
            }
        )


def serve_unavailable(name: str, problem: StoreUnavailable) -> int:
    """Stay up (JupyterHub stops the whole hub when a service exits while it starts) and answer
    503 until an operator fixes the store; the log has the one line that says how."""
    log.error("%s", problem)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{name}/")
    app = web.Application(
        [(prefix.rstrip("/") + "(/.*)?", UnavailableHandler, {"name": name, "prefix": prefix})]
    )
    serve(app, name)
    return 1
