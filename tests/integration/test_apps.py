"""Gradio apps published under the hub: access, sharing, survival, crashes, models, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.kernelclient import ServerKernel

pytestmark = pytest.mark.integration

GREETER = (
    "import gradio as gr\n\n"
    "def greet(name):\n"
    "    return f'Hello {name}!'\n\n"
    "demo = gr.Interface(greet, 'text', 'text')\n"
)


class Apps:
    def __init__(self, hub, token):
        self.hub, self.base = hub, hub.at("/services/apps/api/")
        self.headers = {"Authorization": f"token {token}"}

    def __call__(self, method, path, **kw):
        return requests.request(method, self.base + path, headers=self.headers, timeout=180, **kw)


def token(hub, user, scopes=None):
    hub.ensure_user(user)
    r = hub.api("POST", f"users/{user}/tokens", json={"scopes": scopes} if scopes else {})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    hub = start_hub(
        tmp_path_factory.mktemp("apps"), {"apps": {"enabled": True}, "tracking": {"enabled": True}}
    )
    try:
        deadline = time.monotonic() + 60
        while Apps(hub, hub.token)("GET", "apps").status_code != 200:
            assert time.monotonic() < deadline, "apps service did not answer"
            time.sleep(0.3)
        wait_for_mlflow(hub, hub.token)
        yield hub
    finally:
        hub.stop()


def app_get(hub, path, tok, **kw):
    return requests.get(hub.at(path), headers={"Authorization": f"token {tok}"}, timeout=30, **kw)


def test_publish_from_a_notebook_share_revoke_and_survive_the_owner_server(hub):
    from gradio_client import Client

    alice = token(hub, "alice")
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub, "alice", alice, "demo.ipynb")
    try:
        # the app.py is alice's, in her home: the apps service reads it from her running server
        out = kernel.execute(
            f"open('greeter.py', 'w').write({GREETER!r})\n"
            "from hubml.widgets.apps import AppsClient\n"
            "app = AppsClient().request('POST', 'apps', {'name': 'greeter', 'source': 'greeter.py'})\n"
            "print('URL', app['url'], app['status'])"
        )
    finally:
        kernel.close()
    url = "/user/alice/app-greeter/"
    assert f"URL {hub.at(url)} running" in out, out  # the app's own origin: alice's, not the hub's
    owner_api = Apps(hub, alice)
    assert app_get(hub, url, alice).status_code == 200

    bob_before = token(hub, "bob", ["inherit"])
    carol = token(hub, "carol", ["inherit"])
    r = app_get(hub, url, bob_before)
    assert r.status_code == 403 and "has not been shared with you" in r.text
    r = owner_api("POST", "apps/greeter/shares", json={"users": ["bob"]})
    assert r.status_code == 201, r.text
    share_id = r.json()["shares"][0]["id"]
    bob = token(
        hub, "bob", ["access:servers!server=alice/app-greeter"]
    )  # what bob's browser gets by OAuth
    assert app_get(hub, url, bob).status_code == 200
    client = Client(hub.at(url), headers={"Authorization": f"token {bob}"}, verbose=False)
    assert client.predict("Bob", api_name="/greet") == "Hello Bob!"
    assert app_get(hub, url, carol).status_code == 403
    model = owner_api("GET", "apps/greeter").json()
    assert model["access"]["users"] == ["bob"] and model["last_used_by"] in ("bob", "alice")
    listing = Apps(hub, token(hub, "bob"))("GET", "apps").json()
    assert [a["name"] for a in listing["shared_with_me"]] == ["greeter"]
    # the gallery: bob finds the app shared with him, with a link to it; carol finds nothing
    gallery = app_get(hub, "/services/apps/", bob_before)
    assert gallery.status_code == 200, gallery.text
    shared_part = gallery.text.split("id='shared'", 1)[1].split("id='mine'", 1)[0]
    assert "data-app='greeter'" in shared_part and f"href='{hub.at(url)}'" in shared_part
    carols = app_get(hub, "/services/apps/", carol)
    assert carols.status_code == 200 and "data-app='greeter'" not in carols.text

    # no Jupyter API on an app server, for the viewer or the owner
    for path in (
        "api/contents",
        "api/kernels",
        "api/terminals",
        "api/sessions",
        "terminals/websocket/1",
    ):
        for tok in (alice, bob):
            assert app_get(hub, url + path, tok).status_code == 404, path

    # the owner's kernel and server go away; the app does not
    hub.stop_server("alice")
    assert client.predict("again", api_name="/greet") == "Hello again!"

    r = owner_api("DELETE", f"apps/greeter/shares/{share_id}")
    assert r.status_code == 204
    time.sleep(1.2)  # the app's front door re-asks the hub about a token at most every second
    assert app_get(hub, url, bob).status_code == 403
    logs = owner_api("GET", "apps/greeter/logs")
    assert logs.status_code == 200 and "greeter is up" in logs.text
    assert owner_api("DELETE", "apps/greeter").status_code == 204
    # gone: the hub answers for the app's URL (sending the browser to its own pages), not the app
    gone = app_get(hub, url, alice, allow_redirects=False)
    assert (
        gone.status_code != 200
        and "greeter" not in gone.text.lower()
        or gone.status_code in (302, 303)
    ), gone.status_code


def _wait_named_ready(hub, user, server, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.api("GET", f"users/{user}").json()["servers"].get(server)
        if model and model.get("ready"):
            return model
        assert model and model.get("pending"), f"{server} is neither ready nor pending: {model}"
        time.sleep(0.2)
    raise TimeoutError(f"{server} not ready in {timeout}s")


def test_an_apps_server_started_by_the_hub_itself_is_the_app_never_a_jupyterlab(hub):
    """The hub's "Launch Server app-<name>" (or REST without options) starts the app's launcher:
    bob, whom the app is shared with, never gets alice's files or kernels through it."""
    alice = token(hub, "alice")
    api = Apps(hub, alice)
    r = api(
        "POST", "apps", json={"name": "relaunch", "source": "app.py", "files": {"app.py": GREETER}}
    )
    assert r.status_code == 201, r.text
    hub.ensure_user("bob")
    r = api("POST", "apps/relaunch/shares", json={"users": ["bob"]})
    assert r.status_code == 201, r.text
    bob = token(hub, "bob", ["access:servers!server=alice/app-relaunch"])
    url = "/user/alice/app-relaunch/"
    try:
        for options in ({}, {"profile": "cpu-small"}):
            r = hub.api("DELETE", "users/alice/servers/app-relaunch", token=alice)
            assert r.status_code in (202, 204), r.text
            deadline = time.monotonic() + 30
            while "app-relaunch" in hub.api("GET", "users/alice").json()["servers"]:
                assert time.monotonic() < deadline, "the app's server did not stop"
                time.sleep(0.2)
            r = hub.api("POST", "users/alice/servers/app-relaunch", token=alice, json=options)
            assert r.status_code in (201, 202), r.text
            _wait_named_ready(hub, "alice", "app-relaunch")
            page = app_get(hub, url, bob)
            assert page.status_code == 200 and "gradio" in page.text.lower(), options
            for path in ("api/contents", "api/kernels", "lab", "api/terminals"):
                for tok in (alice, bob):
                    assert app_get(hub, url + path, tok).status_code == 404, (options, path)
    finally:
        api("DELETE", "apps/relaunch")


