"""The scheduler: turns due cron slots into runs, starts queued runs, finishes ended ones
(:mod:`.ending`).

One loop does everything, and every decision that must happen once is made by the database
(see :mod:`.db`). The loop sleeps until the next due slot (at most ``TICK`` seconds) and is
woken early whenever the API changes something, so "run now" starts at once and a scheduled
run starts within a fraction of a second of its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import time
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from hubml.extensions.common.hub import HubUnavailable

from . import catchup, history, runspec
from .catchup import GRACE
from .db import ACTIVE, jobs, new_id, runs, utcnow
from .ending import RunEnding, _call
from .runnerd import RunnersUnavailable
from .runspec import RunRefused

log = logging.getLogger("hubml.jobs.scheduler")

TICK = 1.0
# how often finished runs past their job's retention are pruned
PRUNE_EVERY_S = 300


class RunGoing(Exception):
    """A manual run of a ``concurrency: skip`` job while one of its runs is going."""

    def __init__(self, job_id: str, run_id: str, status: str):
        self.job_id, self.run_id, self.status = job_id, run_id, status
        super().__init__(
            f"run {run_id} of this job is {status}, and the job does not overlap runs "
            "(concurrency: skip): wait for it or cancel it, or set concurrency to queue"
        )


class Scheduler(RunEnding):
    def __init__(self, engine, settings, executor, data_dir: Path, ctx=None, mlflow_url: str = ""):
        self.engine = engine
        self.settings = settings
        self.executor = executor
        self.data_dir = Path(data_dir)
        # the service's context: the hub (tokens for MLflow and for reading users' notebooks)
        self.ctx = ctx
        self.hub = ctx.hub if ctx is not None else None
        self.mlflow_url = mlflow_url.rstrip("/")  # where runs reach the mlflow service
        self.wake = asyncio.Event()
        self.notify = None  # async callable(run_row, job_row) for webhooks
        self._ledger = None
        self._pruned_at = float("-inf")

    # -- paths ---------------------------------------------------------------------------------

    def home(self, user: str) -> Path:
        """Where a run of ``user`` starts (a path only: the service never reads homes)."""
        return self.data_dir / "homes" / user

    def run_dir(self, run) -> Path:
        return self.data_dir / "jobs" / "runs" / run.owner / run.job_id / run.id

    def _gpu_lock(self, run) -> Path | None:
        """The file a run's runner holds locked while it lives (this host's runs only)."""
        if getattr(self.executor, "cluster_gpus", False):
            return None
        from .executor import lock_path

        return lock_path(self.run_dir(run))

    def ledger(self):
        if self._ledger is None:
            from hubml.hub_config.gpus import GPULedger, inventory_from_settings, ledger_path

            self._ledger = GPULedger(
                ledger_path(self.data_dir), inventory_from_settings(self.settings.gpus.inventory)
            )
        return self._ledger

    # -- the loop ------------------------------------------------------------------------------

    async def loop(self) -> None:
        if hasattr(self.executor, "notify"):
            running = asyncio.get_running_loop()
            self.executor.notify = lambda: running.call_soon_threadsafe(self.wake.set)
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
            timeout = self.seconds_to_next_slot()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def seconds_to_next_slot(self) -> float:
        with self.engine.connect() as conn:
            nxt = conn.execute(
                select(func.min(jobs.c.next_run_at)).where(
                    jobs.c.paused.is_(False), jobs.c.next_run_at.is_not(None)
                )
            ).scalar()
        if nxt is None:
            return TICK
        return max(0.0, min(TICK, (nxt - utcnow()).total_seconds()))

    async def tick(self) -> None:
        await _call(self.executor.maintain())
        self.fire_due()
        await self.finish_ended()
        await self.dispatch()
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            await asyncio.to_thread(self.prune)

    def prune(self, now: dt.datetime | None = None) -> int:
        """Finished runs past their job's retention go, with their folders (:mod:`.history`)."""
        return history.prune(self.engine, self.settings.jobs, self.run_dir, now)

    # -- schedules -----------------------------------------------------------------------------

    def slots(self, job, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime]:
        """(slots to run now, the job's next_run_at after them) under the catch-up policy."""
        chosen, _, nxt = self.plan(job, now)
        return chosen, nxt

    def plan(self, job, now: dt.datetime):
        """``(to run, [(slot, why not)], next_run_at)`` for a due job (:func:`.catchup.plan`)."""
        return catchup.plan(job, now, self.settings.jobs.catch_up)

    def fire_due(self) -> int:
        now = utcnow()
        fired = 0
        with self.engine.connect() as conn:
            due_jobs = conn.execute(
                select(jobs).where(
                    jobs.c.schedule.is_not(None),
                    jobs.c.paused.is_(False),
                    jobs.c.next_run_at <= now,
                )
            ).all()
        for job in due_jobs:
            chosen, skipped, nxt = self.plan(job, now)
            try:
                with self.engine.begin() as conn:
                    moved = conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job.id, jobs.c.next_run_at == job.next_run_at)
                        .values(next_run_at=nxt)
                    ).rowcount
                    if moved != 1:
                        continue  # somebody else fired (or the job changed): nothing to do
                    for slot in chosen:
                        trigger = "schedule" if now - slot <= GRACE else "catch-up"
                        self._insert_run(conn, job, slot, trigger)
                        fired += 1
                    for slot, why in skipped:  # every slot not run leaves a record saying why
                        self._insert_run(conn, job, slot, "catch-up", skip_reason=why)
            except IntegrityError:
                log.warning("job %s: slot already has a run; not firing it twice", job.id)
        if fired:
            log.info("fired %d scheduled run(s)", fired)
        return fired

    def _insert_run(
        self,
        conn,
        job,
        slot: dt.datetime,
        trigger: str,
        attempt: int = 1,
        not_before: dt.datetime | None = None,
        skip_reason: str | None = None,
    ) -> str:
        active = conn.execute(
            select(func.count())
            .select_from(runs)
            .where(runs.c.job_id == job.id, runs.c.status.in_(ACTIVE))
        ).scalar()
        status, error = "queued", None
        if skip_reason:
            status, error = "skipped", f"skipped: {skip_reason}"
        elif active and job.concurrency == "skip" and trigger != "retry":
            status, error = (
                "skipped",
                "skipped: the previous run of this job was still going (concurrency: skip)",
            )
        profile = self.settings.profile(job.profile)
        run_id = new_id()
        now = utcnow()
        conn.execute(
            insert(runs).values(
                id=run_id,
                job_id=job.id,
                owner=job.owner,
                attempt=attempt,
                trigger=trigger,
                status=status,
                scheduled_for=slot,
                not_before=not_before or now,
                created_at=now,
                finished_at=now if status == "skipped" else None,
                error=error,
                price_per_hour=profile.price_per_hour if profile else 0.0,
                profile=job.profile,
                parameters=job.parameters,
            )
        )
        return run_id

    def run_now(self, job) -> str:
        """A manual run. With ``concurrency: skip`` and a run going, :class:`RunGoing` (a
        person asked for a run: recording it as skipped would answer "yes" and run nothing)."""
        with self.engine.begin() as conn:
            if job.concurrency == "skip":
                going = conn.execute(
                    select(runs.c.id, runs.c.status)
                    .where(runs.c.job_id == job.id, runs.c.status.in_(ACTIVE))
                    .limit(1)
                ).first()
                if going is not None:
                    raise RunGoing(job.id, going.id, going.status)
            # a run's key is (job, slot, attempt): two "Run now" in one millisecond, or one at a
            # scheduled slot's very time, take the next free millisecond
            slot = utcnow()
            taken = conn.execute(
                select(func.max(runs.c.scheduled_for)).where(
                    runs.c.job_id == job.id, runs.c.scheduled_for >= slot
                )
            ).scalar()
            if taken is not None:
                slot = taken + dt.timedelta(milliseconds=1)
            run_id = self._insert_run(conn, job, slot, "manual")
        self.wake.set()
        return run_id

    # -- starting runs -------------------------------------------------------------------------

    async def dispatch(self) -> None:
        cfg = self.settings.jobs
        now = utcnow()
        with self.engine.connect() as conn:
            queued = conn.execute(
                select(runs)
                .where(runs.c.status == "queued", runs.c.not_before <= now)
                .order_by(runs.c.created_at)
            ).all()
            if not queued:
                return
            running = (
                conn.execute(select(runs.c.owner).where(runs.c.status == "running")).scalars().all()
            )
        per_user: dict[str, int] = {}
        for owner in running:
            per_user[owner] = per_user.get(owner, 0) + 1
        total = len(running)
        for run in queued:
            if total >= cfg.max_concurrent_runs:
                break
            if per_user.get(run.owner, 0) >= cfg.max_concurrent_runs_per_user:
                continue
            if await self.start(run):
                total += 1
                per_user[run.owner] = per_user.get(run.owner, 0) + 1

    async def budget_refusal(self, run, job) -> str | None:
        """Why the owner's budgets cannot pay for this run (price x its timeout), asked of the
        cost service; None when they can, or when the service does not answer."""
        if not self.settings.cost.enabled:
            return None
        import os

        from hubml.extensions.common import urls
        from hubml.extensions.cost.check import Unanswered, ask

        base = urls.service_internal_url("cost")
        if not base:
            return None
        try:
            answer = await ask(
                base,
                os.environ.get("JUPYTERHUB_API_TOKEN", ""),
                run.owner,
                run.profile,
                hours=job.timeout_s / 3600,
            )
        except Unanswered as e:
            log.warning("run %s: budgets not checked (the cost service: %s)", run.id, e)
            return None
        return None if answer.get("allowed", True) else answer.get("message") or "over budget"

    async def start(self, run) -> bool:
        """Claim ``run`` and hand it to the executor; False when it has to wait (GPU busy)."""
        from hubml.hub_config.gpus import GPUUnavailable, LedgerUnreadable

        ready = getattr(self.executor, "ready", None)
        if ready is not None and not ready():
            return False  # the runner service is (re)starting: the run waits
        profile = self.settings.profile(run.profile)
        with self.engine.connect() as conn:
            job = conn.execute(select(jobs).where(jobs.c.id == run.job_id)).first()
        if job is None or profile is None:
            self._finish(run.id, "failed", f"job or profile {run.profile!r} no longer exists")
            return False
        refusal = await self.budget_refusal(run, job)
        if refusal:
            log.info("run %s of %s skipped: %s", run.id, run.owner, refusal)
            self._finish(run.id, "skipped", f"skipped: {refusal}")
            return False
        owner = f"job:{run.id}"
        devices: list[int] = []
        # on this host GPUs come from the ledger; a cluster's scheduler places its own
        if profile.gpu_model and not getattr(self.executor, "cluster_gpus", False):
            try:
                # the run's lock file keeps the holding alive through the hand-off to its runner
                devices = self.ledger().reserve(
                    owner, profile.gpu_model, profile.gpu_count, lock=self._gpu_lock(run)
                )
            except GPUUnavailable as e:
                log.debug("run %s waits for a GPU: %s", run.id, e)
                return False
            except LedgerUnreadable as e:
                log.error("run %s waits: %s", run.id, e)
                return False
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(runs)
                .where(runs.c.id == run.id, runs.c.status == "queued")
                .values(
                    status="running",
                    started_at=utcnow(),
                    gpu_devices=",".join(map(str, devices)) or None,
                )
            ).rowcount
        if claimed != 1:
            if devices:
                self.ledger().release(owner)
            return False
        try:
            spec = await self.spec(run, job, profile, devices)
            pid = await _call(self.executor.launch(spec))
        except (RunnersUnavailable, HubUnavailable) as e:
            # the runner service or the hub is restarting: the run waits in the queue, it did
            # not fail
            log.warning("run %s waits: %s", run.id, e)
            if devices:
                self.ledger().release(owner)
            with self.engine.begin() as conn:
                conn.execute(
                    update(runs)
                    .where(runs.c.id == run.id, runs.c.status == "running")
                    .values(status="queued", started_at=None, gpu_devices=None)
                )
            await runspec.revoke_token(self, run)
            return False
        except Exception as e:
            if not isinstance(e, RunRefused):
                log.exception("run %s could not start", run.id)
            if devices:
                self.ledger().release(owner)
            self._finish(run.id, "failed", f"could not start: {e}")
            return False
        if devices:
            self.ledger().attach(owner, pid)
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run.id).values(pid=pid))
        log.info(
            "run %s of job %s started (pid %s, profile %s%s)",
            run.id,
            run.job_id,
            pid,
            run.profile,
            f", GPU {devices}" if devices else "",
        )
        return True

    async def spec(self, run, job, profile, devices: list[int]) -> dict:
        return await runspec.make_spec(self, run, job, profile, devices)

    # -- start-up ------------------------------------------------------------------------------

    def recover(self) -> None:
        """After a (re)start: say what was found; the loop re-attaches or finishes each run."""
        with self.engine.connect() as conn:
            running = conn.execute(select(runs).where(runs.c.status == "running")).all()
        if running and inspect.iscoroutinefunction(self.executor.alive):
            log.info("%d run(s) were running; following their Jobs again", len(running))
            return
        for run in running:
            state = (
                "still running, re-attached"
                if self.executor.alive(self.run_dir(run))
                else "ended while the service was down"
            )
            log.info("run %s of job %s: %s", run.id, run.job_id, state)
