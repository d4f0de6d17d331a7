"""Jobs without servers: notebook rules, cron wording, catch-up policy, DB-decided claims."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.userfiles import clean_path
from hubml.extensions.jobs import cron
from hubml.extensions.jobs.db import init_db, jobs, make_engine, runs, utcnow
from hubml.extensions.jobs.notebooks import (
    NotebookError,
    check_parameters,
    declared_parameters,
    notebook_bytes,
    parse_notebook,
)
from hubml.extensions.jobs.scheduler import Scheduler
from hubml.hub_config.settings import load_settings


def params_nb(source: str) -> dict:
    return {
        "cells": [{"cell_type": "code", "source": source, "metadata": {"tags": ["parameters"]}}],
        "nbformat": 4,
    }


def test_parameters_cell_declares_names_types_and_defaults():
    declared = declared_parameters(
        params_nb(
            "epochs = 3\nlr = 0.01\nname = 'run'\nuse_gpu = False\n"
            "layers = [64, 32]\nseed: int = None\nhelper = len('x')\n"
        )
    )
    assert declared == {
        "epochs": {"type": "int", "default": 3},
        "lr": {"type": "float", "default": 0.01},
        "name": {"type": "str", "default": "run"},
        "use_gpu": {"type": "bool", "default": False},
        "layers": {"type": "list", "default": [64, 32]},
        "seed": {"type": "int", "default": None},
        "helper": {"type": "any", "default": None},
    }
    assert (
        declared_parameters({"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}}]})
        == {}
    )


def test_parameter_values_are_checked_against_the_declared_types():
    declared = declared_parameters(params_nb("epochs = 3\nlr = 0.01\nuse_gpu = False"))
    assert check_parameters({"epochs": 5, "lr": 1, "use_gpu": True}, declared) == {
        "epochs": 5,
        "lr": 1,
        "use_gpu": True,
    }
    with pytest.raises(NotebookError, match=r"epochs must be int .*got bool True"):
        check_parameters({"epochs": True}, declared)
    with pytest.raises(NotebookError, match=r"lr must be float"):
        check_parameters({"lr": "fast"}, declared)
    with pytest.raises(
        NotebookError,
        match=r"unknown parameter\(s\) batch; the notebook declares epochs \(int\), lr \(float\), use_gpu \(bool\)",
    ):
        check_parameters({"batch": 32}, declared)
    with pytest.raises(NotebookError, match="no cell tagged 'parameters'"):
        check_parameters({"x": 1}, {})
    with pytest.raises(NotebookError, match="must be an object"):
        check_parameters([1], declared)


def test_paths_are_relative_to_the_home_and_never_leave_it():
    assert clean_path("a/b.ipynb", "notebook", ".ipynb") == "a/b.ipynb"
    assert clean_path("./a//b.ipynb", "notebook", ".ipynb") == "a/b.ipynb"
    for bad in [
        "../bob/x.ipynb",
        "/etc/passwd.ipynb",
        "a/../../x.ipynb",
        "a\\b.ipynb",
        "x\x00.ipynb",
    ]:
        with pytest.raises(APIError) as e:
            clean_path(bad, "notebook", ".ipynb")
        assert e.value.status_code == 400 and e.value.message.startswith("notebook: ")
    for empty in ["", "   ", None, 3]:
        with pytest.raises(APIError, match="relative to your home"):
            clean_path(empty, "notebook")
    with pytest.raises(APIError, match="is not a .ipynb file"):
        clean_path("train.py", "notebook", ".ipynb")


def test_a_notebook_sent_as_text_or_as_an_object_is_checked():
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert parse_notebook(notebook_bytes(nb, "x.ipynb"), "x.ipynb") == nb
    assert (
        parse_notebook(notebook_bytes('{"cells": [], "nbformat": 4}', "x.ipynb"), "x.ipynb")[
            "cells"
        ]
        == []
    )
    for bad, msg in [(b"{", "not valid notebook JSON"), (b'{"cells": 1}', "not an nbformat 4")]:
        with pytest.raises(NotebookError, match=msg):
            parse_notebook(bad, "x.ipynb")
    with pytest.raises(NotebookError, match="content: the notebook"):
        notebook_bytes(7, "x.ipynb")


@pytest.mark.parametrize(
    "expr,tz,words",
    [
        ("* * * * *", "UTC", "Every minute"),
        ("*/15 * * * *", "UTC", "Every 15 minutes"),
        ("5 * * * *", "UTC", "Every hour at minute 5"),
        ("0 2 * * *", "UTC", "Every day at 02:00 UTC"),
        ("30 6 * * 1", "Europe/Berlin", "Every Monday at 06:30 (Europe/Berlin)"),
        ("0 9 * * 1-5", "UTC", "Every weekday at 09:00 UTC"),
        ("0 0 1 * *", "UTC", "On day 1 of every month at 00:00 UTC"),
    ],
)
def test_cron_reads_as_words(expr, tz, words):
    assert cron.describe(cron.validate(expr, tz), tz) == words


def test_cron_presets_timezones_and_errors():
    assert cron.validate("nightly") == "0 2 * * *"
    after = dt.datetime(2026, 3, 28, 12, 0)  # Berlin switches to summer time the next night
    first, second = cron.next_times("0 2 * * *", "Europe/Berlin", after=after, count=2)
    # 02:00 does not exist that night: the run happens once, at 03:00 CEST (01:00 UTC)
    assert first == dt.datetime(2026, 3, 29, 1, 0)
    assert second == dt.datetime(2026, 3, 30, 0, 0)  # 02:00 CEST
    assert cron.next_times("0 2 * * *", "Europe/Berlin", after=dt.datetime(2026, 1, 10))[
        0
    ] == dt.datetime(2026, 1, 10, 1, 0)
    for bad, msg in [
        ("", "give a cron expression"),
        ("* * *", "5-field"),
        ("60 * * * *", "not a valid cron"),
    ]:
        with pytest.raises(cron.CronError, match=msg):
            cron.validate(bad)
    with pytest.raises(cron.CronError, match="unknown timezone 'Moon/Base'"):
        cron.validate("* * * * *", "Moon/Base")


class _Executor:
    def maintain(self):
        pass

    def alive(self, run_dir):
        return False


def scheduler_for(tmp_path: Path, catch_up="once", engine=None) -> Scheduler:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(
        yaml.safe_dump({"jobs": {"catch_up": catch_up}, "gpus": {"inventory": "none"}})
    )
    settings = load_settings(settings_file, environ={"HUBML_DATA_DIR": str(tmp_path)})
    if engine is None:
        engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        init_db(engine)
    return Scheduler(engine, settings, _Executor(), tmp_path)


def add_job(engine, job_id="j1", schedule="* * * * *", next_run_at=None, concurrency="skip"):
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            jobs.insert().values(
                id=job_id,
                owner="alice",
                name="n",
                notebook="n.ipynb",
                snapshot="/nonexistent",
                content_hash="0",
                track_latest=False,
                parameters={},
                profile="cpu-small",
                schedule=schedule,
                timezone="UTC",
                timeout_s=60,
                max_retries=0,
                retry_delay_s=0,
                concurrency=concurrency,
                webhook_url=None,
                notify_on=["failure"],
                paused=False,
                next_run_at=next_run_at,
                created_at=now,
                updated_at=now,
            )
        )
    with engine.connect() as conn:
        return conn.execute(select(jobs).where(jobs.c.id == job_id)).first()


@pytest.mark.parametrize("policy,expected", [("once", 1), ("all", 6), ("none", 0)])
def test_catch_up_policy_for_slots_missed_while_down(tmp_path, policy, expected):
    sched = scheduler_for(tmp_path, policy)
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    now = hour + dt.timedelta(minutes=30)
    # hourly; down for five and a half hours: six slots missed
    job = add_job(sched.engine, schedule="0 * * * *", next_run_at=hour - dt.timedelta(hours=5))
    chosen, nxt = sched.slots(job, now)
    assert len(chosen) == expected
    assert nxt == hour + dt.timedelta(hours=1)  # the schedule goes on, whatever the policy
    if policy == "once":
        assert chosen == [hour]  # the latest missed slot


@pytest.mark.parametrize("policy", ["once", "all", "none"])
def test_every_due_slot_not_run_is_recorded_skipped_with_the_reason(tmp_path, policy):
    sched = scheduler_for(tmp_path, policy)
    now = utcnow()
    # every minute; down for five minutes, and the current minute's slot is on time
    on_time = now.replace(second=0, microsecond=0)
    if (now - on_time).total_seconds() > 50:
        on_time += dt.timedelta(minutes=1)  # (keep the on-time slot within the grace)
        now = on_time + dt.timedelta(seconds=1)
    # (concurrency queue: with skip, catch-up runs after the first would wait for none)
    job = add_job(
        sched.engine,
        schedule="* * * * *",
        next_run_at=on_time - dt.timedelta(minutes=5),
        concurrency="queue",
    )
    chosen, skipped, _ = sched.plan(job, now)
    assert len(chosen) + len(skipped) == 6
    with sched.engine.begin() as conn:
        conn.execute(jobs.update().values(next_run_at=job.next_run_at))
    original = sched.plan
    sched.plan = lambda job, _now: original(job, now)
    sched.fire_due()
    with sched.engine.connect() as conn:
        rows = conn.execute(select(runs).order_by(runs.c.scheduled_for)).all()
    assert [r.scheduled_for for r in rows] == [
        on_time - dt.timedelta(minutes=m) for m in range(5, -1, -1)
    ]
    ran = [r for r in rows if r.status == "queued"]
    assert [r.scheduled_for for r in ran] == sorted(chosen)
    for r in rows:
        if r.status == "skipped":
            assert r.error.startswith("skipped: missed while the jobs service was down"), r.error
            assert r.trigger == "catch-up" and r.finished_at is not None
    if policy == "once":  # the on-time run stands for the missed ones
        assert [r.scheduled_for for r in ran] == [on_time]
        assert "the on-time run of" in rows[0].error
    if policy == "all":
        assert len(ran) == 6
    if policy == "none":
        assert [r.scheduled_for for r in ran] == [on_time]
        assert "catch-up none" in rows[0].error


def test_history_keeps_the_newest_runs_and_the_recent_ones_with_their_folders(tmp_path):
    sched = scheduler_for(tmp_path)
    default = add_job(sched.engine, "j1", schedule=None)
    own = add_job(sched.engine, "j2", schedule=None)
    with sched.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == "j2").values(keep_runs=2, keep_days=None))
    now = utcnow()
    ids = {}
    with sched.engine.begin() as conn:
        for job in (default, own):
            for days in (0, 1, 2, 3, 100, 200):
                run_id = sched._insert_run(conn, job, now - dt.timedelta(days=days), "manual")
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(status="succeeded", finished_at=now - dt.timedelta(days=days))
                )
                ids[(job.id, days)] = run_id
        going = sched._insert_run(conn, own, now - dt.timedelta(days=300), "manual")  # queued
    with sched.engine.connect() as conn:
        every = conn.execute(select(runs)).all()
    for r in every:
        sched.run_dir(r).mkdir(parents=True)
        (sched.run_dir(r) / "output.ipynb").write_text("{}")
    # the service's defaults (keep_runs 200, keep_days 90) for j1; j2 keeps its newest 2 and,
    # with its own keep_days unset, nothing older than the service's 90 days
    assert sched.prune() == 4 + 2
    with sched.engine.connect() as conn:
        kept = set(conn.execute(select(runs.c.id)).scalars())
    assert kept == {
        ids[("j1", 0)],
        ids[("j1", 1)],
        ids[("j1", 2)],
        ids[("j1", 3)],
        ids[("j2", 0)],
        ids[("j2", 1)],
        going,
    }
    for r in every:
        assert sched.run_dir(r).exists() == (r.id in kept), r.id
    assert sched.prune() == 0


def test_a_slot_due_now_runs_under_every_policy(tmp_path):
    for policy in ("once", "all", "none"):
        sched = scheduler_for(tmp_path / policy, policy)
        slot = utcnow().replace(microsecond=0) - dt.timedelta(seconds=2)
        job = add_job(sched.engine, schedule="* * * * *", next_run_at=slot)
        # (near a minute boundary the next slot may be due too: on time, so it runs as well)
        assert slot in sched.slots(job, utcnow())[0]


def test_a_due_slot_becomes_exactly_one_run_even_with_racing_schedulers(tmp_path):
    first = scheduler_for(tmp_path)
    others = [Scheduler(first.engine, first.settings, _Executor(), tmp_path) for _ in range(3)]
    due = utcnow() - dt.timedelta(seconds=1)
    add_job(first.engine, next_run_at=due)
    barrier = threading.Barrier(4)
    fired = []

    def fire(s):
        barrier.wait()
        fired.append(s.fire_due())

    threads = [threading.Thread(target=fire, args=(s,)) for s in [first, *others]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fired) == [0, 0, 0, 1]
    with first.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar() == 1
        assert conn.execute(select(jobs.c.next_run_at)).scalar() > due


def test_concurrency_skip_records_the_skipped_slot(tmp_path):
    sched = scheduler_for(tmp_path)
    job = add_job(sched.engine, schedule=None)
    first = sched.run_now(job)
    with sched.engine.begin() as conn:  # a schedule's slot comes due while the first is queued
        second = sched._insert_run(conn, job, utcnow(), "schedule")
    with sched.engine.connect() as conn:
        status = dict(conn.execute(select(runs.c.id, runs.c.status)).all())
    assert status == {first: "queued", second: "skipped"}


def test_run_now_while_a_run_is_going_is_refused_not_recorded_as_skipped(tmp_path):
    from hubml.extensions.jobs.scheduler import RunGoing

    sched = scheduler_for(tmp_path)
    job = add_job(sched.engine, schedule=None)
    first = sched.run_now(job)
    with pytest.raises(RunGoing, match=f"run {first} of this job is queued"):
        sched.run_now(job)
    with sched.engine.connect() as conn:
        assert conn.execute(select(runs.c.id)).scalars().all() == [first]
    queued = add_job(sched.engine, "j2", schedule=None, concurrency="queue")
    sched.run_now(queued)
    sched.run_now(queued)  # concurrency: queue takes both


def test_a_claimed_run_whose_runner_never_started_is_queued_again(tmp_path):
    import asyncio

    sched = scheduler_for(tmp_path)
    job = add_job(sched.engine, schedule=None, concurrency="queue")
    run_id = sched.run_now(job)
    with sched.engine.begin() as conn:  # claimed by a service that died before handing it over
        conn.execute(
            runs.update().where(runs.c.id == run_id).values(status="running", started_at=utcnow())
        )
    asyncio.run(sched.finish_ended())
    with sched.engine.connect() as conn:
        assert conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar() == "queued"
    # one that did start (it has a log) and left no result failed, and is not silently re-run
    with sched.engine.begin() as conn:
        conn.execute(
            runs.update().where(runs.c.id == run_id).values(status="running", started_at=utcnow())
        )
    with sched.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    sched.run_dir(run).mkdir(parents=True)
    (sched.run_dir(run) / "log").write_text("started\n")
    asyncio.run(sched.finish_ended())
    with sched.engine.connect() as conn:
        status, error = conn.execute(
            select(runs.c.status, runs.c.error).where(runs.c.id == run_id)
        ).first()
    assert status == "failed" and "ended without a result" in error