def test_an_app_that_crashes_at_start_leaves_nothing_behind(hub):
    alice = token(hub, "alice")
    api = Apps(hub, alice)
    broken = {"app.py": "import gradio as gr\nraise RuntimeError('weights.bin is missing')\n"}
    r = api("POST", "apps", json={"name": "broken", "source": "broken.py", "files": broken})
    assert r.status_code == 422, r.text
    assert "crashed while starting" in r.json()["message"]
    assert "RuntimeError: weights.bin is missing" in r.json()["log_tail"]
    assert api("GET", "apps/broken").status_code == 404
    servers = hub.api("GET", "users/alice").json()["servers"]
    assert "app-broken" not in servers
    routes = hub.api("GET", "proxy").json()
    assert not any("app-broken" in route for route in routes)
    assert not (hub.data_dir / "apps" / "alice" / "broken").exists()
    tokens = hub.api("GET", "users/alice/tokens").json()["api_tokens"]
    assert not [t for t in tokens if "app-broken" in (t.get("note") or "")], tokens


def test_bad_requests_are_refused_with_a_clear_message(hub):
    alice = token(hub, "alice")
    ok = {"app.py": GREETER}
    api = Apps(hub, alice)
    cases = [
        (
            {"name": "Bad Name!", "source": "ok.py", "files": ok},
            400,
            "name: 1–26 lowercase letters",
        ),
        ({"name": "a--b", "source": "ok.py", "files": ok}, 400, "single '-'"),
        ({"name": "x" * 27, "source": "ok.py", "files": ok}, 400, "name: 1–26"),
        (
            {"name": "x", "source": "ok.py", "files": ok, "profile": "gpu-giant"},
            400,
            "Unknown profile 'gpu-giant'",
        ),
        ({"name": "x", "source": "notes.txt", "files": ok}, 400, "is not a .py file"),
        ({"name": "x", "source": "../bob/app.py"}, 400, "must be a path inside your home"),
        ({"name": "x", "source": "ok.py"}, 409, "alice's server is not running"),
        (
            {"name": "x", "source": "ok.py", "files": {"app.py": 3}},
            400,
            "files: app.py must be text",
        ),
        (
            {"name": "x", "source": "ok.py", "files": {"run.sh": "x"}},
            400,
            "files: an object with app.py",
        ),
        (
            {"name": "x", "source": "ok.py", "files": {"app.py": "x" * (1024**2 + 1)}},
            413,
            "app.py is over",
        ),
        ({"name": "x"}, 400, "exactly one of source"),
        ({"name": "x", "source": "ok.py", "model": "models:/m@a"}, 400, "exactly one of source"),
        ({"name": "x", "model": "runs:/abc/model"}, 400, "not a model reference"),
        (
            {"name": "x", "model": "models:/no-such-model@champion"},
            400,
            "no registered model 'no-such-model'",
        ),
        (
            {"name": "x", "source": "ok.py", "files": ok, "profile": "gpu-a100"},
            403,
            "is limited to members of gpu-users",
        ),
        (
            {"name": "x", "source": "ok.py", "files": ok, "color": "red"},
            400,
            "unknown field(s) color",
        ),
    ]
    for body, status, message in cases:
        r = api("POST", "apps", json=body)
        assert r.status_code == status, (body, r.status_code, r.text[:300])
        assert message in r.json()["message"], (body, r.json())
    r = api("POST", "apps", json={"name": "twice", "source": "ok.py", "files": ok})
    assert r.status_code == 201, r.text
    r = api("POST", "apps", json={"name": "twice", "source": "ok.py", "files": ok})
    assert r.status_code == 409 and "already have an app named 'twice'" in r.json()["message"]
    r = api("POST", "apps/twice/shares", json={"users": ["nobody-here"]})
    assert r.status_code == 400 and "no hub user 'nobody-here'" in r.json()["message"]
    r = api("POST", "apps/twice/shares", json={"expires_in_s": 600})
    assert r.status_code == 201 and r.json()["shares"][0]["url"].startswith(
        hub.public_url + "hub/accept-share?code="
    )
    assert Apps(hub, token(hub, "bob"))("DELETE", "apps/twice").status_code == 404  # not bob's
    assert api("DELETE", "apps/twice").status_code == 204
    assert [a for a in api("GET", "apps").json()["apps"] if a["name"] in ("x", "twice")] == []


