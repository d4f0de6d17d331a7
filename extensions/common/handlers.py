"""The request handler every hubml service builds on: who is asking, and in what shape to answer.

Deny by default: a :class:`ServiceHandler` answers only requests the hub attributes to a user or
service holding this service's access scope (``access:services!service=<name>``, JupyterHub's
``JUPYTERHUB_OAUTH_ACCESS_SCOPES``). The hub is asked asynchronously, in ``prepare``, so a slow
hub never blocks the service's loop. Writes made with a browser's OAuth cookie must carry
JupyterHub's XSRF token (header ``X-XSRFToken``); writes with a token in the ``Authorization``
header need none, because another site cannot make a browser send that header. There is no
other exemption.
"""

from __future__ import annotations

import html
import json

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web

from .errors import APIError, error_message

MAX_BODY = 64 * 1024


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """Authenticated JSON handler of a hubml service (``initialize(ctx)``: the service's context).

    ``page = True`` marks a page for people: a browser without a session is sent to the hub's
    login instead of getting a JSON 403. ``public = True`` skips authentication (health checks
    only; they say nothing about anyone).
    """

    page = False
    public = False

    def initialize(self, ctx):
        self.ctx = ctx
        self.hub_auth = ctx.hub_auth

    # -- identity ----------------------------------------------------------------------------

    def get_current_user(self):
        return getattr(self, "_hubml_user", None)

    def _why_anonymous(self) -> str:
        from jupyterhub._xsrf_utils import _needs_check_xsrf

        if self.hub_auth._get_token_cookie(self) and _needs_check_xsrf(self):
            return (
                "this request carries a browser session but not its XSRF token: send the _xsrf "
                "token (header X-XSRFToken) or a JupyterHub token in the Authorization header"
            )
        if self.request.headers.get("Authorization"):
            return f"the token is not valid (expired or revoked) for the {self.ctx.name} service"
        return f"a JupyterHub token with access to the {self.ctx.name} service is required"

    async def prepare(self):
        if self.public:
            return
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise APIError(
                    403,
                    f"{model.get('kind', 'user')} {model.get('name')} may not use the {self.ctx.name} service",
                ) from None
        if not model:
            browser = self.request.method in ("GET", "HEAD") and not self.request.headers.get(
                "Authorization"
            )
            if self.page and browser:
                self.redirect(self.get_login_url())
                return
            raise APIError(403, self._why_anonymous())
        self._hubml_user = model
        self.hub_auth._persist_url_token_if_set(self)

    @property
    def user_name(self) -> str:
        return self.current_user["name"]

    @property
    def is_admin(self) -> bool:
        model = self.current_user or {}
        return bool(model.get("admin")) or "admin:users" in set(model.get("scopes", []))

    # -- requests and answers ----------------------------------------------------------------

    def json_body(self, max_bytes: int = MAX_BODY, hint: str = "") -> dict:
        """The request's JSON object; 413 past ``max_bytes``, 400 when it is not an object."""
        size = len(self.request.body or b"")
        if size > max_bytes:
            raise APIError(
                413,
                f"request body is {size} bytes; at most {max_bytes}"
                + (f" ({hint})" if hint else ""),
            )
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise APIError(400, f"request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        return body

    def send(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = error_message(exc, self._reason)
        for key, value in getattr(exc, "headers", {}).items():
            self.set_header(key, value)
        if self.page and not self.request.path.startswith(self.ctx.prefix + "api/"):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(
                page_html(f"{status_code}: {self._reason}", f"<p>{html.escape(message)}</p>")
            )
            return
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"status": status_code, "message": message, **getattr(exc, "extra", {})})
        )


class HealthHandler(ServiceHandler):
    """``hubml/health``: the process answers (for supervisors and tests); nothing about anyone."""

    public = True

    def get(self):
        self.send({"status": "ok", "service": self.ctx.name, **self.ctx.health()})


def page_html(title: str, body: str) -> str:
    """A small, styled page; ``title`` is escaped here, ``body`` must already be."""
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · hubml</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;"
        "color:#1f2328}small{color:#57606a}li{margin:.6rem 0}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>"
    )
