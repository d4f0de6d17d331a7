"""Gradio apps published under the hub: access, sharing, survival, crashes, models, bad input."""

from __future__ import annotations

import time

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
        self.hub, self.base = hub, f"{hub.url}services/apps/api/"
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

    hub = start_hub(tmp_path_factory.mktemp("apps"), {"apps": {"enabled": True}, "tracking": {"enabled": True}})
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
    return requests.get(f"{hub.url.rstrip('/')}{path}", headers={"Authorization": f"token {tok}"}, timeout=30, **kw)


def test_publish_from_a_notebook_share_revoke_and_survive_the_owner_server(hub):
    from gradio_client import Client

    alice = token(hub, "alice")
    (hub.data_dir / "homes" / "alice").mkdir(parents=True, exist_ok=True)
    (hub.data_dir / "homes" / "alice" / "greeter.py").write_text(GREETER)
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub.url, "alice", alice, "demo.ipynb")
    try:
        out = kernel.execute(
            "from hubml.widgets.apps import AppsClient\n"
            "app = AppsClient().request('POST', 'apps', {'name': 'greeter', 'source': 'greeter.py'})\n"
            "print('URL', app['url'], app['status'])"
        )
    finally:
        kernel.close()
    assert "URL /user/alice/app-greeter/ running" in out, out
    url = "/user/alice/app-greeter/"
    owner_api = Apps(hub, alice)
    assert app_get(hub, url, alice).status_code == 200

    bob_before = token(hub, "bob", ["inherit"])
    carol = token(hub, "carol", ["inherit"])
    r = app_get(hub, url, bob_before)
    assert r.status_code == 403 and "has not been shared with you" in r.text
    r = owner_api("POST", "apps/greeter/shares", json={"users": ["bob"]})
    assert r.status_code == 201, r.text
    share_id = r.json()["shares"][0]["id"]
    bob = token(hub, "bob", ["access:servers!server=alice/app-greeter"])  # what bob's browser gets by OAuth
    assert app_get(hub, url, bob).status_code == 200
    client = Client(f"{hub.url.rstrip('/')}{url}", headers={"Authorization": f"token {bob}"}, verbose=False)
    assert client.predict("Bob", api_name="/greet") == "Hello Bob!"
    assert app_get(hub, url, carol).status_code == 403
    model = owner_api("GET", "apps/greeter").json()
    assert model["access"]["users"] == ["bob"] and model["last_used_by"] in ("bob", "alice")
    listing = Apps(hub, token(hub, "bob"))("GET", "apps").json()
    assert [a["name"] for a in listing["shared_with_me"]] == ["greeter"]

    # no Jupyter API on an app server, for the viewer or the owner
    for path in ("api/contents", "api/kernels", "api/terminals", "api/sessions", "terminals/websocket/1"):
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
    assert app_get(hub, url, alice).status_code != 200


def test_an_app_that_crashes_at_start_leaves_nothing_behind(hub):
    alice = token(hub, "alice")
    home = hub.data_dir / "homes" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "broken.py").write_text("import gradio as gr\nraise RuntimeError('weights.bin is missing')\n")
    api = Apps(hub, alice)
    r = api("POST", "apps", json={"name": "broken", "source": "broken.py"})
    assert r.status_code == 422, r.text
    assert "crashed while starting" in r.json()["message"]
    assert "RuntimeError: weights.bin is missing" in r.json()["log_tail"]
    assert api("GET", "apps/broken").status_code == 404
    servers = hub.api("GET", "users/alice").json()["servers"]
    assert "app-broken" not in servers
    routes = hub.api("GET", "proxy").json()
    assert not any("app-broken" in route for route in routes)
    assert not (hub.data_dir / "apps" / "alice" / "broken").exists()


