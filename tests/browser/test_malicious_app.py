"""A published app whose page script attacks its visitor, opened by carol in Chromium.

alice's app is shared with carol. Carol is signed in to the hub, has her own server open and has
used the jobs and MLflow services, so her browser holds a session on every one of those origins.
The app's script tries to read her hub pages, mint her a token, and write through every
service and her own server with her cookies. It runs on alice's origin, so none of it works:
reads are blocked by the browser, writes arrive without carol's session (or without the XSRF
token JupyterHub requires with one) and change nothing.
"""

import json
import re

import pytest
import requests

from tests.browserutil import login
from tests.integration.test_apps import GREETER, Apps
from tests.integration.test_tracking_service import wait_for_mlflow
from tests.jobsutil import JobsAPI

pytestmark = pytest.mark.browser

ATTACK = r"""
async () => {
  const out = window.hubmlAttack = [];
  const T = %(targets)s;
  const job = JSON.stringify({notebook: "x.ipynb", content: {cells: [], nbformat: 4, nbformat_minor: 5}});
  async function attempt(what, url, opts) {
    try {
      const r = await fetch(url, Object.assign({credentials: "include", redirect: "follow"}, opts || {}));
      let text = "";
      try { text = await r.text(); } catch (e) {}
      out.push([what, r.type === "opaque" ? "opaque" : "status " + r.status, text.slice(0, 400)]);
    } catch (e) {
      out.push([what, "blocked", String(e)]);
    }
  }
  await attempt("read the hub's home page", T.hub + "/hub/home");
  await attempt("read the hub's token page", T.hub + "/hub/token");
  await attempt("read /hub/home on this origin", "/hub/home");
  await attempt("mint a token", T.hub + "/hub/api/users/carol/tokens", {method: "POST", body: "{}"});
  await attempt("mint a token (no-cors)", T.hub + "/hub/api/users/carol/tokens", {method: "POST", body: "{}", mode: "no-cors"});
  await attempt("mint a token on this origin", "/hub/api/users/carol/tokens", {method: "POST", body: "{}"});
  await attempt("list carol's jobs", T.jobs + "api/jobs");
  await attempt("create a job", T.jobs + "api/jobs", {method: "POST", body: job, headers: {"Content-Type": "application/json"}});
  await attempt("create a job (no-cors)", T.jobs + "api/jobs", {method: "POST", body: job, mode: "no-cors"});
  await attempt("create an MLflow run (no-cors)", T.mlflow + "api/2.0/mlflow/runs/create",
                {method: "POST", body: JSON.stringify({experiment_id: "0"}), mode: "no-cors"});
  await attempt("create an MLflow run from the UI's API (no-cors)", T.mlflow + "ajax-api/2.0/mlflow/runs/create",
                {method: "POST", body: JSON.stringify({experiment_id: "0"}), mode: "no-cors"});
  await attempt("approve a model version (no-cors)", T.mlflow + "hubml/api/models/m/versions/1/approve",
                {method: "POST", body: "{}", mode: "no-cors"});
  await attempt("list carol's apps", T.apps + "api/apps");
  await attempt("delete carol's app (no-cors)", T.apps + "api/apps/victim", {method: "DELETE", mode: "no-cors"});
  await attempt("read carol's files", T.carol + "api/contents");
  await attempt("write carol's files (no-cors)", T.carol + "api/contents/pwned.txt",
                {method: "PUT", mode: "no-cors", body: JSON.stringify({type: "file", format: "text", content: "pwned"})});
  await attempt("start a kernel on carol's server (no-cors)", T.carol + "api/kernels", {method: "POST", mode: "no-cors", body: "{}"});
  window.hubmlAttackDone = true;
  return [];
}
"""

APP = """
import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("# A harmless-looking demo")
    demo.load(None, None, None, js={js!r})
"""


