"""How runs end: the runner's result read back, cancels and timeouts enforced, the row finished
with the runner's own duration and its cost, retries queued, the GPU and token given back.

:class:`RunEnding` is a part of :class:`~.scheduler.Scheduler`, kept apart for size; it uses the
scheduler's engine, executor, ledger and ``_insert_run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import logging

from sqlalchemy import select, update

from . import runspec
from .db import ACTIVE, jobs, runs, utcnow

log = logging.getLogger("hubml.jobs.scheduler")

KILL_GRACE_S = 15  # after the runner's own timeout, the service kills it


async def _call(result):
    """An executor method's result: the local executor answers at once, Kubernetes' awaits."""
    return await result if inspect.isawaitable(result) else result


class RunEnding:
    async def finish_ended(self) -> None:
        with self.engine.connect() as conn:
            active = conn.execute(select(runs).where(runs.c.status == "running")).all()
        now = utcnow()
        for run in active:
            run_dir = self.run_dir(run)
            if await _call(self.executor.alive(run_dir)):
                with self.engine.connect() as conn:
                    timeout = (
                        conn.execute(
                            select(jobs.c.timeout_s).where(jobs.c.id == run.job_id)
                        ).scalar()
                        or 0
                    )
                elapsed = (now - run.started_at).total_seconds() if run.started_at else 0
                if run.cancel_requested:
                    await _call(self.executor.terminate(run_dir, run.pid))
                    if (
                        elapsed
                        and (run_dir / "cancel").exists()
                        and (now.timestamp() - (run_dir / "cancel").stat().st_mtime) > KILL_GRACE_S
                    ):
                        await _call(self.executor.terminate(run_dir, run.pid, force=True))
                elif timeout and elapsed > timeout + KILL_GRACE_S:
                    # the runner enforces its timeout itself; this is the backstop
                    await _call(
                        self.executor.terminate(
                            run_dir, run.pid, force=elapsed > timeout + 2 * KILL_GRACE_S
                        )
                    )
                continue
            result_file = run_dir / "result.json"
            ran_s = None
            if result_file.exists():
                result = json.loads(result_file.read_text())
                status, error, mlflow_id = (
                    result["status"],
                    result.get("error"),
                    result.get("mlflow_run_id"),
                )
                ran_s = result.get("runner_seconds")
                if run.cancel_requested and status != "succeeded":
                    status, error = "cancelled", "cancelled by request"
            elif run.cancel_requested:
                status, error, mlflow_id = "cancelled", "cancelled by request", None
            elif not (run_dir / "log").exists():
                # claimed, but the service stopped before a runner took it: it never ran a
                # cell, so it goes back to the queue as the same run (not a retry)
                with self.engine.begin() as conn:
                    conn.execute(
                        update(runs)
                        .where(runs.c.id == run.id, runs.c.status == "running")
                        .values(status="queued", started_at=None, pid=None, gpu_devices=None)
                    )
                self.ledger().release(f"job:{run.id}")
                log.info("run %s was claimed but never started; queued again", run.id)
                continue
            else:
                status, error, mlflow_id = (
                    "failed",
                    (
                        "the run's process ended without a result (killed, or lost while the jobs "
                        "service was down)"
                    ),
                    None,
                )
            self._finish(run.id, status, error, mlflow_id, ran_s=ran_s)

    def _finish(
        self,
        run_id: str,
        status: str,
        error: str | None,
        mlflow_run_id: str | None = None,
        ran_s: float | None = None,
    ) -> None:
        """Record how a run ended. ``ran_s``: the runner's own measure of its run; a run that
        ended while this service was down is not charged the time until it noticed."""
        now = utcnow()
        with self.engine.begin() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            if run is None or run.status not in ACTIVE:
                return
            duration = (now - run.started_at).total_seconds() if run.started_at else 0.0
            finished = now
            if isinstance(ran_s, int | float) and 0 <= ran_s < duration and run.started_at:
                duration = float(ran_s)
                finished = run.started_at + dt.timedelta(seconds=duration)
            done = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(ACTIVE))
                .values(
                    status=status,
                    error=error,
                    finished_at=finished,
                    duration_s=round(duration, 3),
                    cost_usd=round(duration / 3600 * run.price_per_hour, 6),
                    mlflow_run_id=mlflow_run_id,
                )
            ).rowcount
            if done != 1:
                return
            job = conn.execute(select(jobs).where(jobs.c.id == run.job_id)).first()
            retry = (
                job is not None
                and status in ("failed", "timed_out")
                and run.attempt <= job.max_retries
            )
            if retry:
                delay = job.retry_delay_s * (2 ** (run.attempt - 1))
                self._insert_run(
                    conn,
                    job,
                    run.scheduled_for,
                    "retry",
                    attempt=run.attempt + 1,
                    not_before=now + dt.timedelta(seconds=delay),
                )
        self.ledger().release(f"job:{run_id}")
        asyncio.ensure_future(runspec.revoke_token(self, run))
        log.info(
            "run %s %s%s%s",
            run_id,
            status,
            f": {error}" if error else "",
            f"; retrying (attempt {run.attempt + 1})" if retry else "",
        )
        if job is not None and self.notify is not None:
            asyncio.ensure_future(self.notify(run_id))
        self.wake.set()

    def cancel(self, run) -> None:
        with self.engine.begin() as conn:
            if run.status == "queued":
                conn.execute(
                    update(runs)
                    .where(runs.c.id == run.id, runs.c.status == "queued")
                    .values(status="cancelled", error="cancelled by request", finished_at=utcnow())
                )
            else:
                conn.execute(update(runs).where(runs.c.id == run.id).values(cancel_requested=True))
        if run.status == "running":
            run_dir = self.run_dir(run)
            (run_dir / "cancel").touch()
            stopping = self.executor.terminate(run_dir, run.pid)
            if inspect.isawaitable(stopping):
                asyncio.ensure_future(stopping)
        self.wake.set()
