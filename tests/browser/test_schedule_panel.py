"""In a notebook, the schedule panel's "Run now" shows the run finishing and opens its output."""

import re

import pytest

from tests.browserutil import login
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
    login(page, hub, "alice")
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)
    page.goto(hub.at("/user/alice/lab/tree/train.ipynb"))
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=60_000)

    # a new cell below the notebook's own (not saved: the job runs the notebook as saved)
    page.locator(".jp-Notebook .jp-Cell .cm-content").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.insert_text("from hubml.widgets import SchedulePanel\nSchedulePanel()")
    page.keyboard.press("Shift+Enter")

    panel = page.locator(".hubml-schedule-panel")
    panel.wait_for(timeout=60_000)
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

    with page.context.expect_page() as new_page:
        done.locator("a.hubml-run-html").click()
    output = new_page.value
    output.wait_for_load_state()
    output.get_by_text("training for 5 epochs of adam").first.wait_for(timeout=60_000)
    output.screenshot(path=str(artifacts / "job-output-html.png"), full_page=True)
    assert re.search(r"/services/jobs/api/runs/[0-9a-f]+/output\.html$", output.url)
