"""In JupyterLab, the FeatureBrowser (from its launcher card) lists the seeded project, search
narrows it, a feature view shows its schema, owner, freshness, statistics and sample rows, and
"Insert code" adds a cell that, run, returns a DataFrame of the chosen features."""

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browserutil import login

pytestmark = pytest.mark.browser


def test_browse_search_open_and_insert_code_that_returns_the_features(hub_factory, page, artifacts):
    import requests

    hub = hub_factory({"features": {"enabled": True}})
    token = hub.user_token("alice")
    deadline = time.monotonic() + 90
    while True:
        r = requests.get(
            hub.service_url("features") + "api/projects",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        if r.ok and r.json()["ready"]:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.3)

    login(page, hub, "alice")
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)
    page.locator('.jp-LauncherCard[data-category="hubml"]', has_text="Browse features").click()
    browser = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .hubml-feature-browser")
    browser.wait_for(timeout=90_000)

    results = browser.locator(".hubml-feature-results select")
    expect(results.locator("option")).to_have_count(3, timeout=30_000)
    assert browser.get_by_text("3 feature view(s)").count() == 1
    search = browser.locator(".widget-text", has_text="Search").locator("input")
    search.fill("rating")
    search.press("Enter")
    expect(results.locator("option")).to_have_count(2, timeout=30_000)
    names = [n.replace("\xa0", " ") for n in results.locator("option").all_inner_texts()]
    assert [n.split(" [")[0] for n in names] == ["rides / driver_quality", "rides / rider_profile"]
    search.fill("conversion")
    search.press("Enter")
    expect(results.locator("option")).to_have_count(1, timeout=30_000)

    results.select_option(index=0)
    view = browser.locator(".hubml-feature-view")
    expect(view).to_contain_text("rides / driver_hourly_stats", timeout=30_000)
    schema = view.locator("table.hubml-schema")
    for feature in ("conv_rate", "acc_rate", "avg_daily_trips"):
        expect(schema).to_contain_text(feature)
    expect(schema).to_contain_text("Share of offers the driver converted to trips in the hour")
    expect(view).to_contain_text("Owner driver-ops@rides.example")
    expect(view.locator(".hubml-freshness")).to_contain_text("fresh")
    expect(view).to_contain_text("Statistics of 16,800 of 16,800 rows")
    assert view.locator("svg[aria-label=histogram]").count() == 3
    sample = view.locator(".hubml-sample table tr")
    expect(sample).to_have_count(11)  # a header and ten rows
    expect(browser.locator(".hubml-lineage")).to_contain_text("Runs that used it: 0")
    page.screenshot(path=str(artifacts / "feature-browser.png"), full_page=True)

    # two of its features, then "Insert code": a new cell below, not run
    features = browser.locator(".hubml-feature-pick select")
    features.select_option(["conv_rate", "avg_daily_trips"])
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    before = cells.count()
    browser.get_by_role("button", name="Insert code").click()
    expect(browser).to_contain_text("Inserted a cell below with 2 feature(s)", timeout=30_000)
    expect(cells).to_have_count(before + 1)
    inserted = page.locator(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell", has_text="get_historical_features"
    )
    expect(inserted).to_have_count(1)
    code = inserted.locator(".cm-content").inner_text()
    assert "driver_hourly_stats:conv_rate" in code and "driver_hourly_stats:avg_daily_trips" in code
    assert "driver_hourly_stats:acc_rate" not in code

    # run it: a DataFrame of the chosen features for real drivers
    inserted.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    table = inserted.locator(".jp-OutputArea-output table.dataframe")
    table.wait_for(timeout=120_000)
    header = table.locator("thead").inner_text()
    for column in ("driver_id", "event_timestamp", "conv_rate", "avg_daily_trips"):
        assert column in header, header
    assert table.locator("tbody tr").count() >= 1
    assert "acc_rate" not in header
    page.screenshot(path=str(artifacts / "feature-browser-inserted.png"), full_page=True)
