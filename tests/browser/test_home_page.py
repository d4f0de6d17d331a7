"""The home page in Chromium: alice finds her server, schedule, run and waiting request there and
manages the schedule; bob approves her request from his home page; the hub's home links to it."""

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.browserutil import login
from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.browser


def test_alice_manages_her_schedule_and_bob_approves_from_the_home_page(
    hub_factory, browser, page, artifacts
):
    from tests.integration.test_registry import log_runs_through_the_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    hub = hub_factory({"tracking": {"enabled": True}, "jobs": {"enabled": True}})
    JobsAPI(hub, hub.token).wait_up()
    wait_for_mlflow(hub, hub.token)
    tokens = {u: hub.user_token(u) for u in ("alice", "bob")}
    api = JobsAPI(hub, tokens["alice"])
    job = api.create(
        notebook="reports/nightly.ipynb",
        content=notebook("print('report ready')"),
        profile="cpu-small",
        schedule="0 2 * * *",
        name="nightly report",
    )
    assert api("POST", f"jobs/{job['id']}/runs").status_code == 201
    api.wait_runs(job["id"])
    runs = log_runs_through_the_hub(hub, tokens, (("alice", "alice"),))
    models = hub.service_url("mlflow") + "hubml/api/models/churn/"
    alice = {"Authorization": f"token {tokens['alice']}"}
    r = requests.post(
        models + "publish", json={"run_id": runs["alice"]}, headers=alice, timeout=300
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        models + "versions/1/request-promotion",
        json={"reason": "better recall"},
        headers=alice,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    hub.spawn("alice", {"profile": "cpu-small"}, token=tokens["alice"])
    hub.wait_ready("alice")

    # from the hub's home page, one link away (sign-in to the service needs no consent page)
    login(page, hub, "alice")
    page.goto(hub.at("/hub/home"))
    page.get_by_role("link", name=re.compile("Your schedules, recent runs, apps")).click()
    page.get_by_text("Signed in as alice").wait_for(timeout=60_000)
    assert page.url.startswith(hub.service_url("home"))
    server = page.locator("#servers tr[data-started]")
    expect(server).to_contain_text("CPU", timeout=30_000)
    first = server.locator("[data-role=cost]").inner_text()
    assert "$" in first
    expect(server.locator("[data-role=cost]")).not_to_have_text(first, timeout=30_000)  # it counts
    expect(page.locator("#runs")).to_contain_text("nightly report")
    expect(page.locator("#runs")).to_contain_text("succeeded")
    expect(page.locator("#approvals")).to_contain_text(
        "churn version 1 to @champion", timeout=30_000
    )
    expect(page.locator("#approvals")).to_contain_text("waiting for anyone but its author")
    assert page.locator("#approvals button", has_text="Approve").count() == 0  # not her own
    row = page.locator(f"tr[data-job='{job['id']}']")
    page.screenshot(path=str(artifacts / "home-page.png"), full_page=True)

    # pause, edit (a bad schedule is refused with the jobs service's reason), resume
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".paused")).to_have_text("Paused", timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").json()["paused"]
    page.once("dialog", lambda d: d.accept("every night"))
    row.get_by_role("button", name="Edit schedule").click()
    expect(page.locator("#said")).to_contain_text("nightly report: schedule:", timeout=30_000)
    page.once("dialog", lambda d: d.accept("30 3 * * 1"))
    row.get_by_role("button", name="Edit schedule").click()
    expect(row).to_contain_text("03:30", timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").json()["schedule"] == "30 3 * * 1"
    row.get_by_role("button", name="Resume").click()
    row.get_by_role("button", name="Pause").wait_for(timeout=30_000)
    assert not api("GET", f"jobs/{job['id']}").json()["paused"]

    # bob approves from his home page
    bob_context = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        bob = bob_context.new_page()
        bob.set_default_timeout(60_000)
        login(bob, hub, "bob")
        bob.goto(hub.service_url("home"))
        offer = bob.locator("#approvals tr[data-approval='churn version 1']")
        expect(offer).to_contain_text("alice")
        expect(offer).to_contain_text("better recall")
        expect(offer.locator(".pill.ok").first).to_be_visible()  # its gates, passed
        bob.screenshot(path=str(artifacts / "home-page-approver.png"), full_page=True)
        bob.once("dialog", lambda d: d.accept("checked the gates"))
        offer.get_by_role("button", name="Approve").click()
        bob.get_by_text("Nothing is waiting for your approval.").wait_for()
        # nothing of alice's is on bob's page
        assert "nightly report" not in bob.content()
    finally:
        bob_context.close()
    model = requests.get(models.rstrip("/"), headers=alice, timeout=60).json()
    assert model["aliases"]["champion"] == "1"
    page.reload()
    expect(page.locator("#approvals")).to_contain_text("approved by bob")

    # delete asks first; declining keeps the schedule, accepting removes it
    row = page.locator(f"tr[data-job='{job['id']}']")
    page.once("dialog", lambda d: d.dismiss())
    row.get_by_role("button", name="Delete").click()
    assert api("GET", f"jobs/{job['id']}").status_code == 200
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete").click()
    page.get_by_text("No schedules yet").wait_for(timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").status_code == 404
