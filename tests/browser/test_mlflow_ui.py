"""The MLflow UI behind the front door, in Chromium: bob cannot move @champion on alice's model,
the UI says why, and alice's own alias edits work; the UI opens on the classic-ML view."""

from __future__ import annotations

import os

import pytest
import requests

from tests.browserutil import login
from tests.integration.test_tracking_service import wait_for_mlflow

pytestmark = pytest.mark.browser

MODEL = "ui-M"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(tmp_path_factory.mktemp("mlflow-ui"), {"tracking": {"enabled": True}})
    try:
        wait_for_mlflow(hub, hub.token)
        yield hub
    finally:
        hub.stop()


def registry(hub, method, path, user, **kw):
    return requests.request(
        method,
        hub.at(f"/services/mlflow/hubml/api/models/{MODEL}/{path}"),
        headers={"Authorization": f"token {hub.user_token(user)}"},
        timeout=120,
        **kw,
    )


def aliases(hub) -> dict:
    r = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/registered-models/get"),
        params={"name": MODEL},
        headers={"Authorization": f"token {hub.user_token('alice')}"},
        timeout=30,
    )
    return {a["alias"]: a["version"] for a in r.json()["registered_model"].get("aliases", [])}


@pytest.fixture(scope="module")
def champion(hub):
    """Alice's model with @champion = v1: published through the gates, approved by carol."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    mlflow.set_tracking_uri(hub.at("/services/mlflow"))
    os.environ["MLFLOW_TRACKING_TOKEN"] = hub.user_token("alice")
    try:
        mlflow.set_experiment("alice-ui")
        with mlflow.start_run() as run:
            clf = LogisticRegression(max_iter=200).fit(X, y)
            mlflow.log_metric("accuracy", clf.score(X, y))
            mlflow.sklearn.log_model(clf, name="model", input_example=X[:3])
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    r = registry(hub, "POST", "publish", "alice", json={"run_id": run.info.run_id})
    assert r.status_code == 201, r.text
    r = registry(hub, "POST", "versions/1/approve", "carol", json={"reason": "reviewed"})
    assert r.status_code == 200, r.text
    assert aliases(hub) == {"champion": "1"}
    return "1"


def open_version(page, hub, user):
    login(page, hub, user)
    page.goto(hub.service_url("mlflow") + f"#/models/{MODEL}/versions/1")
    page.get_by_title("Edit aliases").wait_for()


def edit_aliases(page, *, remove=(), add=()):
    page.get_by_title("Edit aliases").click()
    dialog = page.get_by_role("dialog")
    for alias in remove:
        dialog.locator(".du-bois-light-select-selection-overflow-item", has_text=alias).locator(
            "button[data-component-id$='.close']"
        ).click()
    for alias in add:
        dialog.get_by_role("combobox").fill(alias)
        page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Save aliases").click()
    return dialog


def test_bob_cannot_remove_or_set_champion_in_the_ui(hub, champion, page, artifacts):
    open_version(page, hub, "bob")
    dialog = edit_aliases(page, remove=["champion"])
    dialog.get_by_text("moves only through hubml's gated flow").wait_for()
    page.screenshot(path=str(artifacts / "mlflow-ui-alias-refused.png"))
    assert aliases(hub) == {"champion": "1"}
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="hidden")
    dialog = edit_aliases(page, add=["staging"])
    dialog.get_by_text("maintained by alice").wait_for()
    assert aliases(hub) == {"champion": "1"}


def test_alice_edits_her_own_aliases_but_not_champion(hub, champion, page):
    open_version(page, hub, "alice")
    dialog = edit_aliases(page, add=["staging"])
    dialog.wait_for(state="hidden")
    assert aliases(hub) == {"champion": "1", "staging": "1"}
    dialog = edit_aliases(page, remove=["champion"])
    dialog.get_by_text("moves only through hubml's gated flow").wait_for()
    assert aliases(hub) == {"champion": "1", "staging": "1"}


def test_the_ui_opens_on_the_classic_ml_view(hub, champion, page):
    login(page, hub, "bob")
    page.goto(hub.service_url("mlflow"))
    page.wait_for_function("localStorage.getItem('mlflow.workflowType_v1') !== null")
    assert page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'
    # experiments created through the front door are classic-ML experiments
    r = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/experiments/get-by-name"),
        params={"experiment_name": "alice-ui"},
        headers={"Authorization": f"token {hub.user_token('bob')}"},
        timeout=30,
    )
    tags = {t["key"]: t["value"] for t in r.json()["experiment"]["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["hubml.owner"] == "alice"


def test_no_assistant_and_no_telemetry_notice_on_the_home_and_experiment_pages(hub, champion, page):
    """MLflow's assistant is not configured here and telemetry is off: its button, panel and
    side-nav entry and the home page's telemetry notice are not shown."""
    login(page, hub, "bob")
    assistant_calls = []
    page.on(
        "response",
        lambda r: assistant_calls.append(r.status) if "/mlflow/assistant/" in r.url else None,
    )
    page.goto(hub.service_url("mlflow") + "#/")
    page.get_by_text("Welcome to MLflow").first.wait_for(timeout=30_000)
    r = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/experiments/get-by-name"),
        params={"experiment_name": "alice-ui"},
        headers={"Authorization": f"token {hub.user_token('bob')}"},
        timeout=30,
    )
    experiment = r.json()["experiment"]["experiment_id"]
    pages = {"home": "#/", "experiment": f"#/experiments/{experiment}/runs"}
    for name, fragment in pages.items():
        page.goto(hub.service_url("mlflow") + fragment)
        page.wait_for_load_state("networkidle")
        if name == "experiment":
            page.get_by_text("alice-ui").first.wait_for(timeout=30_000)
        assert page.locator("[data-assistant-ui]:visible").count() == 0, name
        assert page.get_by_text("MLflow Assistant").locator("visible=true").count() == 0, name
        assert page.get_by_role("button", name="Assistant", exact=True).count() == 0, name
        assert page.get_by_text("Information about UI telemetry").count() == 0, name
    # the UI asked for the assistant's configuration and was refused (that is what hides it)
    assert assistant_calls and all(status in (403, 404) for status in assistant_calls)
    assert page.evaluate("localStorage.getItem('mlflow.settings.telemetry.enabled_v1')") == "false"
