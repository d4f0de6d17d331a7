"""Job history retention: finished runs past their job's limits go, rows first, then folders.

A job keeps its newest ``keep_runs`` finished runs and none that finished more than
``keep_days`` ago (its own values, else the service's ``jobs.keep_runs`` / ``jobs.keep_days``;
0 is no limit). Queued and running runs are never touched. Rows go before folders, so the API
never lists a run whose output is gone; a folder left by a service killed in between holds
nothing anyone can reach.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil

from sqlalchemy import delete, select

from .db import FINAL, jobs, runs, utcnow

log = logging.getLogger("hubml.jobs.history")

CHUNK = 500


def past_retention(finished: list, keep_runs: int, keep_days: int, now: dt.datetime) -> list:
    """Of a job's finished runs (newest first), those its retention drops."""
    oldest = now - dt.timedelta(days=keep_days) if keep_days else None
    return [
        r
        for i, r in enumerate(finished)
        if (keep_runs and i >= keep_runs)
        or (oldest is not None and r.finished_at is not None and r.finished_at < oldest)
    ]


def prune(engine, cfg, run_dir, now: dt.datetime | None = None) -> int:
    """Drop every job's runs past its retention (``cfg``: the jobs settings; ``run_dir(run)``:
    a run's folder); returns how many went."""
    now = now or utcnow()
    removed = 0
    with engine.connect() as conn:
        every = conn.execute(select(jobs.c.id, jobs.c.keep_runs, jobs.c.keep_days)).all()
    for job in every:
        keep_runs = cfg.keep_runs if job.keep_runs is None else job.keep_runs
        keep_days = cfg.keep_days if job.keep_days is None else job.keep_days
        if not keep_runs and not keep_days:
            continue
        with engine.connect() as conn:
            finished = conn.execute(
                select(runs.c.id, runs.c.owner, runs.c.job_id, runs.c.finished_at)
                .where(runs.c.job_id == job.id, runs.c.status.in_(FINAL))
                .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            ).all()
        doomed = past_retention(finished, keep_runs, keep_days, now)
        for start in range(0, len(doomed), CHUNK):
            batch = doomed[start : start + CHUNK]
            with engine.begin() as conn:
                conn.execute(
                    delete(runs).where(
                        runs.c.id.in_([r.id for r in batch]), runs.c.status.in_(FINAL)
                    )
                )
            for r in batch:
                shutil.rmtree(run_dir(r), ignore_errors=True)
        removed += len(doomed)
    if removed:
        log.info("pruned %d finished run(s) past their jobs' retention", removed)
    return removed
