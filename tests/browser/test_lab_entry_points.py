"""hubml where people look in JupyterLab: the launcher opens each panel with no typed import,
the status bar says what the server runs on and counts what it has cost, and a cell's context
menu makes it the notebook's parameters cell."""

import json
import re
import time

import pytest

from tests.browserutil import login

pytestmark = pytest.mark.browser

CARDS = {
    "Experiments": ".hubml-experiment-panel",
    "Publish a model": ".hubml-publish-panel",
    "Schedule this notebook": ".hubml-schedule-panel",
    "Share an app": ".hubml-apps-panel",
    "Browse features": ".hubml-feature-browser",
}


def test_launcher_opens_each_panel_and_the_status_bar_counts_the_cost(hub_factory, page, artifacts):
    hub = hub_factory(
        {
            "tracking": {"enabled": True},
            "jobs": {"enabled": True},
            "apps": {"enabled": True},
            "features": {"enabled": True},
        }
    )
    login(page, hub, "alice")
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)

    # the status bar: the profile, the price, and the cost so far, which grows
    status = page.locator(".hubml-statusbar")
    status.wait_for()
    text = status.inner_text()
    assert re.fullmatch(r"Small CPU · \$0\.097/h · \$0\.\d{4} so far \(\d+ min\)", text), text
    first = float(status.get_attribute("data-cost"))
    page.wait_for_function(
        "([el, was]) => parseFloat(el.dataset.cost) > was",
        arg=[status.element_handle(), first],
        timeout=15_000,
    )

    # the launcher's hubml section: one card per panel
    section = page.locator('.jp-LauncherCard[data-category="hubml"]')
    section.first.wait_for()
    labels = section.locator(".jp-LauncherCard-label").all_inner_texts()
    assert sorted(labels) == sorted(CARDS), labels
    page.screenshot(path=str(artifacts / "lab-launcher-hubml.png"), full_page=True)

    for label, panel in CARDS.items():
        # each card opens a new notebook whose first cell runs the panel
        page.locator('.jp-LauncherCard[data-category="hubml"]:visible', has_text=label).click()
        shown = page.locator(f".jp-NotebookPanel:not(.lm-mod-hidden) {panel}")
        shown.wait_for(timeout=90_000)
        cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first
        assert "from hubml.widgets import" in cell.inner_text()
        if label == "Experiments":
            page.screenshot(path=str(artifacts / "lab-launcher-panel.png"), full_page=True)
        page.locator(".lm-TabBar-addButton:visible").first.click()  # a new launcher tab
        page.locator('.jp-LauncherCard[data-category="hubml"]:visible').first.wait_for()

    # the hubml menu opens the panels too
    page.locator(".lm-MenuBar-itemLabel", has_text="hubml").click()
    items = page.locator(".lm-Menu-itemLabel").all_inner_texts()
    assert [i for i in items if "(in this notebook)" in i] == [
        f"{label} (in this notebook)" for label in CARDS
    ], items
    # and the home page, in a tab of its own (another origin)
    with page.context.expect_page() as opened:
        page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text="Open Your hubml Home").click()
    home_tab = opened.value
    home_tab.get_by_text("Signed in as alice").wait_for(timeout=60_000)
    assert home_tab.url.startswith(hub.service_url("home"))
    home_tab.close()
    # hubml's JupyterLab settings: no news or update prompt (they would fetch from jupyter.org)
    assert not page.get_by_text("notified about official Jupyter news").count()

    # one click makes a cell the parameters cell jobs set values in (saved in the notebook)
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="Untitled").last
    name = tab.locator(".lm-TabBar-tabLabel").inner_text().strip()
    tab.click()
    shown = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    shown.locator(".jp-Cell .jp-InputPrompt").first.click(button="right")
    page.locator(".lm-Menu-itemLabel", has_text="Make This the Parameters Cell").click()
    shown.locator(".jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Control+s")
    page.get_by_role("button", name="Rename and Save").click()  # JupyterLab's first-save prompt
    home = hub.data_dir / "homes" / "alice"
    deadline = time.monotonic() + 30
    cells = []
    while True:
        # (jupyter_server's "atomic" save writes the file in place, after a backup: it can be
        # read empty or half written while the save runs)
        try:
            cells = json.loads((home / name).read_text())["cells"]
        except (FileNotFoundError, ValueError):
            cells = []
        if cells and "parameters" in cells[0].get("metadata", {}).get("tags", []):
            break
        assert time.monotonic() < deadline, [c.get("metadata") for c in cells]
        time.sleep(0.3)
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells) == 1
