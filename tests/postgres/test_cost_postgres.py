"""The cost ledger on a real PostgreSQL: a thing is charged once however many writers race to
record it, and the cost service keeps charges and budgets there when ``cost.db_url`` says so."""

import datetime as dt
import threading
import time

import pytest
import requests
import sqlalchemy as sa

from hubml.extensions.cost import ledger

pytestmark = pytest.mark.postgres


def test_racing_writers_open_and_close_a_charge_once_on_postgresql(postgres):
    postgres.create_database("cost_race")
    engine = ledger.open_ledger_at(postgres.url("cost_race"))
    start = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    writers = 4
    barrier = threading.Barrier(writers)
    opened, closed = [], []

    def write():
        barrier.wait()
        opened.append(
            ledger.open_charge(
                engine,
                "server",
                "alice/",
                user="alice",
                groups=["analysts"],
                profile="cpu-large",
                price_per_hour=0.3885,
                started_at=start,
            )
        )
        barrier.wait()
        closed.append(
            ledger.close_charge(engine, "server", "alice/", start + dt.timedelta(hours=2))
        )

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(opened) == [False] * (writers - 1) + [True]
    assert sorted(closed) == [False] * (writers - 1) + [True]
    # two hours at $0.3885/h, once
    assert ledger.spent(engine, "alice", start + dt.timedelta(days=1)) == pytest.approx(0.777)
    engine.dispose()


def test_cost_service_on_postgresql_charges_a_server_and_keeps_budgets_there(hub_factory, postgres):
    postgres.create_database("cost")
    url = postgres.url("cost")
    hub = hub_factory(
        {
            "cost": {"db_url": url, "poll_interval_s": 1, "budgets": {"users": {"alice": 5}}},
            "auth": {"groups": {"analysts": ["alice"]}},
        }
    )
    alice = hub.user_token("alice")
    base = hub.service_url("cost")
    r = hub.spawn("alice", {"profile": "cpu-large"}, token=alice)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    time.sleep(1)
    hub.stop_server("alice")

    def month():
        r = requests.get(base + "api/me", headers={"Authorization": f"token {alice}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    deadline = time.monotonic() + 30
    while (m := month())["running"] or not m["items"]:
        assert time.monotonic() < deadline, m
        time.sleep(0.3)
    [item] = m["items"]
    assert (item["kind"], item["profile"]) == ("server", "cpu-large")
    assert item["cost_usd"] == pytest.approx(item["seconds"] / 3600 * 0.3885, rel=0.01)

    admin = {"Authorization": f"token {hub.token}"}
    r = requests.put(base + "api/budgets/user/alice", json={"usd": 40}, headers=admin, timeout=30)
    assert r.status_code == 200 and r.json()["users"] == {"alice": 40}, r.text

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text('select "user", profile, ended_at from charges')).all()
        assert [(u, p) for u, p, _ in rows] == [("alice", "cpu-large")]
        assert rows[0][2] is not None  # closed
        assert conn.execute(sa.text("select usd from budgets where name = 'alice'")).scalar() == 40
    engine.dispose()
    assert not (hub.data_dir / "cost" / "ledger.db").exists()  # nothing went to SQLite