def test_a_malicious_app_achieves_nothing_against_its_visitor(hub_factory, browser, artifacts):
    hub = hub_factory(
        {"apps": {"enabled": True}, "jobs": {"enabled": True}, "tracking": {"enabled": True}}
    )
    JobsAPI(hub, hub.token).wait_up()
    wait_for_mlflow(hub, hub.token)
    alice, carol_token = hub.user_token("alice"), hub.user_token("carol")
    targets = {
        "hub": hub.public_url.rstrip("/"),
        "jobs": hub.service_url("jobs"),
        "mlflow": hub.service_url("mlflow"),
        "apps": hub.service_url("apps"),
        "carol": hub.user_url("carol"),
    }
    app = APP.format(js=ATTACK % {"targets": json.dumps(targets)})
    r = Apps(hub, alice)(
        "POST", "apps", json={"name": "evil", "source": "evil.py", "files": {"app.py": app}}
    )
    assert r.status_code == 201, r.text
    evil_url = r.json()["url"]
    assert (
        Apps(hub, alice)("POST", "apps/evil/shares", json={"users": ["carol"]}).status_code == 201
    )
    victim = Apps(hub, carol_token)(
        "POST", "apps", json={"name": "victim", "source": "v.py", "files": {"app.py": GREETER}}
    )
    assert victim.status_code == 201, victim.text

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(90_000)
    try:
        # carol: signed in, her own server open, the services used: a session on every origin
        login(page, hub, "carol")
        page.wait_for_url(re.compile(r".*/hub/spawn.*"))
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(re.compile(r".*/user/carol/lab.*"))
        for url in (hub.service_url("jobs"), hub.service_url("mlflow"), hub.service_url("apps")):
            page.goto(url)
            page.wait_for_load_state()
        assert "victim" in page.content()  # the apps gallery, as carol
        tokens_before = {t["id"] for t in hub.api("GET", "users/carol/tokens").json()["api_tokens"]}

        page.goto(evil_url)
        consent = page.locator("button:has-text('Open the app')")
        if consent.count():
            consent.click()
        page.get_by_text("A harmless-looking demo").wait_for()
        page.wait_for_function("() => window.hubmlAttackDone === true", timeout=90_000)
        attempts = page.evaluate("() => window.hubmlAttack")
        page.screenshot(path=str(artifacts / "malicious-app.png"), full_page=True)
    finally:
        context.close()

    seen = {what: (outcome, text) for what, outcome, text in attempts}
    print(json.dumps(seen, indent=1)[:4000])
    assert len(seen) == 17, seen
    # reads of another origin: the browser does not hand the script the answer
    for what in (
        "read the hub's home page",
        "read the hub's token page",
        "mint a token",
        "list carol's jobs",
        "create a job",
        "list carol's apps",
        "read carol's files",
    ):
        assert seen[what][0] in ("blocked", "opaque"), (what, seen[what])
    # on the app's own origin the hub does not know carol: no page of hers, no token
    assert "carol" not in seen["read /hub/home on this origin"][1]
    assert seen["mint a token on this origin"][0] == "status 403", seen[
        "mint a token on this origin"
    ]
    # writes sent blind (no-cors) changed nothing
    # (the one new token is the app's own OAuth token: it identifies carol to that app, nothing more)
    new = [
        t
        for t in hub.api("GET", "users/carol/tokens").json()["api_tokens"]
        if t["id"] not in tokens_before
    ]
    assert [t["oauth_client"] for t in new] == ["Server at /user/alice/app-evil/"], new
    assert sorted(new[0]["scopes"]) == [
        "access:servers!server=alice/app-evil",
        "read:users:groups!user=carol",
        "read:users:name!user=carol",
    ], new
    assert JobsAPI(hub, carol_token)("GET", "jobs").json()["jobs"] == []
    runs = requests.post(
        hub.at("/services/mlflow/api/2.0/mlflow/runs/search"),
        json={"experiment_ids": ["0"]},
        headers={"Authorization": f"Bearer {carol_token}"},
        timeout=30,
    ).json()
    assert not runs.get("runs"), runs
    assert Apps(hub, carol_token)("GET", "apps/victim").status_code == 200
    contents = requests.get(
        hub.user_url("carol") + "api/contents",
        headers={"Authorization": f"token {carol_token}"},
        timeout=30,
    ).json()
    assert "pwned.txt" not in [c["name"] for c in contents["content"]]
    kernels = requests.get(
        hub.user_url("carol") + "api/kernels",
        headers={"Authorization": f"token {carol_token}"},
        timeout=30,
    ).json()
    assert kernels == [], kernels
