"""The jobs store on a real PostgreSQL: the once-only decisions hold there too, and the
service runs a job end to end with it."""

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from hubml.extensions.jobs.db import init_db, make_engine, runs, utcnow
from tests.jobsutil import JobsAPI, notebook
from tests.unit.test_jobs_logic import _Executor, add_job, scheduler_for

pytestmark = pytest.mark.postgres


def test_racing_schedulers_fire_a_slot_once_and_claim_a_run_once_on_postgresql(postgres, tmp_path):
    postgres.create_database("jobs_race")
    engine = make_engine(postgres.url("jobs_race"))
    init_db(engine)
    from hubml.extensions.jobs.scheduler import Scheduler

    first = scheduler_for(tmp_path, engine=engine)
    schedulers = [first] + [
        Scheduler(engine, first.settings, _Executor(), tmp_path) for _ in range(3)
    ]
    # a yearly schedule: only the one due slot can fire, whichever minute the threads run in
    # (every minute, a boundary passed between here and the race made one scheduler fire two)
    add_job(engine, schedule="0 0 1 1 *", next_run_at=utcnow() - dt.timedelta(seconds=1))
    barrier = threading.Barrier(len(schedulers))
    fired = []

    def fire(s):
        barrier.wait()
        fired.append(s.fire_due())

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fired) == [0, 0, 0, 1]
    with engine.connect() as conn:
        [run_id] = conn.execute(sa.select(runs.c.id)).scalars().all()

    # claiming: exactly one of several concurrent claimers moves it to running
    claimed = []

    def claim():
        barrier.wait()
        with engine.begin() as conn:
            claimed.append(
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id, runs.c.status == "queued")
                    .values(status="running")
                ).rowcount
            )

    threads = [threading.Thread(target=claim) for _ in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [0, 0, 0, 1]
    engine.dispose()


def test_jobs_service_on_postgresql_runs_a_notebook(hub_factory, postgres):
    postgres.create_database("jobs")
    hub = hub_factory({"jobs": {"enabled": True, "db_url": postgres.url("jobs")}})
    api = JobsAPI(hub, hub.user_token("alice"))
    api.wait_up()
    job = api.create(
        notebook="pg.ipynb",
        content=notebook("print(n * 2)", params="n = 1"),
        parameters={"n": 21},
        profile="cpu-small",
    )
    [run] = api.wait_runs(job["id"])
    assert run["status"] == "succeeded", run
    assert "42" in api("GET", f"runs/{run['id']}/log").text
    engine = sa.create_engine(postgres.url("jobs"))
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("select status from runs where id = :i"), {"i": run["id"]}
            ).scalar()
            == "succeeded"
        )
        assert conn.execute(sa.text("select owner from jobs")).scalar() == "alice"
    engine.dispose()
    assert not (hub.data_dir / "jobs" / "jobs.db").exists()  # nothing went to SQLite
