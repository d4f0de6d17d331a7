"""In a notebook, the schedule panel's "Run now" shows the run finishing and opens its output."""

import datetime as dt
import re
import time

import pytest
from playwright.sync_api import expect

from tests.browserutil import PUBLIC_HOSTS, login
from tests.jobsutil import JobsAPI, write_notebook

pytestmark = pytest.mark.browser


def test_run_now_from_the_panel_and_open_the_output(hub_factory, page, artifacts):
    hub = hub_factory({"jobs": {"enabled": True}})
    JobsAPI(hub, hub.token).wait_up()
    write_notebook(
        hub.data_dir / "homes" / "alice",
        "train.ipynb",
        "print(f'training for {epochs} epochs of {optimizer}')",
        params="epochs = 3\noptimizer = 'adam'",
    )
    # a new cell below the notebook's own (not saved: the job runs the notebook as saved)
    panel = open_panel(page, hub, "alice", "train.ipynb")
    epochs = panel.locator(".widget-inline-hbox", has_text="epochs (int)").locator("input")
    epochs.wait_for(timeout=30_000)
    assert (
        panel.locator("input").first.input_value() == "train.ipynb"
    )  # path from the server extension
    assert epochs.input_value() == "3"  # the notebook's default, as a typed input
    epochs.fill("5")
    epochs.press("Tab")
    panel.get_by_text(re.compile(r"≈ \$\d+\.\d+ per run")).wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "schedule-panel.png"), full_page=True)
    panel.get_by_role("button", name="Run now").click()
    done = panel.locator("tr.hubml-run-row[data-status=succeeded]")
    done.wait_for(timeout=90_000)
    page.screenshot(path=str(artifacts / "schedule-panel-done.png"), full_page=True)

    # the output opens with public hosts unreachable, and asks none of them for anything
    outside = []

    def block(route):
        outside.append(route.request.url)
        route.abort()

    page.context.route(PUBLIC_HOSTS, block)
    with page.context.expect_page() as new_page:
        done.locator("a.hubml-run-html").click()
    output = new_page.value
    output.wait_for_load_state("networkidle")
    output.get_by_text("training for 5 epochs of adam").first.wait_for(timeout=60_000)
    assert outside == [], outside
    output.screenshot(path=str(artifacts / "job-output-html.png"), full_page=True)
    assert re.search(r"/services/jobs/api/runs/[0-9a-f]+/output\.html$", output.url)


def open_panel(page, hub, user, notebook_name):
    login(page, hub, user)
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=90_000)
    page.goto(hub.at(f"/user/{user}/lab/tree/{notebook_name}"))
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell .cm-content").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below the notebook's own
    page.keyboard.press("Enter")
    page.keyboard.insert_text("from hubml.widgets import SchedulePanel\nSchedulePanel()")
    page.keyboard.press("Shift+Enter")
    panel = page.locator(".hubml-schedule-panel")
    panel.wait_for(timeout=60_000)
    return panel


def test_a_schedule_made_in_the_panel_is_managed_on_the_jobs_page(hub_factory, page, artifacts):
    hub = hub_factory({"jobs": {"enabled": True}})
    JobsAPI(hub, hub.token).wait_up()
    write_notebook(hub.data_dir / "homes" / "alice", "nightly.ipynb", "print('ok')")
    panel = open_panel(page, hub, "alice", "nightly.ipynb")
    panel.locator(".widget-dropdown", has_text="Schedule").locator("select").select_option(
        label="Custom cron…"
    )
    panel.locator(".widget-text", has_text="Cron").locator("input").fill("* * * * *")
    panel.get_by_role("button", name="Schedule").click()
    panel.get_by_text(re.compile(r"Scheduled: ")).wait_for(timeout=60_000)

    api = JobsAPI(hub, hub.user_token("alice"))
    (job,) = api("GET", "jobs").json()["jobs"]
    assert job["schedule"] == "* * * * *" and not job["paused"]

    # the panel lists its notebook's schedules, also in a new panel, and pauses and resumes them
    page.locator(".jp-Notebook .jp-Cell .cm-content").last.click()
    page.keyboard.insert_text("\nSchedulePanel()")
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".hubml-schedule-panel")).to_have_count(2, timeout=60_000)
    fresh = page.locator(".hubml-schedule-panel").nth(1)
    expect(fresh.locator(".hubml-schedule-row")).to_contain_text("Every minute", timeout=60_000)
    fresh.locator(".hubml-schedule-toggle", has_text="Pause").click()
    expect(fresh.locator(".hubml-schedule-row")).to_contain_text("paused", timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").json()["paused"]
    fresh.locator(".hubml-schedule-toggle", has_text="Resume").click()
    fresh.locator(".hubml-schedule-toggle", has_text="Pause").wait_for(timeout=30_000)
    assert not api("GET", f"jobs/{job['id']}").json()["paused"]

    page.goto(hub.service_url("jobs"))
    row = page.locator(f"tr[data-job='{job['id']}']")
    row.wait_for(timeout=60_000)
    assert "nightly.ipynb" in row.inner_text()
    page.screenshot(path=str(artifacts / "jobs-page.png"), full_page=True)

    # pause: the row says so, and no run fires at the next slot
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".paused")).to_have_text("Paused", timeout=30_000)
    paused = api("GET", f"jobs/{job['id']}").json()
    assert paused["paused"] and paused["next_run_at"] is None
    before = {r["id"] for r in api.runs(job["id"])}
    now = dt.datetime.now(dt.UTC)
    next_slot = (now + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    time.sleep((next_slot - now).total_seconds() + 5)  # absence: the slot must pass
    assert {r["id"] for r in api.runs(job["id"])} == before

    # edit: a bad schedule is refused with the service's reason, a good one is kept
    row.locator("input[name=schedule]").fill("every night")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#said")).to_contain_text(
        "nightly: schedule: 'every night' is not a 5-field cron expression", timeout=30_000
    )
    assert page.locator("#said").get_attribute("class") == "error"
    row.locator("input[name=schedule]").fill("0 5 * * *")
    row.get_by_role("button", name="Save").click()
    expect(row.locator("input[name=schedule]")).to_have_value("0 5 * * *", timeout=30_000)
    row.locator("td").nth(1).filter(has_text="05:00").wait_for(timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").json()["schedule"] == "0 5 * * *"

    row.get_by_role("button", name="Resume").click()
    row.get_by_role("button", name="Pause").wait_for(timeout=30_000)
    resumed = api("GET", f"jobs/{job['id']}").json()
    assert not resumed["paused"] and resumed["next_run_at"]

    # delete asks first; declining keeps it, accepting removes it
    page.once("dialog", lambda d: d.dismiss())
    row.get_by_role("button", name="Delete").click()
    assert api("GET", f"jobs/{job['id']}").status_code == 200
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete").click()
    page.get_by_text("No schedules yet").wait_for(timeout=30_000)
    assert api("GET", f"jobs/{job['id']}").status_code == 404
