"""The selector tells alice her budget is 90 % spent, and her A100 start is refused in words."""

import os
import re

import pytest
from playwright.sync_api import expect

from tests.browserutil import login
from tests.integration.test_budgets import SETTINGS, spend

pytestmark = pytest.mark.browser


def test_the_selector_warns_at_80_percent_and_a_start_over_budget_says_why(
    hub_factory, tmp_path, page, artifacts
):
    from hubml.hub_config import accounts

    data = tmp_path / "budgets"
    if os.geteuid() == 0:
        accounts.ensure_account(
            accounts.PLATFORM_ACCOUNT,
            data / accounts.RUN_DIR,
            system=True,
            home=accounts.PLATFORM_HOME,
        )
    spend(data, "alice", 4.50)
    hub = hub_factory(SETTINGS, data_dir=data)
    login(page, hub, "alice")
    page.wait_for_url(re.compile(r".*/hub/spawn.*"))
    warning = page.locator(".hubml-budget-warning")
    expect(warning).to_contain_text("Your budget is 90% spent: $0.500 left of $5.00 this month.")
    page.screenshot(path=str(artifacts / "selector-budget-warning.png"), full_page=True)

    page.locator('.hubml-card[data-slug="gpu-a100"]').click()
    page.locator("#spawn_form button[type=submit]").click()
    expect(page.get_by_text(re.compile(r"This would cost up to \$29\.36"))).to_be_visible(
        timeout=60_000
    )
    assert "your budget has $0.500 left of $5.00 this month ($4.50 spent)" in page.content()
    page.screenshot(path=str(artifacts / "selector-budget-refused.png"), full_page=True)

    # the home page warns too, next to the month so far
    page.goto(hub.service_url("home"))
    expect(page.locator(".budget-warning")).to_contain_text("Your budget is 90% spent")
    expect(page.locator("p.month")).to_contain_text("This month so far: $4.50")
