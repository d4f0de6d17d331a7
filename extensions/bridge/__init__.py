"""The hubml Jupyter server extension: what kernels need from their server, asked properly.

A kernel does not know which notebook it belongs to, nor what that notebook looks like on disk.
Its server does. This extension answers, for the calling kernel only:

``GET <server>/hubml/api/kernel-context?kernel_id=<id>`` →
``{"kernel_id", "path", "name", "last_modified", "content"}`` where ``content`` is the notebook
as last saved (nbformat JSON), and ``path`` is relative to the server's root (the user's home).

Kernels reach it with the server's own ``JUPYTERHUB_API_TOKEN`` (see ``hubml.kernels.context``).

``GET <server>/hubml/api/server`` → what this server runs on and what it costs: its profile's
slug and name, its GPU, the price per hour and when the hub started it (from the spawner's
``HUBML_*`` environment), for JupyterLab's status bar (``labextension/``).

``<server>/hubml/apps/<id>/...`` shows a Gradio demo a kernel started with
``hubml.widgets.apps.try_app`` through the server, so only whoever may use the server sees it:
the owner, never a public tunnel. The demo listens on a Unix socket in a private folder of the
owner's (named in ``<runtime>/hubml-inline-apps/<id>``), not on a port any account could
connect to; ``<id>`` is a random, unguessable name.
"""

from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web


class KernelContextHandler(APIHandler):
    auth_resource = "contents"

    @web.authenticated
    async def get(self):
        kernel_id = self.get_argument("kernel_id", "")
        if not kernel_id:
            raise web.HTTPError(400, "kernel_id is required")
        sessions = await self.session_manager.list_sessions()
        session = next((s for s in sessions if s.get("kernel", {}).get("id") == kernel_id), None)
        if session is None:
            raise web.HTTPError(
                404, f"kernel {kernel_id} has no notebook session on this server (is it a console?)"
            )
        path = session["path"]
        model = {
            "kernel_id": kernel_id,
            "path": path,
            "name": session.get("name") or path.rsplit("/", 1)[-1],
        }
        if self.get_argument("content", "1") != "0":
            try:
                saved = await self.contents_manager.get(path, content=True, type="notebook")
            except web.HTTPError as e:
                raise web.HTTPError(404, f"{path} is not saved yet: {e.log_message}") from None
            model["last_modified"] = saved["last_modified"].isoformat()
            model["content"] = saved["content"]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model, default=str))


class ServerInfoHandler(APIHandler):
    """This server's profile, GPU, price and start: what the status bar counts the cost from."""

    auth_resource = "status"

    @web.authenticated
    def get(self):
        import os

        from hubml.extensions.common.urls import service_public_url

        try:
            price = float(os.environ.get("HUBML_PRICE_PER_HOUR", ""))
        except ValueError:
            price = None
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "profile": os.environ.get("HUBML_PROFILE") or None,
                    "profile_name": os.environ.get("HUBML_PROFILE_NAME") or None,
                    "gpu": os.environ.get("HUBML_GPU") or "none",
                    "price_per_hour": price,
                    "started_at": os.environ.get("HUBML_SERVER_STARTED_AT") or None,
                    # everything else of this person's (schedules, runs, apps, approvals)
                    "home_url": service_public_url("home"),
                }
            )
        )


INLINE_ID = r"[A-Za-z0-9_-]{16,64}"


def inline_apps_dir():
    """Where kernels keep the sockets of their inline demos (the server's runtime dir, 0700)."""
    import os

    from jupyter_core.paths import jupyter_runtime_dir

    path = os.path.join(jupyter_runtime_dir(), "hubml-inline-apps")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class InlineAppHandler(JupyterHandler):
    """Forward to a kernel's inline Gradio demo; the server's own authentication applies."""

    auth_resource = "kernels"
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    @property
    def content_security_policy(self) -> str:
        # JupyterHub's single-user server forbids all framing (frame-ancestors 'none'); the
        # notebook that shows the demo is a page of this same server, on this same origin, so
        # the demo may be framed by this server's pages and by nobody else's
        return "frame-ancestors 'self'"

    def check_xsrf_cookie(self):
        # Gradio's own fetch() calls cannot carry Jupyter's XSRF token. The demo's id in the path
        # is a random secret shown only in its owner's notebook, so a request that names it was
        # not forged by another site: the id is this demo's XSRF token.
        return

    @web.authenticated
    async def get(self, app_id, path):
        import os
        import stat

        from hubml.extensions.apps.proxy import forward

        try:
            with open(os.path.join(inline_apps_dir(), app_id)) as f:
                sock = f.read().strip()
            st = os.lstat(sock)
        except OSError:
            raise web.HTTPError(
                404, "no such inline app (it was closed); start one with hubml.widgets.apps.try_app"
            ) from None
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            raise web.HTTPError(404, "no such inline app")
        query = f"?{self.request.query}" if self.request.query else ""
        await forward(self, sock, f"/{path}{query}")

    post = put = patch = delete = head = options = get


def _jupyter_server_extension_points():
    return [{"module": "hubml.extensions.bridge"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "hubml/api/kernel-context"), KernelContextHandler),
            (url_path_join(base, "hubml/api/server"), ServerInfoHandler),
            (url_path_join(base, rf"hubml/apps/({INLINE_ID})/(.*)"), InlineAppHandler),
        ],
    )
    serverapp.log.info(
        "hubml bridge: kernel context at %s", url_path_join(base, "hubml/api/kernel-context")
    )
