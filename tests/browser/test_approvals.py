"""Human-in-the-loop promotion as two people meet it: alice asks from her PublishPanel, the
request is in bob's inbox in his, he approves it there, and alice's panel shows the result."""

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.test_experiment_panel import open_notebook, run_cell
from tests.integration.test_registry import log_runs_through_the_hub
from tests.integration.test_tracking_service import wait_for_mlflow

pytestmark = pytest.mark.browser


def test_a_request_reaches_the_approvers_inbox_and_the_result_its_author(
    hub_factory, browser, page, artifacts
):
    hub = hub_factory({"tracking": {"enabled": True}})
    wait_for_mlflow(hub, hub.token)
    tokens = {u: hub.user_token(u) for u in ("alice", "bob")}
    runs = log_runs_through_the_hub(hub, tokens, (("alice", "alice"),))
    r = requests.post(
        hub.at("/services/mlflow/hubml/api/models/churn/publish"),
        json={"run_id": runs["alice"], "reason": "first model"},
        headers={"Authorization": f"token {tokens['alice']}"},
        timeout=300,
    )
    assert r.status_code == 201, r.text

    # alice asks for version 1 to become the champion
    open_notebook(page, hub, "alice")
    run_cell(page, "from hubml.widgets import PublishPanel\nPublishPanel('churn')")
    alice = page.locator(".hubml-publish-panel")
    alice.wait_for(timeout=60_000)
    alice.locator(".widget-text", has_text="Version").locator("input").fill("1")
    alice.locator(".widget-text", has_text="Reason").locator("input").fill("better recall")
    alice.get_by_role("button", name="Request promotion").click()
    alice.get_by_text("it is in the approvers' inbox").wait_for(timeout=60_000)
    alice.get_by_text("churn v1: waiting for anyone but its author").wait_for(timeout=30_000)
    assert alice.locator(".hubml-approve").count() == 0  # never offered her own approval

    # bob opens a panel without typing any name: the request is waiting for him
    bob_context = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        bob_page = bob_context.new_page()
        bob_page.set_default_timeout(60_000)
        open_notebook(bob_page, hub, "bob")
        run_cell(bob_page, "from hubml.widgets import PublishPanel\nPublishPanel()")
        bob = bob_page.locator(".hubml-publish-panel")
        offer = bob.locator(".widget-hbox", has_text="asked by alice")
        offer.wait_for(timeout=60_000)
        assert "churn" in offer.inner_text() and "better recall" in offer.inner_text()
        # before approving, bob compares the requested version with the current champion
        offer.get_by_role("button", name="Compare v1").click()
        bob.locator("table.hubml-compare").wait_for(timeout=60_000)
        bob.get_by_text("churn v1 next to @champion").wait_for()
        bob_page.screenshot(path=str(artifacts / "approvals-inbox.png"), full_page=True)
        offer.get_by_role("button", name="Approve v1").click()
        bob.get_by_text("Version 1 is now @champion").wait_for(timeout=120_000)
        expect(bob.locator(".hubml-approve")).to_have_count(0)
    finally:
        bob_context.close()

    # alice's panel shows who approved it
    alice.get_by_role("button", name="Refresh inbox").click()
    alice.get_by_text("churn v1: approved by bob").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "approvals-author.png"), full_page=True)
    model = requests.get(
        hub.at("/services/mlflow/hubml/api/models/churn"),
        headers={"Authorization": f"token {tokens['alice']}"},
        timeout=60,
    ).json()
    assert model["aliases"].get("champion") == "1"
