"""Which due slots of a schedule run, under the catch-up policy (``jobs.catch_up``).

A slot less than :data:`GRACE` late is on time and always runs. Slots missed while the jobs
service was down: ``all`` runs each, ``once`` lets one run stand for them (the on-time slot's
when one is due now, else a catch-up run of the latest missed), ``none`` runs none. Every due
slot that does not run is recorded as a ``skipped`` run saying why, so a schedule's history
has a row for each of its slots.
"""

from __future__ import annotations

import datetime as dt
import logging

from . import cron
from .db import iso

log = logging.getLogger("hubml.jobs.scheduler")

GRACE = dt.timedelta(seconds=60)
MAX_CATCH_UP = 100
DOWN = "missed while the jobs service was down"


def plan(job, now: dt.datetime, policy: str):
    """``(slots to run, [(slot, why it does not run)], the job's next_run_at after them)``."""
    due = []
    t = job.next_run_at
    while t <= now and len(due) < MAX_CATCH_UP:
        due.append(t)
        t = cron.next_times(job.schedule, job.timezone, after=t)[0]
    if t <= now:  # more than MAX_CATCH_UP missed: jump to the future
        log.warning(
            "job %s missed more than %d slots; those after %s are not recorded",
            job.id,
            MAX_CATCH_UP,
            due[-1],
        )
        t = cron.next_times(job.schedule, job.timezone, after=now)[0]
    on_time = [s for s in due if now - s <= GRACE]
    missed = [s for s in due if now - s > GRACE]
    if policy == "all":
        chosen, why = due, ""
    elif policy == "once" and on_time:
        chosen, why = (
            on_time,
            f"{DOWN}; catch-up once: the on-time run of {iso(on_time[-1])} stands for it",
        )
    elif policy == "once":
        chosen = missed[-1:]
        why = f"{DOWN}; catch-up once: only the latest missed slot ({iso(missed[-1])}) ran"
    else:
        chosen, why = on_time, f"{DOWN}; catch-up none: missed slots do not run"
    if missed:
        log.info(
            "job %s missed %d slot(s) (%s to %s); catch-up policy %r runs %d of them",
            job.id,
            len(missed),
            missed[0],
            missed[-1],
            policy,
            len([s for s in chosen if s in missed]),
        )
    return chosen, [(s, why) for s in due if s not in chosen], t
