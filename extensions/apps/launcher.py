"""The process of a published app: the Gradio app behind JupyterHub OAuth, and nothing else.

JupyterHub starts this as the owner's named server ``app-<name>`` (the spawner swaps the
Jupyter server command for this module when the spawn carries ``{"app": "<name>"}``), as the
owner's Unix account on one machine and as a pod on Kubernetes. It serves no Jupyter API, no
terminals, no kernels: every path under the server's prefix is the app, behind a front door that
lets in only hub users whose token or OAuth cookie carries
``access:servers!server=<owner>/app-<name>`` (the owner, admins, and whoever the owner shared
the server with). The hub's answer is cached for one second, so a revoked share takes effect
within a second.

The bundle (``app.py``, which must define ``demo``, and ``requirements.txt``) comes from the apps
service (``HUBML_APP_RUNTIME_URL``, with the server's own token) into a private folder of this
process, where Gradio listens on a Unix socket (:mod:`.serve`): no other account can reach the
app except through the front door. The log and the visitors go back to the apps service every
few seconds, and when the app fails to start.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import shutil
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("hubml.apps.launcher")
USAGE_EVERY_S = 5.0
REVALIDATE_S = 1.0


def load_demo(app_py: Path):
    """The ``demo`` object ``app.py`` defines (run as a module, not as ``__main__``)."""
    import gradio as gr

    namespace = runpy.run_path(str(app_py), run_name="hubml_app")
    demo = namespace.get("demo")
    if demo is None:
        candidates = [v for v in namespace.values() if isinstance(v, gr.Blocks)]
        if len(candidates) != 1:
            raise SystemExit(
                f"{app_py.name} must define `demo = gr.Interface(...)` or `gr.Blocks()`; "
                f"found {len(candidates)} Gradio apps"
            )
        demo = candidates[0]
    if not isinstance(demo, gr.Blocks):
        raise SystemExit(
            f"`demo` in {app_py.name} is a {type(demo).__name__}, not a Gradio Interface or Blocks"
        )
    return demo


class Usage:
    """``usage.json``: last visitor and time, written at most every few seconds."""

    def __init__(self, path: Path):
        self.path = path
        self.last_write = 0.0
        self.data = {"last_used_at": None, "last_user": None, "requests": 0, "users": []}
        self.on_flush = None  # tells the apps service (a new visitor is reported at once)

    def touch(self, user: str) -> None:
        new_user = user != self.data["last_user"]
        self.data["requests"] += 1
        self.data["last_user"] = user
        self.data["last_used_at"] = time.time()
        if user not in self.data["users"]:
            self.data["users"] = [*self.data["users"], user][-50:]
        if new_user or time.time() - self.last_write >= USAGE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self.last_write = time.time()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)
        if self.on_flush is not None:
            self.on_flush()


def make_app(prefix: str, socket_path: str, owner: str, app_name: str, usage: Usage):
    from jupyterhub.services.auth import (
        HubOAuth,
        HubOAuthCallbackHandler,
        HubOAuthenticated,
        _ExpiringDict,
    )
    from tornado import web

    from .proxy import forward

    # the hub's answer about a token (its user and current scopes) is kept for one second only,
    # so revoking a share takes effect within a second (cache_max_age=0 would mean forever)
    hub_auth = HubOAuth(cache=_ExpiringDict(max_age=REVALIDATE_S))

    class AppHandler(HubOAuthenticated, web.RequestHandler):
        SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

        def initialize(self):
            self.hub_auth = hub_auth

        def check_xsrf_cookie(self):
            return  # the app is Gradio's; requests are authenticated by token or OAuth cookie

        def write_error(self, status_code, **kwargs):
            from html import escape

            self.set_header("Content-Type", "text/html; charset=utf-8")
            if status_code == 403:  # the same page as the hub's for one never given the app
                from hubml.extensions.common.urls import hub_public_url

                from .refusal import refusal_html

                body = refusal_html(owner, app_name, hub_public_url() + "/hub/home")
            else:
                body = f"<h1>{status_code}</h1><p>{escape(self._reason)}</p>"
            title = (
                f"{app_name}: not shared with you"
                if status_code == 403
                else f"{app_name}: {status_code}"
            )
            self.finish(f"<!doctype html><title>{escape(title)}</title>{body}")

        @web.authenticated
        async def get(self, path):
            usage.touch(self.current_user["name"])
            query = f"?{self.request.query}" if self.request.query else ""
            await forward(self, socket_path, f"/{path}{query}")

        post = put = patch = delete = head = options = get

    class CallbackHandler(HubOAuthCallbackHandler):
        def initialize(self):
            self.hub_auth = hub_auth

    return web.Application(
        [
            (prefix + "oauth_callback", CallbackHandler),
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
            (prefix + "(.*)", AppHandler),
        ],
        cookie_secret=os.urandom(32),
        hub_auth=hub_auth,
        max_body_size=1024**3,
    )


class Runtime:
    """The apps service's runtime endpoints for this app (``HUBML_APP_RUNTIME_URL``), called with
    the server's own hub token (its owner's identity): the bundle comes from there, and the log
    tail and the visitors go back there."""

    LOG_TAIL = 16 * 1024

    def __init__(self, url: str, bundle: Path):
        import requests

        self.url, self.bundle = url, bundle
        self.session = requests.Session()
        self.session.headers["Authorization"] = (
            f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"
        )

    def fetch(self) -> None:
        r = self.session.get(self.url + "bundle", timeout=60)
        if r.status_code != 200:
            raise RuntimeError(
                f"the apps service did not give this app's bundle: {r.status_code} {r.text[:300]}"
            )
        self.bundle.mkdir(parents=True, exist_ok=True)
        for name, text in r.json()["files"].items():
            if name in ("app.py", "requirements.txt"):
                (self.bundle / name).write_text(text, encoding="utf-8")

    def report(self) -> None:
        """Send usage.json and the log's tail; never fails the app."""
        try:
            usage = json.loads((self.bundle / "usage.json").read_text())
        except (OSError, ValueError):
            usage = {}
        try:
            with open(self.bundle / "app.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - self.LOG_TAIL))
                tail = f.read().decode(errors="replace")
        except OSError:
            tail = ""
        try:
            self.session.put(self.url + "report", json={"usage": usage, "log": tail}, timeout=10)
        except Exception as e:  # the service restarting: the next report brings it up to date
            print(f"[hubml-apps] could not report to the apps service: {e}", flush=True)


def main() -> int:
    from .serve import private_folder

    work = private_folder()  # 0700: this account's alone
    bundle = work / "bundle"
    runtime = Runtime(os.environ["HUBML_APP_RUNTIME_URL"], bundle)
    runtime.fetch()
    # our output is the app's log, which the owner reads through the apps service
    log_fd = os.open(bundle / "app.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"
    )
    # Gradio's uploads and caches in this app's own folder, not in a /tmp folder others share
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    owner = os.environ.get("JUPYTERHUB_USER", "")
    app_name = os.environ.get("HUBML_APP_NAME", "app")
    host, port = (
        os.environ["JUPYTERHUB_SERVICE_URL"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    )
    host = "" if host in ("0.0.0.0", "") else host  # a pod listens on all its interfaces
    print(f"[hubml-apps] starting {app_name} of {owner} at {prefix}", flush=True)
    os.chdir(bundle)
    sys.path.insert(0, str(bundle))
    usage = Usage(bundle / "usage.json")
    try:
        from .serve import serve

        gradio = serve(load_demo(bundle / "app.py"), prefix, work / "socket")
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        runtime.report()  # the owner reads why through the apps service
        shutil.rmtree(work, ignore_errors=True)
        raise
    from tornado import ioloop

    usage.flush()
    app = make_app(prefix, gradio.path, owner, app_name, usage)
    app.listen(int(port), address=host, xheaders=True)
    print(
        f"[hubml-apps] {app_name} is up: Gradio on {gradio.path}, front door on :{port}", flush=True
    )
    loop = ioloop.IOLoop.current()
    runtime.report()
    usage.on_flush = lambda: loop.run_in_executor(None, runtime.report)
    ioloop.PeriodicCallback(
        lambda: loop.run_in_executor(None, runtime.report), USAGE_EVERY_S * 1000
    ).start()
    # the spawner stops us with SIGTERM: end the loop so the last visitors are written
    signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
    try:
        loop.start()
    finally:
        usage.on_flush = None
        usage.flush()
        runtime.report()
        gradio.close()
        shutil.rmtree(work, ignore_errors=True)  # fetched again at the next start
    return 0


if __name__ == "__main__":
    sys.exit(main())