def test_the_app_fetches_its_bundle_and_reports_back_and_its_runtime_answers_only_the_owner(hub):
    """The app's server never shares files with the apps service: it fetches its bundle and
    reports its log and visitors over HTTP, with its own server token, into a folder of its own."""
    from gradio_client import Client

    alice, bob = token(hub, "alice"), token(hub, "bob")
    api = Apps(hub, alice)
    r = api(
        "POST",
        "apps",
        json={"name": "greeter2", "source": "greeter.py", "files": {"app.py": GREETER}},
    )
    assert r.status_code == 201, r.text
    client = Client(r.json()["url"], headers={"Authorization": f"token {alice}"}, verbose=False)
    assert client.predict("Ada", api_name="/greet") == "Hello Ada!"
    deadline = time.monotonic() + 20  # reported every 5 s
    while api("GET", "apps/greeter2").json().get("last_used_by") != "alice":
        assert time.monotonic() < deadline, api("GET", "apps/greeter2").json()
        time.sleep(0.5)
    logs = api("GET", "apps/greeter2/logs").text
    assert "greeter2 is up" in logs  # the log came back too
    # Gradio listens on a socket in the app's own private folder, not on a port
    socket_path = logs.split("Gradio on ", 1)[1].split(",", 1)[0]
    assert (
        socket_path.endswith("/app.sock")
        and Path(socket_path).parent.parent.stat().st_mode & 0o077 == 0
    )
    other = Apps(hub, bob)
    assert other("GET", "apps/greeter2/runtime/bundle").status_code == 404
    assert (
        other("PUT", "apps/greeter2/runtime/report", json={"usage": {}, "log": "x"}).status_code
        == 404
    )
    # stopping the app ends its process cleanly: its copy of the bundle goes with it
    assert api("POST", "apps/greeter2/stop").status_code == 200
    deadline = time.monotonic() + 20
    while Path(socket_path).parent.parent.exists():
        assert time.monotonic() < deadline, "the app's folder was left behind"
        time.sleep(0.2)
    assert api("DELETE", "apps/greeter2").status_code == 204


