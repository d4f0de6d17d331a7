"""The mlflow service under faults: its MLflow server killed alone, its store removed.

A real hub with its mlflow service; the faults are what an operator meets: ``kill -9`` of the
``mlflow server`` process (its uvicorn worker used to stay behind holding the port) and a
SQLite store that disappeared (MLflow used to create an empty one in its place)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil
import pytest
import requests

from tests.integration.test_tracking_service import wait_for_mlflow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(tmp_path_factory.mktemp("mlflow-faults"), {"tracking": {"enabled": True}})
    try:
        wait_for_mlflow(hub, hub.token)
        hub.alice = hub.user_token("alice")
        yield hub
    finally:
        hub.stop()


def mlflow_server(hub) -> psutil.Process:
    """This hub's ``mlflow server`` process (the leader of its process group): a cold start's
    ``python -m mlflow server``, or the warm spare that became the server (``hubml-mlflow``;
    a spare still waiting is ``hubml-mlspare``, and not a server)."""
    db = str(hub.data_dir / "mlflow")
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = p.info["cmdline"] or []
        if cmd[1:4] == ["-m", "mlflow", "server"] or p.info["name"] == "hubml-mlflow":
            try:
                if db in p.environ().get("MLFLOW_BACKEND_STORE_URI", ""):
                    return p
            except psutil.Error:
                continue
    raise AssertionError("no mlflow server process of this hub")


def search(hub):
    return requests.post(
        hub.at("/services/mlflow/api/2.0/mlflow/experiments/search"),
        json={"max_results": 5},
        headers={"Authorization": f"token {hub.alice}"},
        timeout=30,
    )


def statuses_until_back(hub, timeout=30) -> list[int]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = search(hub)
        seen.append(r.status_code)
        if r.status_code == 200 and 503 in seen:
            return seen
        if r.status_code == 503:
            assert r.headers.get("Retry-After") or "store" in r.json()["message"], r.text
        time.sleep(0.1)
    raise AssertionError(f"not back in {timeout} s: {seen[-20:]}")


def test_mlflow_server_killed_alone_comes_back_without_orphans_and_never_a_500(hub):
    r = requests.post(
        hub.at("/services/mlflow/api/2.0/mlflow/experiments/create"),
        json={"name": "survives"},
        headers={"Authorization": f"token {hub.alice}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    leader = mlflow_server(hub)
    group = os.getpgid(leader.pid)
    assert group == leader.pid  # a process group of its own
    members = [p for p in psutil.process_iter() if _pgid(p) == group]
    # whoever listens on the server's port (its uvicorn worker, or the server itself when a
    # warm spare serves in its own process) is of that group, and dies with it
    listening = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == hub_mlflow_port(hub)
    }
    assert listening and listening <= {p.pid for p in members}, (listening, members)

    killed = time.monotonic()
    leader.send_signal(signal.SIGKILL)
    seen = statuses_until_back(hub)

    assert time.monotonic() - killed < 15, seen
    assert set(seen) <= {200, 503}, seen  # "restarting" answers, never a 500
    assert not [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    names = [e["name"] for e in search(hub).json()["experiments"]]
    assert "survives" in names


def hub_mlflow_port(hub) -> int:
    """The private port of this hub's MLflow server (on its ``--port`` argument)."""
    leader = mlflow_server(hub)
    cmd = leader.cmdline()
    return int(cmd[cmd.index("--port") + 1])


def spare_of(hub) -> psutil.Process | None:
    db = str(hub.data_dir / "mlflow")
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "hubml-mlspare":
            with contextlib.suppress(psutil.Error):
                if db in p.environ().get("MLFLOW_BACKEND_STORE_URI", ""):
                    return p
    return None


def test_a_warm_spare_takes_over_from_a_killed_server(hub):
    """While the server runs, a pre-imported spare waits; killing the server makes the spare
    the server (no cold start), and a new spare follows later."""
    deadline = time.monotonic() + 90
    while (spare := spare_of(hub)) is None:
        assert time.monotonic() < deadline, "no warm spare"
        time.sleep(0.5)
    leader = mlflow_server(hub)
    assert spare.pid != leader.pid and os.getpgid(spare.pid) == spare.pid
    killed = time.monotonic()
    leader.send_signal(signal.SIGKILL)
    seen = statuses_until_back(hub)
    assert time.monotonic() - killed < 10, seen  # the bound (a ready spare: ~0.4 s)
    assert set(seen) <= {200, 503}, seen
    server = mlflow_server(hub)
    assert server.pid == spare.pid  # the spare is the server now
    # ... serving in its own process (no second MLflow import in a uvicorn worker), still the
    # front door's only: a request to its private port without the start's secret is refused
    assert not server.children(), server.children()
    assert "the warm spare serves MLflow in its own process" in hub.log()
    direct = requests.get(
        f"http://127.0.0.1:{hub_mlflow_port(hub)}/services/mlflow/api/2.0/mlflow/experiments/search",
        timeout=10,
    )
    assert direct.status_code == 403, direct.text
    deadline = time.monotonic() + 90
    while (again := spare_of(hub)) is None:
        assert time.monotonic() < deadline, "no new spare after the take-over"
        time.sleep(0.5)
    assert again.pid != spare.pid


def test_a_removed_store_is_refused_not_replaced_by_an_empty_one(hub):
    db = hub.data_dir / "mlflow" / "mlflow.db"
    marker = hub.data_dir / "mlflow" / "store.json"
    deadline = time.monotonic() + 10
    while not marker.exists():  # the service notes the store once MLflow has made its tables
        assert time.monotonic() < deadline, "no store marker"
        time.sleep(0.2)
    aside = db.with_name("mlflow.db.aside")
    os.rename(db, aside)
    try:
        mlflow_server(hub).send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            r = search(hub)
            if r.status_code == 503 and "store is unavailable" in r.json()["message"]:
                break
            assert r.status_code in (200, 503) and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert str(hub.data_dir) not in r.text  # no internal path in the answer
        health = requests.get(hub.at("/services/mlflow/hubml/health"), timeout=10).json()
        assert health["mlflow"] == "store unavailable"
        time.sleep(2)  # several supervisor ticks: it never starts MLflow on an empty store
        assert not db.exists()
        with pytest.raises(AssertionError):
            mlflow_server(hub)
    finally:
        os.rename(aside, db)
    # restored: the service starts MLflow again on it, and nothing is lost
    seen = statuses_until_back(hub)
    assert set(seen) <= {200, 503}, seen
    assert "survives" in [e["name"] for e in search(hub).json()["experiments"]]


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except OSError:
        return None
