"""The cost ledger against a real hub: a server, an app and a job run on three priced profiles
are charged price × wall-clock, across a hub restart, once each; and who may read what."""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.test_apps import GREETER, Apps
from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.integration

T4 = "Tesla T4"
PRICES = {"cpu-large": 0.3885, "gpu-t4": 0.54, "cpu-small": 0.0971}


def parse(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import free_port, start_hub

    data = tmp_path_factory.mktemp("cost")
    port = free_port()
    settings = {
        "jobs": {"enabled": True},
        "apps": {"enabled": True},
        "cost": {"poll_interval_s": 1},
        "gpus": {"inventory": [{"index": 0, "model": T4}]},
        "auth": {"groups": {"analysts": ["alice"]}},
        # servers and apps run on through the restart below
        "hub": {"stop_servers_on_exit": False},
    }
    hubs = [start_hub(data, settings, port=port)]
    try:
        JobsAPI(hubs[0], hubs[0].token).wait_up()
        yield hubs, (data, settings, port)
    finally:
        hubs[-1].stop_leaving_nothing("alice", ("", "app-meter"))


def me(hub, token, **params):
    r = requests.get(
        hub.service_url("cost") + "api/me",
        headers={"Authorization": f"token {token}"},
        params=params,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_server_app_and_job_run_are_charged_price_times_wall_clock_across_a_restart(hub):
    from tests.hubprocess import start_hub

    hubs, (data, settings, port) = hub
    first = hubs[0]
    alice = first.user_token("alice")
    jobs = JobsAPI(first, alice)

    # a server on cpu-large, an app on gpu-t4, a job run on cpu-small
    first.spawn("alice", {"profile": "cpu-large"}, token=alice)
    first.wait_ready("alice")
    apps = Apps(first, alice)
    r = apps(
        "POST",
        "apps",
        json={
            "name": "meter",
            "source": "app.py",
            "files": {"app.py": GREETER},
            "profile": "gpu-t4",
        },
    )
    assert r.status_code == 201, r.text
    job = jobs.create(
        notebook="sleep.ipynb",
        content=notebook("import time; time.sleep(3)"),
        profile="cpu-small",
        name="three seconds",
    )
    [run] = jobs.wait_runs(job["id"])
    assert run["status"] == "succeeded", run
    servers = first.api("GET", "users/alice").json()["servers"]
    started = {name: parse(servers[name]["started"]) for name in ("", "app-meter")}
    running = wait(lambda: len(me(first, alice)["running"]) == 2, 30, "both charged while running")
    assert running

    # the hub restarts while the server and the app run (SIGTERM; they are adopted)
    first.stop()
    hub_again = start_hub(data, settings, port=port, log_name="hub-1.log")
    hubs.append(hub_again)
    time.sleep(2)  # they keep running (and costing) meanwhile

    # stop both; the stop's moment is known to within this request
    before = time.time()
    r = hub_again.api("DELETE", "users/alice/server", token=alice)
    assert r.status_code in (202, 204), r.text
    wait(lambda: "" not in hub_again.api("GET", "users/alice").json()["servers"], 30, "server stop")
    after_server = time.time()
    apps_again = Apps(hub_again, alice)
    before_app = time.time()
    r = apps_again("POST", "apps/meter/stop")
    assert r.status_code == 200, r.text
    after_app = time.time()

    month = wait(
        lambda: (m := me(hub_again, alice)) and not m["running"] and m, 30, "charges closed"
    )
    by = {(i["kind"], i["profile"]): i for i in month["items"]}
    assert len(month["items"]) == 3, month["items"]  # once each, across the restart

    server = by[("server", "cpu-large")]
    assert parse(server["started_at"]) == pytest.approx(started[""], abs=0.01)
    ran = server["seconds"]
    assert before - started[""] - 1 <= ran <= after_server - started[""] + 1, (
        ran,
        before,
        after_server,
    )
    assert server["cost_usd"] == pytest.approx(ran / 3600 * PRICES["cpu-large"], rel=0.01)

    app = by[("app", "gpu-t4")]
    assert parse(app["started_at"]) == pytest.approx(started["app-meter"], abs=0.01)
    assert (
        before_app - started["app-meter"] - 1
        <= app["seconds"]
        <= after_app - started["app-meter"] + 1
    )
    assert app["cost_usd"] == pytest.approx(app["seconds"] / 3600 * PRICES["gpu-t4"], rel=0.01)

    job_charge = by[("job", "cpu-small")]
    assert job_charge["seconds"] == pytest.approx(run["duration_s"], abs=0.01)
    assert job_charge["cost_usd"] == pytest.approx(run["cost_usd"], rel=0.01)
    assert month["by_kind"]["job"] == pytest.approx(job_charge["cost_usd"], abs=1e-4)
    assert month["spent_usd"] == pytest.approx(sum(i["cost_usd"] for i in month["items"]), abs=1e-3)


def test_each_person_reads_their_own_spend_and_admins_everyones(hub):
    hubs, _ = hub
    h = hubs[-1]
    bob = h.user_token("bob")
    assert me(h, bob)["items"] == []  # nothing of alice's
    base = h.service_url("cost")
    for path in ("api/usage", "api/usage.csv", "metrics"):
        r = requests.get(base + path, headers={"Authorization": f"token {bob}"}, timeout=30)
        assert r.status_code == 403, (path, r.text)
    r = requests.get(base + "metrics", timeout=30)
    assert r.status_code == 403  # no token, no metrics

    everyone = requests.get(
        base + "api/usage", headers={"Authorization": f"token {h.token}"}, timeout=30
    )
    assert everyone.status_code == 200 and "alice" in everyone.json()["by_user"]
    assert everyone.json()["by_group"].get("analysts", 0) > 0
    csv = requests.get(
        base + "api/usage.csv", headers={"Authorization": f"token {h.token}"}, timeout=30
    )
    assert csv.status_code == 200 and csv.text.startswith("user,kind,what,profile")
    r = requests.get(
        base + "api/me",
        params={"month": "last"},
        headers={"Authorization": f"token {bob}"},
        timeout=30,
    )
    assert r.status_code == 400 and "YYYY-MM" in r.json()["message"]

    # Prometheus reads it with a token that may read metrics
    from prometheus_client.parser import text_string_to_metric_families

    # (an operator's scraper: a token narrowed to the cost service and read:metrics)
    r = h.api("POST", "users/operator", json={"admin": True})
    assert r.status_code in (201, 409), r.text
    r = h.api(
        "POST",
        "users/operator/tokens",
        json={"scopes": ["access:services!service=cost", "read:metrics"]},
    )
    assert r.status_code == 201, r.text
    metrics = requests.get(
        base + "metrics", headers={"Authorization": f"token {r.json()['token']}"}, timeout=30
    )
    assert metrics.status_code == 200, metrics.text
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    kinds = {
        s.labels["kind"] for s in families["hubml_cost_usd"].samples if s.labels["user"] == "alice"
    }
    assert kinds == {"server", "app", "job"}