def test_publish_a_registered_model_and_call_it_with_gradio_client(hub, monkeypatch):
    import mlflow
    import numpy as np
    import pandas as pd
    from gradio_client import Client
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    alice = token(hub, "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub.at("/services/mlflow"))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", alice)
    X = pd.DataFrame(
        {"sepal": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "petal": [0.5, 0.4, 2.5, 3.0, 0.3, 3.3]}
    )
    y = np.array([0, 0, 1, 1, 0, 1])
    clf = LogisticRegression().fit(X, y)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            clf, name="model", input_example=X.iloc[:2], registered_model_name="flowers"
        )
    MlflowClient().set_registered_model_alias("flowers", "demo", "1")
    api = Apps(hub, alice)
    r = api("POST", "apps", json={"name": "x", "model": "models:/flowers@nope"})
    assert (
        r.status_code == 400
        and "'flowers' has no alias 'nope'; its aliases: demo" in r.json()["message"]
    )
    r = api("POST", "apps", json={"name": "flowers", "model": "models:/flowers@demo"})
    assert r.status_code == 201, r.text
    # the generated UI has one input per column of the model's signature
    config = app_get(hub, r.json()["url"] + "config", alice).json()
    numbers = [c["props"] for c in config["components"] if c["type"] == "number"]
    assert [n.get("label") for n in numbers] == ["sepal", "petal"], numbers
    # ... starting at the logged input example's first row, not at zeros
    assert [n.get("value") for n in numbers] == [1.0, 0.5], numbers
    client = Client(r.json()["url"], headers={"Authorization": f"token {alice}"}, verbose=False)
    for sepal, petal in [(1.0, 0.5), (6.0, 3.3)]:
        expected = int(clf.predict(pd.DataFrame({"sepal": [sepal], "petal": [petal]}))[0])
        assert client.predict(sepal, petal, api_name="/predict") == expected
    assert api("DELETE", "apps/flowers").status_code == 204


def test_try_inline_is_served_through_the_owner_server_only(hub):
    alice = token(hub, "alice")
    bob = token(hub, "bob", ["inherit"])
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub, "alice", alice, "try.ipynb")
    try:
        out = kernel.execute(
            "from hubml.widgets import try_app\n"
            "demo = try_app(lambda text: text[::-1])\n"
            "print('AT', demo.hubml_url)"
        )
        path = out.split("AT ")[1].split()[0]
        assert path.startswith("/user/alice/hubml/apps/"), out
        r = app_get(hub, path + "config", alice)
        assert r.status_code == 200 and r.json()["root"].endswith(path.rstrip("/")), r.text[:300]
        assert app_get(hub, path + "config", bob).status_code in (403, 404)  # not bob's server
        r = app_get(hub, "/user/alice/hubml/apps/AAAAAAAAAAAAAAAAAAAAAA/config", alice)
        assert r.status_code == 404  # only demos a kernel started are forwarded
    finally:
        kernel.close()
        hub.stop_server("alice")
