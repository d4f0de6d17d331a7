"""A person's first minute: log in, read the selector, pick cpu-small, run a cell in JupyterLab."""

import re

import pytest

from tests.browserutil import login

pytestmark = pytest.mark.browser


def test_login_select_cpu_small_and_run_a_cell(hub_factory, page, artifacts):
    hub = hub_factory(
        {
            "auth": {"groups": {"gpu-users": ["alice"]}},
            "gpus": {
                "inventory": [
                    {"index": 0, "model": "NVIDIA A100-SXM4-40GB"},
                    {"index": 1, "model": "NVIDIA A100-SXM4-40GB"},
                ]
            },
        }
    )
    login(page, hub, "alice")
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))

    cards = page.locator(".hubml-card")
    assert cards.count() == 6
    a100 = page.locator('.hubml-card[data-slug="gpu-a100"]')
    assert "$3.67/h" in a100.inner_text()
    assert "8 h ≈ $29.36" in a100.inner_text()
    assert "2 of 2 A100 free" in a100.inner_text()
    h100 = page.locator('.hubml-card[data-slug="gpu-h100"]')
    assert "Unavailable on this host: no H100 GPU" in h100.inner_text()
    assert page.locator('input[value="gpu-h100"]').is_disabled()

    # the session-length picker re-estimates every card, never past a profile's own limit
    page.select_option("#hubml-hours", "4")
    assert "4 h ≈ $14.68" in a100.inner_text()
    offered = page.locator("#hubml-hours option").all_inner_texts()
    assert offered == ["1 h", "4 h", "8 h", "12 h"], offered  # the longest session is 12 h
    page.select_option("#hubml-hours", "12")
    assert "8 h (its limit) ≈ $29.36" in a100.inner_text()
    page.screenshot(path=str(artifacts / "selector.png"), full_page=True)

    # on a small laptop screen Start is on screen without scrolling, and says what it starts
    page.set_viewport_size({"width": 1280, "height": 720})
    page.evaluate("window.scrollTo(0, 0)")
    start = page.locator("#spawn_form button[type=submit]")
    box = start.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= 720, box
    assert start.inner_text() == "Start Small CPU · $0.097/h", start.inner_text()
    page.screenshot(path=str(artifacts / "selector-1280x720.png"))
    page.set_viewport_size({"width": 1366, "height": 900})

    # keyboard only: focus the selected card's radio and move with the arrow keys
    page.focus('input[value="cpu-small"]')
    page.keyboard.press("ArrowDown")
    assert page.locator('input[value="cpu-large"]').is_checked()
    page.keyboard.press("ArrowUp")
    assert page.locator('input[value="cpu-small"]').is_checked()
    page.keyboard.press("Enter")  # submits the spawn form

    page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    editor.click()
    page.keyboard.type('import os; print("HUBML_PROFILE=" + os.environ["HUBML_PROFILE"])')
    # a cell run before the kernel has connected is dropped: wait for it to report idle
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=60_000)
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output", has_text="HUBML_PROFILE=cpu-small")
    try:
        output.wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(artifacts / "jupyterlab-cell.png"), full_page=True)
    page.screenshot(path=str(artifacts / "jupyterlab.png"), full_page=True)

    # the hub's home page says what the server runs on and counts what it has cost so far
    page.goto(hub.at("/hub/home"))
    row = page.locator(".hubml-running-row")
    row.wait_for()
    assert "Small CPU" in row.inner_text() and "$0.097/h" in row.inner_text()
    assert "No GPU" in row.inner_text()
    cost = row.locator("[data-role=cost]")
    first = cost.inner_text()
    assert re.fullmatch(r"\$\d+\.\d{4}", first), first
    # $0.097/h moves the fourth decimal every ~4 s
    page.wait_for_function(
        "([el, was]) => el.textContent !== was", arg=[cost.element_handle(), first], timeout=15_000
    )
    page.screenshot(path=str(artifacts / "hub-home.png"), full_page=True)
