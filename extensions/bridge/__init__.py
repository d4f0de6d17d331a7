"""The hubml Jupyter server extension: what kernels need from their server, asked properly.

A kernel does not know which notebook it belongs to, nor what that notebook looks like on disk.
Its server does. This extension answers, for the calling kernel only:

``GET <server>/hubml/api/kernel-context?kernel_id=<id>`` →
``{"kernel_id", "path", "name", "last_modified", "content"}`` where ``content`` is the notebook
as last saved (nbformat JSON), and ``path`` is relative to the server's root (the user's home).

Kernels reach it with the server's own ``JUPYTERHUB_API_TOKEN`` (see ``hubml.kernels.context``).
"""

from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler
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
        model = {"kernel_id": kernel_id, "path": path, "name": session.get("name") or path.rsplit("/", 1)[-1]}
        if self.get_argument("content", "1") != "0":
            try:
                saved = await self.contents_manager.get(path, content=True, type="notebook")
            except web.HTTPError as e:
                raise web.HTTPError(404, f"{path} is not saved yet: {e.log_message}") from None
            model["last_modified"] = saved["last_modified"].isoformat()
            model["content"] = saved["content"]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model, default=str))


def _jupyter_server_extension_points():
    return [{"module": "hubml.extensions.bridge"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$", [(url_path_join(base, "hubml/api/kernel-context"), KernelContextHandler)]
    )
    serverapp.log.info("hubml bridge: kernel context at %s", url_path_join(base, "hubml/api/kernel-context"))
