"""``try_app`` in a notebook shows the demo inside the notebook, and it answers there."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_experiment_panel import open_notebook, run_cell

pytestmark = pytest.mark.browser


def test_try_app_shows_a_demo_that_answers_inside_the_notebook(hub_factory, page, artifacts):
    hub = hub_factory()
    open_notebook(page, hub, "alice")
    run_cell(
        page,
        "from hubml.widgets import try_app\n"
        "demo = try_app(lambda text: text[::-1], inputs='text', outputs='text')",
    )
    frame_element = page.locator(".jp-OutputArea-output iframe")
    frame_element.wait_for(timeout=90_000)
    assert re.search(r"/user/alice/hubml/apps/[\w-]+/$", frame_element.get_attribute("src"))
    demo = page.frame_locator(".jp-OutputArea-output iframe")
    # the frame shows Gradio itself, not the browser's "refused to connect" page
    box = demo.locator("textarea").first
    box.wait_for(timeout=60_000)
    box.fill("hubml")
    demo.get_by_role("button", name="Submit").click()
    expect(demo.locator("textarea").nth(1)).to_have_value("lmbuh", timeout=60_000)
    page.screenshot(path=str(artifacts / "inline-demo.png"), full_page=True)
