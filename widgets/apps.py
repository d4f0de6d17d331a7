"""Gradio apps from the notebook: try a demo inline, publish it, share it, manage it.

``try_app(fn_or_demo_or_model_uri)`` shows a demo inside the notebook, served through your own
server (owner-only, no public tunnel). ``AppsPanel(source="app.py")`` (or ``model="models:/name@alias"``)
publishes it through the apps hub service as an app that keeps running when the notebook's
kernel and server stop, shares it with users, groups or as an expiring link, and lists your
apps with their status, link, access and logs.
"""

from __future__ import annotations

import contextlib
import html
import os
import threading

import ipywidgets as w


class AppsAPIError(RuntimeError):
    def __init__(self, status: int, message: str, log_tail: str = ""):
        super().__init__(message)
        self.status, self.log_tail = status, log_tail


class AppsClient:
    def __init__(self, base_url: str | None = None, token: str | None = None):
        base = (base_url or os.environ.get("HUBML_APPS_URL", "")).rstrip("/")
        self.base = base + "/api/"
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def request(self, method: str, path: str, body=None) -> dict:
        import requests

        from ._http import call

        if not self.base.startswith("http"):
            raise AppsAPIError(
                0, "no apps service is configured for this server (HUBML_APPS_URL is not set)"
            )
        try:
            status, data, reason = call(
                method, self.base + path, self.token, body=body, timeout=180
            )
        except requests.RequestException as e:
            raise AppsAPIError(0, f"the apps service did not answer ({type(e).__name__})") from None
        if status >= 400:
            raise AppsAPIError(status, data.get("message", reason), data.get("log_tail", ""))
        return data


def bundle_files(source: str, home: str | None = None) -> dict:
    """``app.py`` and the ``requirements.txt`` beside it, as the publish request carries them
    (this kernel runs as their owner and reads them; the apps service never opens a home)."""
    home = home or os.environ.get("HOME", ".")
    path = os.path.join(home, source)
    with open(path, encoding="utf-8") as f:
        files = {"app.py": f.read()}
    requirements = os.path.join(os.path.dirname(path), "requirements.txt")
    if os.path.isfile(requirements):
        with open(requirements, encoding="utf-8") as f:
            files["requirements.txt"] = f.read()
    return files


# -- try inline ---------------------------------------------------------------------------------


def make_demo(target, inputs="text", outputs="text"):
    """A Gradio app from a function, an existing Blocks/Interface, or ``models:/<name>@<alias>``."""
    import gradio as gr

    if isinstance(target, gr.Blocks):
        return target
    if isinstance(target, str):
        from hubml.extensions.apps.modelapp import MODEL_URI, model_app

        if not MODEL_URI.match(target):
            raise ValueError(f"{target!r} is not a model reference; use 'models:/<name>@<alias>'")
        namespace: dict = {}
        exec(compile(model_app(target), target, "exec"), namespace)
        return namespace["demo"]
    if callable(target):
        return gr.Interface(fn=target, inputs=inputs, outputs=outputs, flagging_mode="never")
    raise TypeError(
        "try_app takes a function, a Gradio Blocks/Interface, or 'models:/<name>@<alias>'"
    )


