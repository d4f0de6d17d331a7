"""cost.when_exhausted: stop: what runs on a budget that an admin lowered below what was spent
stops after the grace time, and the person is told meanwhile."""

from __future__ import annotations

import os
import time

import pytest
import requests

from tests.integration.test_budgets import SETTINGS, spend

pytestmark = pytest.mark.integration


def test_servers_on_a_spent_budget_stop_after_the_grace_time(tmp_path):
    from hubml.hub_config import accounts
    from tests.hubprocess import start_hub

    data = tmp_path / "exhausted"
    if os.geteuid() == 0:
        accounts.ensure_account(
            accounts.PLATFORM_ACCOUNT,
            data / accounts.RUN_DIR,
            system=True,
            home=accounts.PLATFORM_HOME,
        )
    spend(data, "alice", 4.50)
    settings = {
        **SETTINGS,
        "jobs": {"enabled": False},
        "cost": {**SETTINGS["cost"], "when_exhausted": "stop", "exhausted_grace_s": 3},
    }
    hub = start_hub(data, settings)
    try:
        alice = hub.user_token("alice")
        r = hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("alice")
        base = hub.service_url("cost")
        r = requests.put(
            base + "api/budgets/user/alice",
            json={"usd": 1},
            headers={"Authorization": f"token {hub.token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        lowered = time.monotonic()
        me = requests.get(base + "api/me", headers={"Authorization": f"token {alice}"}, timeout=30)
        assert me.json()["budget"]["warnings"] == [
            "Your budget of $1.00 this month is spent ($4.50). What runs on it stops soon."
        ]
        deadline = time.monotonic() + 30
        while "" in (hub.api("GET", "users/alice").json().get("servers") or {}):
            assert time.monotonic() < deadline, "the server on a spent budget kept running"
            time.sleep(0.3)
        assert time.monotonic() - lowered >= 3  # not before the grace time
        assert "cost: the user budget of alice is spent" in hub.log()
    finally:
        hub.stop()
