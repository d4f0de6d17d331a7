"""In a notebook, the experiment panel's "Log run" makes a run with the notebook snapshot and
its HTML, and the link opens that run in the MLflow UI."""

import re

import pytest
import requests

from tests.browserutil import PUBLIC_HOSTS, login
from tests.integration.test_tracking_service import wait_for_mlflow

pytestmark = pytest.mark.browser


def open_notebook(page, hub, user):
    login(page, hub, user)
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=90_000)
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=60_000)


def run_cell(page, code):
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").last
    editor.click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def test_log_run_from_the_panel_and_open_it_in_mlflow(hub_factory, page, artifacts):
    hub = hub_factory({"tracking": {"enabled": True}})
    wait_for_mlflow(hub, hub.token)
    open_notebook(page, hub, "alice")
    run_cell(
        page,
        "from hubml.widgets import ExperimentPanel\n"
        "panel = ExperimentPanel(params={'alpha': 0.5}, metrics={'accuracy': 0.93}, "
        "experiment='<b>bold</b> experiment')\npanel",
    )
    page.keyboard.press("Control+s")  # the snapshot is the notebook as saved
    dialog = page.locator(".jp-Dialog")
    try:  # JupyterLab asks to name an untitled notebook on its first save
        dialog.wait_for(timeout=5_000)
        page.keyboard.press("Enter")
        dialog.wait_for(state="hidden")
    except Exception:
        pass
    button = page.get_by_role("button", name="Log run")
    button.wait_for(timeout=60_000)
    button.click()
    link = page.locator("a.hubml-run-link")
    link.wait_for(timeout=90_000)
    page.screenshot(path=str(artifacts / "experiment-panel.png"), full_page=True)
    href = link.get_attribute("href")
    run_id = href.rsplit("/runs/", 1)[1]

    token = hub.user_token("alice")
    listing = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/artifacts/list"),
        params={"run_id": run_id, "path": "notebook"},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    ).json()
    files = sorted(f["path"] for f in listing.get("files", []))
    assert files == ["notebook/Untitled.html", "notebook/Untitled.ipynb"], listing
    run = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/runs/get"),
        params={"run_id": run_id},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    ).json()["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"alpha": "0.5"}
    # the snapshot's HTML opens with public hosts unreachable and asks none of them for anything
    snapshot = requests.get(
        hub.at(
            f"/services/mlflow/api/2.0/mlflow-artifacts/artifacts/"
            f"{run['info']['experiment_id']}/{run_id}/artifacts/notebook/Untitled.html"
        ),
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert snapshot.status_code == 200, snapshot.text[:500]
    outside = []

    def block(route):
        outside.append(route.request.url)
        route.abort()

    viewer = page.context.new_page()  # the notebook stays open in ``page``
    viewer.route(PUBLIC_HOSTS, block)
    viewer.set_content(snapshot.text, wait_until="networkidle")
    assert "alpha" in viewer.content() and outside == [], outside
    viewer.close()
    assert "ExperimentPanel(children" not in snapshot.text  # the widget reads as a note

    exp = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/experiments/get"),
        params={"experiment_id": run["info"]["experiment_id"]},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    ).json()["experiment"]
    assert exp["name"] == "<b>bold</b> experiment"  # kept as text, never rendered as markup

    with page.context.expect_page() as new_page_info:
        link.click()
    ui = new_page_info.value
    ui.wait_for_load_state()
    try:
        ui.get_by_text(run["info"]["run_name"]).first.wait_for(timeout=60_000)
    finally:
        ui.screenshot(path=str(artifacts / "mlflow-run.png"), full_page=True)
    assert f"/runs/{run_id}" in ui.url

    # the UI's writes carry JupyterHub's XSRF token (MLflow's UI sends mlflow-request-header-*
    # cookies as headers); a write with the session alone is refused
    write = """async (args) => {
        const [runId, withToken] = args;
        const token = document.cookie.split("; ").find(c => c.startsWith("mlflow-request-header-X-XSRFToken="));
        const headers = {"Content-Type": "application/json"};
        if (withToken && token) headers["X-XSRFToken"] = decodeURIComponent(token.split("=").slice(1).join("="));
        const r = await fetch("ajax-api/2.0/mlflow/runs/set-tag", {method: "POST", headers,
            body: JSON.stringify({run_id: runId, key: "reviewed", value: withToken ? "yes" : "forged"})});
        return r.status;
    }"""
    assert ui.evaluate(write, [run_id, False]) == 403
    assert ui.evaluate(write, [run_id, True]) == 200
    tags = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/runs/get"),
        params={"run_id": run_id},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    ).json()["run"]["data"]["tags"]
    assert {t["key"]: t["value"] for t in tags}["reviewed"] == "yes"