def try_app(target, inputs="text", outputs="text", height: int = 520):
    """Show ``target`` as a Gradio demo in the notebook, served through your own server.

    Returns the demo (call ``.close()`` to stop it). Nobody else can open it: it goes through
    your server's authentication, not a public ``share=True`` tunnel.
    """
    import secrets

    from IPython.display import IFrame, display

    from hubml.extensions.apps.serve import serve
    from hubml.extensions.bridge import inline_apps_dir

    demo = make_demo(target, inputs, outputs)
    app_id = secrets.token_urlsafe(16)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    root = f"{prefix}hubml/apps/{app_id}"
    # on a socket in a private folder of this account's, reachable only through the server,
    # which finds it by the demo's id in its runtime folder
    server = serve(demo, root)
    registration = os.path.join(inline_apps_dir(), app_id)
    with open(os.open(registration, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(server.path)
    demo.hubml_url = root + "/"
    demo.hubml_server = server
    _closing = demo.close

    def close(*args, **kwargs):
        import shutil

        server.close()
        shutil.rmtree(server.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(registration)
        return _closing(*args, **kwargs)

    demo.close = close
    display(IFrame(src=root + "/", width="100%", height=height))
    return demo


# -- the panel ----------------------------------------------------------------------------------


def apps_html(listing: dict) -> str:
    def row(app, mine: bool) -> str:
        access = app.get("access") or {}
        who = ", ".join(
            [*access.get("users", []), *[f"group {g}" for g in access.get("groups", [])]]
        )
        links = [s for s in app.get("shares", []) if s["kind"] == "link"]
        if links:
            who = (who + ", " if who else "") + f"{len(links)} link(s)"
        last = (
            f"{html.escape(app['last_used_by'])} at {html.escape(app['last_used_at'][:16].replace('T', ' '))}"
            if app.get("last_used_by")
            else "–"
        )
        return (
            f"<tr class='hubml-app-row' data-app='{html.escape(app['name'])}' data-status='{html.escape(app['status'])}'>"
            f"<td><a class='hubml-app-link' href='{html.escape(app['url'])}' target='_blank'>"
            f"{html.escape(app['name'])}</a></td><td>{html.escape(app['owner'])}</td><td>{html.escape(app['status'])}"
            + (
                f"<br><small class='hubml-app-stopped-reason'>{html.escape(app['stopped_reason'])}</small>"
                if mine and app.get("status") != "running" and app.get("stopped_reason")
                else ""
            )
            + "</td>"
            f"<td>{html.escape(who or ('only you' if mine else ''))}</td><td>{last}</td></tr>"
        )

    rows = [row(a, True) for a in listing.get("apps", [])] + [
        row(a, False) for a in listing.get("shared_with_me", [])
    ]
    if not rows:
        return "<i>No apps yet.</i>"
    return (
        "<table class='hubml-apps' style='border-collapse:collapse'><tr><th>app</th><th>owner</th><th>status</th>"
        "<th>access</th><th>last used</th></tr>" + "".join(rows) + "</table>"
    )


# copies the URL next to it; the clipboard API needs a secure context (https, or localhost), so
# elsewhere the selected text is copied the old way
_COPY_JS = (
    "const i=this.parentElement.querySelector('input');i.select();"
    "(navigator.clipboard?navigator.clipboard.writeText(i.value)"
    ":Promise.resolve(document.execCommand('copy')))"
    ".then(()=>{this.textContent='Copied';setTimeout(()=>{this.textContent='Copy'},2000)})"
)


def copyable(url: str, css_class: str) -> str:
    """A URL people pass on: the whole absolute address, selectable, with a Copy button."""
    value = html.escape(url, quote=True)
    return (
        f"<span class='{css_class}' style='display:inline-flex;gap:4px;align-items:center'>"
        f"<input readonly value='{value}' size='{min(max(len(url), 20), 70)}' "
        "style='font-family:monospace;font-size:12px' onclick='this.select()'>"
        f"<button class='hubml-copy' type='button' onclick=\"{_COPY_JS}\">Copy</button>"
        f"<a href='{value}' target='_blank'>open</a></span>"
    )


class AppsPanel(w.VBox):
    """Publish this notebook's demo as an app and share it."""

    def __init__(
        self,
        source: str | None = None,
        model: str | None = None,
        name: str = "",
        client: AppsClient | None = None,
    ):
        self.client = client or AppsClient()
        self.name = w.Text(value=name, description="App name", placeholder="e.g. churn-demo")
        self.source = w.Text(
            value=source or "",
            description="app.py",
            placeholder="path in your home, defines `demo`",
        )
        self.model = w.Text(
            value=model or "", description="or model", placeholder="models:/<name>@<alias>"
        )
        self.profile = w.Text(value="", description="Profile", placeholder="default: smallest CPU")
        self.try_button = w.Button(description="Try", icon="play")
        self.try_output = w.Output()
        self.publish_button = w.Button(description="Publish", button_style="primary", icon="rocket")
        self.status = w.HTML("")
        # the app's own address, shown as long as the app exists (also after sharing)
        self.app_link = w.HTML("")
        self.share_users = w.Text(description="Users", placeholder="bob, carol")
        self.share_groups = w.Text(description="Groups", placeholder="reviewers")
        self.expiry_h = w.BoundedFloatText(
            value=0,
            min=0,
            max=24 * 365,
            description="Expires (h)",
            tooltip="0: no expiry (a link always expires, default 24 h)",
        )
        self.share_button = w.Button(description="Share", icon="share")
        self.shares = w.VBox([])
        self.listing = w.HTML("")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.stop_button = w.Button(description="Stop", icon="stop")
        self.delete_button = w.Button(description="Delete", button_style="danger", icon="trash")
        self.logs_button = w.Button(description="Logs", icon="file-text")
        self.logs = w.HTML("")
        self.try_button.on_click(lambda _: self.try_here())
        self.publish_button.on_click(lambda _: self.publish())
        self.share_button.on_click(lambda _: self.share())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.stop_button.on_click(lambda _: self._act("POST", "stop"))
        self.delete_button.on_click(lambda _: self._ask_delete())
        self.confirm = w.HBox([])
        self.logs_button.on_click(lambda _: self.show_logs())
        super().__init__(
            [
                w.HTML(
                    "<b>Publish a Gradio app</b> <small>(runs on the hub behind its login; keeps running when this "
                    "notebook's kernel and server stop)</small>"
                ),
                self.name,
                self.source,
                self.model,
                self.profile,
                w.HBox([self.try_button, self.publish_button]),
                self.status,
                self.app_link,
                self.try_output,
                w.HTML(
                    "<b>Share</b> <small>(users or groups by name; neither: a link anyone signed in can accept)</small>"
                ),
                w.HBox([self.share_users, self.share_groups, self.expiry_h]),
                self.share_button,
                self.shares,
                w.HTML("<b>Apps</b>"),
                w.HBox(
                    [self.refresh_button, self.stop_button, self.delete_button, self.logs_button]
                ),
                self.confirm,
                self.listing,
                self.logs,
            ]
        )
        self.add_class("hubml-apps-panel")
        threading.Thread(target=self.refresh, daemon=True).start()

    def _say(self, message: str, kind: str = "info", extra: str = "") -> None:
        colour = {"info": "#57606a", "error": "#82071e", "ok": "#116329"}[kind]
        pre = (
            f"<pre style='max-height:14em;overflow:auto'>{html.escape(extra)}</pre>"
            if extra
            else ""
        )
        self.status.value = f"<span class='hubml-status-{kind}' style='color:{colour}'>{html.escape(message)}</span>{pre}"

    def try_here(self):
        """Show the app inline (through your own server) before publishing it."""
        import runpy

        self.try_output.clear_output()
        try:
            if self.model.value.strip():
                target = self.model.value.strip()
            else:
                home = os.environ.get("HOME", ".")
                path = os.path.join(home, self.source.value.strip())
                target = runpy.run_path(path, run_name="hubml_try").get("demo")
                if target is None:
                    raise ValueError(f"{self.source.value.strip()} does not define `demo`")
            with self.try_output:
                demo = try_app(target)
            self._say("Showing it here (only you can see this); Publish to share it.", "ok")
            return demo
        except Exception as e:
            self._say(f"Could not try it: {e}", "error")
            return None

    def publish(self) -> dict | None:
        source = self.source.value.strip() or None
        body = {
            "name": self.name.value.strip(),
            "source": source,
            "model": self.model.value.strip() or None,
        }
        if self.profile.value.strip():
            body["profile"] = self.profile.value.strip()
        if source:
            try:
                body["files"] = bundle_files(source)
            except OSError as e:
                self._say(f"Could not read {source}: {e.strerror or e}", "error")
                return None
        self.publish_button.disabled = True
        self._say("Publishing… (starting the app on the hub)")
        try:
            app = self.client.request("POST", "apps", body)
        except AppsAPIError as e:
            self._say(str(e), "error", e.log_tail)
            return None
        finally:
            self.publish_button.disabled = False
        link = app["url"]
        self.status.value = (
            f"<span class='hubml-status-ok' style='color:#116329'>Published: "
            f"<a class='hubml-published-link' href='{html.escape(link)}' target='_blank'>{html.escape(link)}</a>"
            "</span>"
        )
        self.refresh()
        return app

    def share(self) -> dict | None:
        users = [u.strip() for u in self.share_users.value.split(",") if u.strip()]
        groups = [g.strip() for g in self.share_groups.value.split(",") if g.strip()]
        body = {
            "users": users,
            "groups": groups,
            "expires_in_s": int(self.expiry_h.value * 3600) if self.expiry_h.value else None,
        }
        try:
            result = self.client.request("POST", f"apps/{self.name.value.strip()}/shares", body)
        except AppsAPIError as e:
            self._say(str(e), "error")
            return None
        whom = [s["target"] for s in result["shares"] if s["kind"] != "link"]
        links = [s for s in result["shares"] if s["kind"] == "link"]
        said = f"Shared with {', '.join(whom)}: they open the app's address below." if whom else ""
        if links:
            said += " A link: whoever signs in and opens it before it expires gets access."
        self._say(said.strip(), "ok")
        self.refresh()
        return result

    def revoke(self, share_id: int) -> None:
        try:
            self.client.request("DELETE", f"apps/{self.name.value.strip()}/shares/{share_id}")
            self._say("Access revoked.", "ok")
        except AppsAPIError as e:
            self._say(str(e), "error")
        self.refresh()

    def _act(self, method: str, action: str | None) -> None:
        name = self.name.value.strip()
        try:
            self.client.request(method, f"apps/{name}" + (f"/{action}" if action else ""))
            self._say(f"{name}: {'stopped' if action == 'stop' else 'deleted'}.", "ok")
        except AppsAPIError as e:
            self._say(str(e), "error")
        self.refresh()

    def _ask_delete(self) -> None:
        name = self.name.value.strip()
        if not name:
            self._say("App name: type the name of the app to delete.", "error")
            return
        yes = w.Button(description=f"Delete {name}", button_style="danger")
        yes.add_class("hubml-confirm-delete")
        no = w.Button(description="Keep it")

        def answer(delete: bool) -> None:
            self.confirm.children = []
            if delete:
                self._act("DELETE", None)

        yes.on_click(lambda _: answer(True))
        no.on_click(lambda _: answer(False))
        self.confirm.children = [
            w.HTML(
                f"<span style='color:#82071e'>Delete <b>{html.escape(name)}</b>? Its server stops, "
                "and its shares, links and logs go; this cannot be undone.</span>"
            ),
            yes,
            no,
        ]

    def show_logs(self) -> None:
        import requests

        try:
            resp = requests.get(
                f"{self.client.base}apps/{self.name.value.strip()}/logs",
                timeout=30,
                headers={"Authorization": f"token {self.client.token}"},
            )
            self.logs.value = (
                f"<pre style='max-height:20em;overflow:auto'>{html.escape(resp.text[-8000:])}</pre>"
            )
        except requests.RequestException as e:
            self.logs.value = html.escape(f"could not read the logs: {e}")

    def refresh(self) -> None:
        try:
            listing = self.client.request("GET", "apps")
        except AppsAPIError as e:
            self.listing.value = f"<span style='color:#82071e'>{html.escape(str(e))}</span>"
            return
        self.listing.value = apps_html(listing)
        mine = next(
            (a for a in listing.get("apps", []) if a["name"] == self.name.value.strip()), None
        )
        self.app_link.value = (
            f"<span>App address: </span>{copyable(mine['url'], 'hubml-app-url')}" if mine else ""
        )
        rows = []
        for s in (mine or {}).get("shares", []):
            expiry = (
                f" until {s['expires_at'][:16].replace('T', ' ')} UTC"
                if s.get("expires_at")
                else ""
            )
            if s["kind"] == "link":
                label = f"Link{html.escape(expiry)}: " + copyable(
                    s["url"] or "", "hubml-share-link"
                )
            else:
                label = f"{html.escape(s['kind'])} <b>{html.escape(s['target'])}</b>{html.escape(expiry)}"
            button = w.Button(description="Revoke", layout=w.Layout(width="90px"))
            button.add_class("hubml-revoke")
            button.on_click(lambda _, sid=s["id"]: self.revoke(sid))
            rows.append(w.HBox([w.HTML(label), button]))
        self.shares.children = rows
