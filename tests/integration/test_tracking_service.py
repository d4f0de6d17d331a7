"""MLflow behind the hub: who may reach it, what every run says about itself, who may delete."""

import json
import time

import pytest
import requests

from tests.kernelclient import ServerKernel

pytestmark = pytest.mark.integration


def wait_for_mlflow(hub, token, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(
            hub.at("/services/mlflow/api/2.0/mlflow/experiments/search"),
            params={"max_results": 1},
            headers={"Authorization": f"token {token}"},
            timeout=10,
        )
        if r.status_code == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"mlflow service not answering: {r.status_code} {r.text[:300]}")


@pytest.fixture(scope="module")
def tracked_hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(tmp_path_factory.mktemp("trk"), {"tracking": {"enabled": True}})
    try:
        wait_for_mlflow(hub, hub.token)
        yield hub
    finally:
        hub.stop()


def mlflow_api(hub, method, path, token, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method, hub.at(f"/services/mlflow/api/2.0/mlflow/{path}"), headers=headers, timeout=30, **kw
    )


def test_plain_mlflow_in_a_notebook_is_tagged_with_user_notebook_and_profile(tracked_hub):
    hub = tracked_hub
    token = hub.user_token("alice")
    hub.spawn("alice", {"profile": "cpu-large"}, token=token)
    hub.wait_ready("alice")
    kernel = ServerKernel(hub, "alice", token, "train.ipynb")
    code = (
        "import mlflow\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('alpha', 0.5)\n"
        "    mlflow.log_metric('accuracy', 0.91)\n"
        "print('RUN', run.info.run_id)\n"
    )
    try:
        out = kernel.execute(code)
        # renamed in JupyterLab (the file and the session move): the next run names the new path
        base, auth = kernel.base, kernel.headers
        r = requests.patch(
            f"{base}api/contents/train.ipynb",
            json={"path": "renamed.ipynb"},
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        r = requests.patch(
            f"{base}api/sessions/{kernel.session['id']}",
            json={"path": "renamed.ipynb", "name": "renamed.ipynb"},
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        renamed = kernel.execute(code)
    finally:
        kernel.close()

    def run_of(printed):
        run_id = printed.split("RUN ")[1].split()[0]
        r = mlflow_api(hub, "GET", "runs/get", token, params={"run_id": run_id})
        assert r.status_code == 200, r.text
        return r.json()["run"]

    def tags_of(printed):
        return {t["key"]: t["value"] for t in run_of(printed)["data"]["tags"]}

    tags = tags_of(out)
    assert tags["mlflow.user"] == "alice" and tags["hubml.user"] == "alice"
    # relative to the home folder, as jobs name notebooks (not the server's absolute path)
    assert tags["mlflow.source.name"] == "train.ipynb", tags["mlflow.source.name"]
    assert tags["hubml.notebook_path"] == "train.ipynb"
    assert tags_of(renamed)["mlflow.source.name"] == "renamed.ipynb"
    assert tags["hubml.profile"] == "cpu-large"
    assert tags["hubml.price_per_hour"] == "0.3885"
    assert tags["hubml.gpu"] == "none"
    assert run_of(out)["data"]["metrics"][0]["value"] == 0.91
    hub.stop_server("alice")


def test_requests_without_access_are_refused(tracked_hub):
    hub = tracked_hub
    r = mlflow_api(hub, "GET", "experiments/search", None, params={"max_results": 1})
    assert r.status_code == 403 and "JupyterHub token" in r.json()["message"]
    r = mlflow_api(hub, "GET", "experiments/search", "not-a-token", params={"max_results": 1})
    assert r.status_code == 403
    # a real token of a real user, but without the mlflow access scope
    hub.ensure_user("dora")
    limited = hub.api(
        "POST", "users/dora/tokens", json={"scopes": ["read:users:name!user"]}
    ).json()["token"]
    r = mlflow_api(hub, "GET", "experiments/search", limited, params={"max_results": 1})
    assert r.status_code == 403


def test_users_cannot_touch_each_others_runs_or_impersonate(tracked_hub):
    hub = tracked_hub
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    r = mlflow_api(
        hub,
        "POST",
        "runs/create",
        alice,
        json={"experiment_id": "0", "tags": [{"key": "mlflow.user", "value": "bob"}]},
    )
    assert r.status_code == 200, r.text
    run = r.json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.user"] == "alice"  # the platform, not the client, says who
    run_id = run["info"]["run_id"]

    r = mlflow_api(hub, "POST", "runs/delete", bob, json={"run_id": run_id})
    assert r.status_code == 403
    assert r.json()["message"] == f"run {run_id} belongs to alice; bob may not delete it"
    r = mlflow_api(
        hub,
        "POST",
        "runs/log-metric",
        bob,
        json={"run_id": run_id, "key": "x", "value": 1, "timestamp": 0, "step": 0},
    )
    assert r.status_code == 403
    r = mlflow_api(
        hub,
        "POST",
        "runs/set-tag",
        alice,
        json={"run_id": run_id, "key": "mlflow.user", "value": "bob"},
    )
    assert r.status_code == 403

    assert mlflow_api(hub, "POST", "runs/delete", alice, json={"run_id": run_id}).status_code == 200
    # admins may clean up anything
    assert (
        mlflow_api(hub, "POST", "runs/restore", hub.token, json={"run_id": run_id}).status_code
        == 200
    )


def test_experiments_belong_to_their_creator(tracked_hub):
    hub = tracked_hub
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    r = mlflow_api(hub, "POST", "experiments/create", alice, json={"name": "alice-exp"})
    assert r.status_code == 200, r.text
    exp_id = r.json()["experiment_id"]
    r = mlflow_api(hub, "POST", "experiments/delete", bob, json={"experiment_id": exp_id})
    assert r.status_code == 403
    assert (
        mlflow_api(
            hub, "POST", "experiments/delete", alice, json={"experiment_id": exp_id}
        ).status_code
        == 200
    )


def test_champion_alias_only_moves_through_approval(tracked_hub):
    hub = tracked_hub
    alice = hub.user_token("alice")
    r = requests.post(
        hub.at("/services/mlflow/api/2.0/mlflow/registered-models/alias"),
        headers={"Authorization": f"token {alice}"},
        data=json.dumps({"name": "m", "alias": "champion", "version": "1"}),
        timeout=30,
    )
    assert r.status_code == 403 and "gated flow" in r.json()["message"]


def test_registry_bookkeeping_cannot_be_forged(tracked_hub):
    hub = tracked_hub
    alice = hub.user_token("alice")
    r = mlflow_api(
        hub,
        "POST",
        "registered-models/create",
        alice,
        json={
            "name": "forged",
            "tags": [{"key": "hubml.gate.allow_self_approval", "value": "true"}],
        },
    )
    assert r.status_code == 403 and "gated flow" in r.json()["message"]
    assert (
        mlflow_api(
            hub, "POST", "registered-models/create", alice, json={"name": "plain"}
        ).status_code
        == 200
    )
    r = mlflow_api(
        hub,
        "POST",
        "registered-models/set-tag",
        alice,
        json={"name": "plain", "key": "hubml.gate.tolerance", "value": "1"},
    )
    assert r.status_code == 403
    r = mlflow_api(hub, "DELETE", "registered-models/delete", alice, json={"name": "plain"})
    assert r.status_code == 403 and "only admins" in r.json()["message"]


def test_ui_is_served_under_the_service_prefix(tracked_hub):
    hub = tracked_hub
    token = hub.user_token("alice")
    r = requests.get(
        hub.at("/services/mlflow/"), headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code == 200 and "<!doctype html>" in r.text.lower()


def test_gated_publish_and_approval_over_http(tracked_hub):
    """The registry flow through the hub: gates, self-approval refused, approval, rollback, history."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    hub = tracked_hub
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    base = hub.at("/services/mlflow")

    def api(method, path, token, **kw):
        return requests.request(
            method,
            f"{base}/hubml/api/models/{path}",
            headers={"Authorization": f"token {token}"},
            timeout=120,
            **kw,
        )

    X, y = load_iris(return_X_y=True)
    mlflow.set_tracking_uri(base)
    import os

    os.environ["MLFLOW_TRACKING_TOKEN"] = alice
    try:
        mlflow.set_experiment("http-registry")
        run_ids = []
        for max_iter in (200, 300):
            with mlflow.start_run() as run:
                clf = LogisticRegression(max_iter=max_iter).fit(X, y)
                mlflow.log_metric("accuracy", clf.score(X, y))
                mlflow.sklearn.log_model(clf, name="model", input_example=X[:3])
            run_ids.append(run.info.run_id)
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)

    r = api("POST", "iris/publish", alice, json={"run_id": run_ids[0], "reason": "first"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "1"
    assert api("GET", "iris/aliases/challenger", alice).json()["version"] == "1"
    r = api("POST", "iris/versions/1/approve", alice, json={"reason": "mine"})
    assert r.status_code == 403 and "alice" in r.json()["message"]
    r = api("POST", "iris/versions/1/approve", bob, json={"reason": "looks good"})
    assert r.status_code == 200, r.text
    assert api("GET", "iris/aliases/champion", bob).json()["version"] == "1"
    assert api("POST", "iris/publish", alice, json={"run_id": run_ids[1]}).status_code == 201
    assert api("POST", "iris/versions/2/approve", bob, json={}).status_code == 200
    assert api("POST", "iris/rollback", alice, json={"reason": "v2 misbehaves"}).status_code == 200
    assert api("GET", "iris/aliases/champion", alice).json()["version"] == "1"
    entries = api("GET", "iris/history", alice).json()["entries"]
    moves = [
        (e["action"], e.get("alias"), e.get("from_version"), e.get("to_version"), e["actor"])
        for e in entries
    ]
    assert [m for m in moves if m[1] == "champion"] == [
        ("approve", "champion", None, "1", "bob"),
        ("approve", "champion", "1", "2", "bob"),
        ("rollback", "champion", "2", "1", "alice"),
    ], moves
    # the notebook panel shows the same history, through the same API
    from hubml.widgets.publish import PublishPanel, RegistryClient

    panel = PublishPanel("iris", client=RegistryClient(base, alice))
    assert len(panel.history()) == len(entries)
    assert "rollback" in panel.output.value and "v2 misbehaves" in panel.output.value
    panel.version.value = "2"
    panel._run(panel.approve)  # alice approving her own version: refused, in plain words
    assert "alice" in panel.status.value and "#82071e" in panel.status.value, panel.status.value
    r = api("GET", "iris/aliases/staging", alice)
    assert r.status_code == 404 and "has no alias @staging" in r.json()["message"]
    r = api("GET", "bad%2Fname", alice)
    assert r.status_code in (400, 404)


def test_experiment_panel_logs_a_model_that_loads_back(tracked_hub, monkeypatch):
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from hubml.widgets.tracking import ExperimentPanel

    hub = tracked_hub
    monkeypatch.setenv("MLFLOW_TRACKING_URI", hub.at("/services/mlflow"))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", hub.user_token("alice"))
    mlflow.set_tracking_uri(hub.at("/services/mlflow"))
    X, y = load_iris(return_X_y=True)
    clf = DecisionTreeClassifier(max_depth=2).fit(X, y)
    panel = ExperimentPanel(
        params={"max_depth": 2},
        metrics={"accuracy": clf.score(X, y)},
        model=clf,
        input_example=X[:2],
        experiment="panel-models",
        include_notebook=True,
    )
    run_id = panel.log_run()
    assert run_id, panel.status.value
    # outside a hub kernel the snapshot is skipped, and the panel says so instead of failing
    assert "Notebook snapshot skipped" in panel.status.value
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert list(loaded.predict(X[:3])) == list(clf.predict(X[:3]))
    run = mlflow.get_run(run_id)
    assert run.data.params == {"max_depth": "2"} and run.data.tags["hubml.user"] == "alice"
