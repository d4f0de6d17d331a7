"""Budgets against a real hub: a start its budget cannot pay for is refused in words, a cheap
one goes through, and a scheduled run over budget is recorded as skipped, saying why."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-40GB"
SMALL_CPU = {
    "slug": "cpu-small",
    "display_name": "Small CPU",
    "cpu": {"guarantee": 0.5, "limit": 2},
    "memory": {"guarantee": "1G", "limit": "8G"},
    "price_per_hour": 0.0971,
    "image": "hubml/singleuser-cpu:0.1.0",
    "max_runtime": "4h",  # at most $0.39 a session: fits in what alice has left
    "default": True,
}
A100_PROFILE = {
    "slug": "gpu-a100",
    "display_name": "NVIDIA A100 40GB",
    "cpu": {"guarantee": 4, "limit": 12},
    "memory": {"guarantee": "32G", "limit": "85G"},
    "gpu": {"model": "A100", "count": 1},
    "price_per_hour": 3.67,
    "image": "hubml/singleuser-gpu:0.1.0",
    "max_runtime": "8h",
    "allowed_groups": ["gpu-users"],
}
SETTINGS = {
    "jobs": {"enabled": True},
    "cost": {"budgets": {"users": {"alice": 5}}},
    "auth": {"groups": {"gpu-users": ["alice"]}, "admin_users": ["admin"]},
    "gpus": {"inventory": [{"index": 0, "model": A100}]},
    "profiles": [SMALL_CPU, A100_PROFILE],
}


def spend(data_dir, user: str, usd: float) -> None:
    """``usd`` already spent by ``user`` this month: a charge in the ledger the hub will open
    (made before it starts, owned by the account the cost service runs as)."""
    from hubml.extensions.cost import ledger
    from hubml.hub_config import accounts

    path = data_dir / "cost" / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = ledger.open_ledger_at(f"sqlite:///{path}")
    end = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    start = max(end - dt.timedelta(hours=1), ledger.month_start(end))
    hours = (end - start).total_seconds() / 3600
    ledger.open_charge(
        engine,
        "server",
        f"{user}/@earlier",
        user=user,
        profile="gpu-a100",
        price_per_hour=usd / hours,
        started_at=start,
    )
    ledger.close_charge(engine, "server", f"{user}/@earlier", end)
    engine.dispose()
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam(accounts.PLATFORM_ACCOUNT)
        for f in path.parent.iterdir():
            os.chown(f, account.pw_uid, account.pw_gid)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hubml.hub_config import accounts
    from tests.hubprocess import start_hub

    data = tmp_path_factory.mktemp("budgets")
    if os.geteuid() == 0:  # the account the cost service runs as, made as the hub would
        accounts.ensure_account(
            accounts.PLATFORM_ACCOUNT,
            data / accounts.RUN_DIR,
            system=True,
            home=accounts.PLATFORM_HOME,
        )
    spend(data, "alice", 4.50)
    hub = start_hub(data, SETTINGS)
    try:
        JobsAPI(hub, hub.token).wait_up()
        yield hub
    finally:
        hub.stop()


def test_a_spawn_over_budget_is_refused_in_words_and_a_cheap_one_goes_through(hub):
    alice = hub.user_token("alice")
    r = hub.spawn("alice", {"profile": "gpu-a100"}, token=alice, wait=False)
    assert r.status_code == 403, r.text
    assert r.json()["message"] == (
        "This would cost up to $29.36 (NVIDIA A100 40GB at $3.67/h for its 8 h limit), and your "
        "budget has $0.500 left of $5.00 this month ($4.50 spent). Choose a cheaper profile, or ask "
        "admin to raise the budget."
    )
    # nothing was reserved for it: the GPU is free
    assert "" not in hub.api("GET", "users/alice").json()["servers"]
    r = hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    hub.stop_server("alice")
    # bob has no budget: nothing holds him back
    hub.ensure_user("bob")


def test_a_scheduled_run_over_budget_is_skipped_saying_why(hub):
    jobs = JobsAPI(hub, hub.user_token("alice"))
    job = jobs.create(
        notebook="train.ipynb",
        content=notebook("print('trained')"),
        profile="gpu-a100",
        schedule="* * * * *",
        timeout_s=3600,
        name="nightly training",
    )
    try:
        deadline = time.monotonic() + 100
        while True:
            runs = jobs.runs(job["id"])
            if runs and runs[0]["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.5)
        [run] = runs
        assert run["trigger"] == "schedule" and run["status"] == "skipped", run
        assert run["error"].startswith(
            "skipped: This would cost up to $3.67 (NVIDIA A100 40GB at $3.67/h for its 1 h timeout)"
        )
        assert "$0.500 left of $5.00" in run["error"] and run["cost_usd"] in (0, None)
    finally:
        jobs("DELETE", f"jobs/{job['id']}")


def test_admins_change_a_budget_at_run_time_and_it_holds_at_once(hub):
    import requests

    base = hub.service_url("cost") + "api/budgets"
    alice = hub.user_token("alice")
    r = requests.put(
        base + "/user/alice",
        json={"usd": 100},
        headers={"Authorization": f"token {alice}"},
        timeout=30,
    )
    assert r.status_code == 403, r.text  # not hers to raise
    admin = {"Authorization": f"token {hub.token}"}
    r = requests.put(base + "/user/alice", json={"usd": -1}, headers=admin, timeout=30)
    assert r.status_code == 400 and r.json()["message"].startswith("usd:"), r.text
    r = requests.put(base + "/user/alice", json={"usd": 40}, headers=admin, timeout=30)
    assert r.status_code == 200 and r.json()["users"] == {"alice": 40}, r.text
    # $35.50 left now: the A100's $29.36 fits
    r = hub.spawn("alice", {"profile": "gpu-a100"}, token=alice)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    hub.stop_server("alice")
    # no budget at all (null), over the settings' $5
    r = requests.put(base + "/user/alice", json={"usd": None}, headers=admin, timeout=30)
    assert r.status_code == 200 and r.json()["users"] == {}, r.text
