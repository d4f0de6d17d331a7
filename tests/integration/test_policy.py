"""Profiles' idle timeout and maximum runtime are enforced by the hubml-policy service."""

import time

import pytest

pytestmark = pytest.mark.integration


def profile(slug, idle, max_runtime, default=False):
    return {
        "slug": slug,
        "display_name": slug,
        "cpu": {"guarantee": 0.5, "limit": 1},
        "memory": {"guarantee": "512M", "limit": "1G"},
        "price_per_hour": 0.1,
        "image": "x",
        "idle_timeout": idle,
        "max_runtime": max_runtime,
        "default": default,
    }


def wait_stopped(hub, user, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not hub.api("GET", f"users/{user}").json()["servers"]:
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"{user}'s server still running after {timeout}s")


def test_idle_and_runtime_limits_stop_servers(hub_factory):
    hub = hub_factory(
        {
            "hub": {"policy_interval": 1},
            "profiles": [
                profile("short-idle", "3s", 0, default=True),
                profile("short-run", 0, "4s"),
                profile("no-limits", 0, 0),
            ],
        }
    )
    for user, slug in [("alice", "short-idle"), ("bob", "short-run"), ("carol", "no-limits")]:
        hub.ensure_user(user)
        hub.spawn(user, {"profile": slug})
        hub.wait_ready(user)
    wait_stopped(hub, "alice", 30)
    wait_stopped(hub, "bob", 30)
    assert hub.api("GET", "users/carol").json()["servers"][""]["ready"]
    log = hub.log()
    assert "stopping alice/: idle" in log and "short-idle's idle timeout of 3 s" in log
    assert "stopping bob/: ran" in log and "short-run's maximum runtime of 4 s" in log
