"""Start a real JupyterHub (with the real configurable-http-proxy) for tests and benchmarks.

The hub runs as a child process on free loopback ports with its own data dir, and is stopped
with SIGTERM (which stops its single-user servers and proxy) when the test is done.

Users' servers and services have origins of their own (``http://alice.localhost:<port>``,
``http://jobs--service.localhost:<port>``): :meth:`RunningHub.at` gives the public URL of a
path, and :func:`resolve_localhost` lets this process resolve ``*.localhost`` the way browsers
do (Python's resolver does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_real_getaddrinfo = socket.getaddrinfo


def resolve_localhost() -> None:
    """Resolve ``*.localhost`` to loopback in this process, as browsers do (RFC 6761)."""

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return _real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


class RunningHub:
    def __init__(self, proc, url, token, data_dir, log_path, password, port):
        self.proc, self.url, self.token = proc, url, token
        self.data_dir, self.log_path, self.password, self.port = data_dir, log_path, password, port
        self.session = requests.Session()
        self.passwords: dict[str, str] = {}

    # -- where things are ----------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """What people open: http://localhost:<port>/ (the hub's own origin)."""
        return f"http://localhost:{self.port}/"

    def at(self, path: str) -> str:
        """The public URL of a hub path: ``/user/alice/...`` on alice's origin, ``/services/jobs/...``
        on the jobs service's, anything else on the hub's. An absolute URL is returned as it is."""
        if path.startswith(("http://", "https://")):
            return path
        path = "/" + path.lstrip("/")
        m = re.match(r"^/user/([^/]+)(/|$)", path)
        if m:
            from urllib.parse import unquote

            from jupyterhub.utils import subdomain_hook_idna

            return f"http://{subdomain_hook_idna(unquote(m.group(1)), 'localhost', 'user')}:{self.port}{path}"
        m = re.match(r"^/services/([^/]+)(/|$)", path)
        if m:
            return f"http://{m.group(1)}--service.localhost:{self.port}{path}"
        return f"http://localhost:{self.port}{path}"

    def user_url(self, user: str, server: str = "") -> str:
        return self.at(f"/user/{quote(user)}/" + (f"{server}/" if server else ""))

    def service_url(self, name: str) -> str:
        return self.at(f"/services/{name}/")

    # -- people --------------------------------------------------------------------------------

    def sign_up(self, name: str, password: str | None = None, approve: bool = True) -> str:
        """Sign ``name`` up with a password of their own at /hub/signup (NativeAuthenticator), and
        have the admin approve them at /hub/authorize, as people do; returns the password."""
        password = password or "pw-" + secrets.token_hex(8)
        # (by the hub's loopback address: Python's cookie jar mangles the host name "localhost")
        s = self.browser_session()
        form = s.get(f"{self.url}hub/signup", timeout=30)
        r = s.post(
            f"{self.url}hub/signup",
            timeout=30,
            data={
                "username": name,
                "signup_password": password,
                "signup_password_confirmation": password,
                "_xsrf": _xsrf(form.text),
            },
        )
        assert r.status_code == 200 and ("sent to the admin" in r.text or "successful" in r.text), (
            r.text[-2000:]
        )
        if approve:
            self.approve(name)
        self.passwords[name] = password
        return password

    def browser_session(self) -> requests.Session:
        """A requests session that keeps the hub's cookies like a browser on its origin: the hub
        sets its session id for the whole domain (subdomain mode), which Python's cookie jar
        refuses for the loopback address this session talks to."""
        s = requests.Session()

        def keep_session_id(resp, *args, **kwargs):
            for raw in resp.raw.headers.getlist("Set-Cookie"):
                name, _, rest = raw.partition("=")
                if name == "jupyterhub-session-id":
                    s.cookies.set(name, rest.split(";", 1)[0], domain="127.0.0.1", path="/")

        s.hooks["response"].append(keep_session_id)
        return s

    def admin_session(self) -> requests.Session:
        s = self.browser_session()
        password = (self.data_dir / "admin-password").read_text().strip()
        form = s.get(f"{self.url}hub/login", timeout=30)
        r = s.post(
            f"{self.url}hub/login",
            data={"username": "admin", "password": password, "_xsrf": _xsrf(form.text)},
            timeout=30,
        )
        assert r.status_code == 200 and "/hub/login" not in r.url, r.text[-1000:]
        return s

    def approve(self, name: str) -> None:
        s = self.admin_session()
        page = s.get(f"{self.url}hub/authorize/{quote(name)}", timeout=30)
        assert page.status_code == 200, page.text[-1000:]
        r = s.post(
            f"{self.url}hub/authorize/{quote(name)}", data={"_xsrf": _xsrf(page.text)}, timeout=30
        )
        assert r.status_code == 200, r.text[-1000:]

    def api(self, method, path, token=None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"token {token or self.token}")
        return self.session.request(
            method, f"{self.url}hub/api/{path.lstrip('/')}", headers=headers, timeout=90, **kw
        )

    def ensure_user(self, name: str) -> None:
        r = self.api("POST", f"users/{name}")
        assert r.status_code in (201, 409), r.text

    def user_token(self, name: str) -> str:
        self.ensure_user(name)
        r = self.api("POST", f"users/{name}/tokens", json={"note": "test"})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]

    def spawn(self, user: str, options: dict | None, token=None, wait=True, timeout=90):
        """POST the spawn; with ``wait``, follow until the server is ready or has failed."""
        r = self.api("POST", f"users/{user}/server", token=token, json=options or {})
        if r.status_code == 202 and wait:
            self.wait_ready(user, timeout=timeout)
        return r

    def wait_ready(self, user: str, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{user}").json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return server
            if not server or not server.get("pending"):
                raise AssertionError(f"{user}'s server is neither ready nor pending: {model}")
            time.sleep(0.2)
        raise TimeoutError(f"{user}'s server not ready in {timeout}s")

    def stop_server(self, user: str) -> None:
        r = self.api("DELETE", f"users/{user}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "" not in (self.api("GET", f"users/{user}").json().get("servers") or {}):
                return  # the default server is gone (named ones, such as apps, may stay)
            time.sleep(0.2)
        raise TimeoutError(f"{user}'s server did not stop")

    def server_state(self, user: str) -> dict:
        r = self.api("GET", f"users/{user}", params={"include_stopped_servers": "1"})
        return r.json()["servers"][""].get("state") or {}

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, timeout=20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.session.close()

    def stop_leaving_nothing(self, user: str, servers: tuple[str, ...] = ("",)) -> None:
        """Stop a hub that keeps servers through restarts (``hub.stop_servers_on_exit: false``):
        ``user``'s ``servers`` first, then the hub, then the proxy it leaves running."""
        if self.proc.poll() is None:
            for server in servers:
                self.api(
                    "DELETE", f"users/{user}/servers/{server}" if server else f"users/{user}/server"
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                s.get("ready") or s.get("pending")
                for s in (self.api("GET", f"users/{user}").json().get("servers") or {}).values()
            ):
                time.sleep(0.2)
        pid_file = Path(self.data_dir) / "proxy.pid"
        proxy = int(pid_file.read_text()) if pid_file.exists() else None
        self.stop()
        if proxy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proxy, signal.SIGTERM)


def start_hub(
    data_dir: Path,
    settings: dict | None = None,
    *,
    extra_env: dict | None = None,
    config: Path | None = None,
    timeout: float = 45,
    port: int | None = None,
    log_name: str = "hub.log",
) -> RunningHub:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token = secrets.token_hex(24)
    password = "test-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "HUBML_PORT": str(port),
        "HUBML_DATA_DIR": str(data_dir),
        "HUBML_ADMIN_TOKEN": token,
        "HUBML_SHARED_PASSWORD": password,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("HUBML_SETTINGS", None)
    # the MLflow (~7 s, 500 MB) and jobs services: only tests that ask for them get them
    settings = dict(settings or {})
    settings.setdefault("tracking", {"enabled": False})
    settings.setdefault("jobs", {"enabled": False})
    settings.setdefault("apps", {"enabled": False})
    # the feature catalog (Feast, ~3 s of imports and the example project's writing)
    settings.setdefault("features", {"enabled": False})
    # a test's hub takes its servers with it when it stops (the default keeps them running
    # through restarts: tests/integration/test_hub_restart.py)
    settings["hub"] = {"stop_servers_on_exit": True, **settings.get("hub", {})}
    if settings is not None:
        path = data_dir / "settings.yaml"
        path.write_text(yaml.safe_dump(settings))
        env["HUBML_SETTINGS"] = str(path)
    log_path = data_dir / log_name
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterhub",
                "-f",
                str(config or ROOT / "jupyterhub_config.py"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub = RunningHub(proc, f"http://127.0.0.1:{port}/", token, data_dir, log_path, password, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited with {proc.returncode}:\n{hub.log()[-4000:]}")
        try:
            if hub.api("GET", "").status_code == 200:
                return hub
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    hub.stop()
    raise TimeoutError(f"hub did not answer in {timeout}s:\n{hub.log()[-4000:]}")


def dump(obj) -> str:
    return json.dumps(obj, indent=1)


def _xsrf(html: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    assert m, "no _xsrf token on the page"
    return m.group(1)
