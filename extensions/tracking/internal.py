"""The private MLflow server answers its front door only.

``mlflow server`` listens on a loopback port, which every account on the machine can connect to.
The front door (:mod:`.frontdoor`) authenticates people and applies ownership rules; a request
that skipped it would skip those rules. So the server is started with a secret of that start
(``HUBML_MLFLOW_FRONT_DOOR_SECRET`` in its environment, never on its command line) and serves
only requests carrying it in ``X-Hubml-Front-Door``: the front door adds it to what it forwards,
and the service's own MLflow client (the registry) adds it through MLflow's request-header
plugin point. Anything else gets 403.

``create_app`` is registered as the ``hubml`` MLflow app (``mlflow server --app-name hubml``,
entry point ``mlflow.app``); it wraps MLflow's own ASGI application.
"""

from __future__ import annotations

import hmac
import json
import os

SECRET_ENV = "HUBML_MLFLOW_FRONT_DOOR_SECRET"
HEADER = "X-Hubml-Front-Door"
_HEADER_KEY = HEADER.lower().encode()


class FrontDoorOnly:
    """ASGI middleware: 403 for any request without the start's secret."""

    def __init__(self, app, secret: str):
        self.app, self.secret = app, secret.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            given = dict(scope.get("headers") or []).get(_HEADER_KEY, b"")
            if not self.secret or not hmac.compare_digest(given, self.secret):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4403})
                    return
                body = json.dumps(
                    {
                        "error_code": "PERMISSION_DENIED",
                        "message": "this MLflow server answers hubml's front door only: use /services/mlflow/",
                    }
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def create_app():
    """The MLflow server's application (an ``mlflow.app`` factory), behind :class:`FrontDoorOnly`."""
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        raise SystemExit(
            f"{SECRET_ENV} is not set: hubml's MLflow server starts only from the mlflow service"
        )
    from mlflow.server.fastapi_app import app

    return FrontDoorOnly(app, secret)


class FrontDoorHeaders:
    """MLflow request-header provider (``mlflow.request_header_provider``): in the mlflow service's
    own process, MLflow clients talking to the private server add the secret. Elsewhere (kernels,
    jobs) there is no secret and it adds nothing."""

    def in_context(self) -> bool:
        return bool(os.environ.get(SECRET_ENV))

    def request_headers(self) -> dict:
        return {HEADER: os.environ.get(SECRET_ENV, "")}