def test_bad_requests_are_refused_with_a_clear_message(hub):
    alice = token(hub, "alice")
    home = hub.data_dir / "homes" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ok.py").write_text(GREETER)
    (home / "notes.txt").write_text("x")
    api = Apps(hub, alice)
    cases = [
        ({"name": "Bad Name!", "source": "ok.py"}, 400, "name: 1–40 lowercase letters"),
        ({"name": "x", "source": "ok.py", "profile": "gpu-giant"}, 400, "unknown profile 'gpu-giant'"),
        ({"name": "x", "source": "missing.py"}, 400, "does not exist"),
        ({"name": "x", "source": "notes.txt"}, 400, "is not a Python file"),
        ({"name": "x", "source": "../bob/app.py"}, 400, "outside your home"),
        ({"name": "x"}, 400, "exactly one of source"),
        ({"name": "x", "source": "ok.py", "model": "models:/m@a"}, 400, "exactly one of source"),
        ({"name": "x", "model": "runs:/abc/model"}, 400, "not a model reference"),
        ({"name": "x", "model": "models:/no-such-model@champion"}, 400, "no registered model 'no-such-model'"),
        ({"name": "x", "source": "ok.py", "profile": "gpu-a100"}, 403, "only for members of gpu-users"),
        ({"name": "x", "source": "ok.py", "color": "red"}, 400, "unknown field(s) color"),
    ]
    for body, status, message in cases:
        r = api("POST", "apps", json=body)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert message in r.json()["message"], (body, r.json())
    r = api("POST", "apps", json={"name": "twice", "source": "ok.py"})
    assert r.status_code == 201, r.text
    r = api("POST", "apps", json={"name": "twice", "source": "ok.py"})
    assert r.status_code == 409 and "already have an app named 'twice'" in r.json()["message"]
    r = api("POST", "apps/twice/shares", json={"users": ["nobody-here"]})
    assert r.status_code == 400 and "no hub user 'nobody-here'" in r.json()["message"]
    r = api("POST", "apps/twice/shares", json={"expires_in_s": 600})
    assert r.status_code == 201 and "/hub/accept-share?code=" in r.json()["shares"][0]["url"]
    assert Apps(hub, token(hub, "bob"))("DELETE", "apps/twice").status_code == 404  # not bob's
    assert api("DELETE", "apps/twice").status_code == 204
    assert [a for a in api("GET", "apps").json()["apps"] if a["name"] in ("x", "twice")] == []


def test_publish_a_registered_model_and_call_it_with_gradio_client(hub, monkeypatch):
    import mlflow
    import numpy as np
    import pandas as pd
    from gradio_client import Client
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    alice = token(hub, "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{hub.url}services/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", alice)
    X = pd.DataFrame({"sepal": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "petal": [0.5, 0.4, 2.5, 3.0, 0.3, 3.3]})
    y = np.array([0, 0, 1, 1, 0, 1])
    clf = LogisticRegression().fit(X, y)
    with mlflow.start_run():
        mlflow.sklearn.log_model(clf, name="model", input_example=X.iloc[:2], registered_model_name="flowers")
    MlflowClient().set_registered_model_alias("flowers", "demo", "1")
    api = Apps(hub, alice)
    r = api("POST", "apps", json={"name": "x", "model": "models:/flowers@nope"})
    assert r.status_code == 400 and "'flowers' has no alias 'nope'; its aliases: demo" in r.json()["message"]
    r = api("POST", "apps", json={"name": "flowers", "model": "models:/flowers@demo"})
    assert r.status_code == 201, r.text
    # the generated UI has one input per column of the model's signature
    config = app_get(hub, r.json()["url"] + "config", alice).json()
    labels = [c["props"].get("label") for c in config["components"] if c["type"] == "number"]
    assert labels == ["sepal", "petal"], labels
    client = Client(f"{hub.url.rstrip('/')}{r.json()['url']}", headers={"Authorization": f"token {alice}"},
                    verbose=False)
    for sepal, petal in [(1.0, 0.5), (6.0, 3.3)]:
        expected = int(clf.predict(pd.DataFrame({"sepal": [sepal], "petal": [petal]}))[0])
        assert client.predict(sepal, petal, api_name="/predict") == expected
    assert api("DELETE", "apps/flowers").status_code == 204


def test_try_inline_is_served_through_the_owner_server_only(hub):
    alice = token(hub, "alice")
    bob = token(hub, "bob", ["inherit"])
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub.url, "alice", alice, "try.ipynb")
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
        r = app_get(hub, "/user/alice/hubml/apps/1/config", alice)
        assert r.status_code == 404  # only ports a kernel registered are forwarded
    finally:
        kernel.close()
        hub.stop_server("alice")
