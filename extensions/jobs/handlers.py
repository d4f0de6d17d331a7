"""The jobs service's HTTP API (``/services/jobs/api/...``); contract in docs/ARCHITECTURE.md.

Everything is authenticated by the service kit; a user sees and acts on their own jobs and runs
only (others get 404, as if they did not exist), admins on all. A job's notebook comes with the
request (``content``, what the schedule panel sends) or is read from the owner's running server;
the service never opens a home.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler
from hubml.extensions.common.profiles import profiles_for, resolve_profile
from hubml.extensions.common.userfiles import clean_path, fetch_from_server

from . import cron
from .db import ACTIVE, iso, jobs, new_id, runs, utcnow
from .home import SchedulesPage
from .models import job_model, run_model
from .notebooks import (
    MAX_NOTEBOOK_BYTES,
    NotebookError,
    check_parameters,
    content_hash,
    declared_parameters,
    notebook_bytes,
    parse_notebook,
    read_notebook,
    write_snapshot,
)
from .rules import FIELDS, PATCHABLE, check_fields, check_parameters_size
from .runner_api import RunnerHandler
from .scheduler import RunGoing

log = logging.getLogger("hubml.jobs")

# a body may carry the notebook itself
MAX_BODY = MAX_NOTEBOOK_BYTES + 1024**2


class JobsBase(ServiceHandler):
    def body(self) -> dict:
        body = self.json_body(MAX_BODY, "a notebook of at most 50 MiB")
        check_parameters_size(body)
        return body

    def owned_job(self, job_id: str):
        with self.ctx.engine.connect() as conn:
            job = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if job is None or (job.owner != self.user_name and not self.is_admin):
            raise APIError(404, f"no job {job_id!r} of yours")
        return job

    def owned_run(self, run_id: str):
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if run is None or (run.owner != self.user_name and not self.is_admin):
            raise APIError(404, f"no run {run_id!r} of yours")
        return run

    async def notebook(self, body: dict) -> tuple[str, dict, bytes]:
        """(path, notebook, bytes) of the notebook a request names, from the request itself or
        from the caller's running server."""
        path = clean_path(body.get("notebook"), "notebook", ".ipynb")
        try:
            if body.get("content") is not None:
                raw = notebook_bytes(body["content"], path)
            else:
                raw = await fetch_from_server(
                    self.ctx, self.user_name, path, "notebook", MAX_NOTEBOOK_BYTES
                )
            return path, parse_notebook(raw, path), raw
        except NotebookError as e:
            raise APIError(400, str(e)) from None


def _last_run(conn, job_id: str):
    return conn.execute(
        select(runs).where(runs.c.job_id == job_id).order_by(runs.c.created_at.desc()).limit(1)
    ).first()


class JobsHandler(JobsBase):
    async def get(self):
        with self.ctx.engine.connect() as conn:
            q = select(jobs).order_by(jobs.c.created_at.desc())
            if not (self.is_admin and self.get_argument("all", "") in ("1", "true")):
                q = q.where(jobs.c.owner == self.user_name)
            rows = conn.execute(q).all()
            last = {job.id: _last_run(conn, job.id) for job in rows}
        self.send({"jobs": [job_model(self.ctx, j, last.get(j.id)) for j in rows]})

    async def post(self):
        body = self.body()
        check_fields(body, FIELDS)
        user = self.user_name
        rules = self.ctx.rules
        notebook, nb, raw = await self.notebook(body)
        try:
            params = check_parameters(body.get("parameters"), declared_parameters(nb))
        except NotebookError as e:
            raise APIError(400, str(e)) from None
        profile = await resolve_profile(self.ctx, body.get("profile"), user)
        schedule, tz = rules.schedule(body)
        fields = {
            "timeout_s": 3600,
            "max_retries": 0,
            "retry_delay_s": 30.0,
            "concurrency": "skip",
            "webhook_url": None,
            "notify_on": ["failure"],
            "track_latest": False,
        }
        await rules.common(body, fields)
        job_id = new_id()
        snapshot = self.ctx.data_dir / "jobs" / "snapshots" / user / f"{job_id}.ipynb"
        now = utcnow()
        values = dict(
            id=job_id,
            owner=user,
            name=fields.pop("name", None) or Path(notebook).stem,
            notebook=notebook,
            snapshot=str(snapshot),
            content_hash=content_hash(raw),
            parameters=params,
            profile=profile.slug,
            schedule=schedule,
            timezone=tz,
            paused=False,
            next_run_at=cron.next_times(schedule, tz)[0] if schedule else None,
            created_at=now,
            updated_at=now,
            **fields,
        )
        write_snapshot(raw, snapshot)
        try:
            with self.ctx.engine.begin() as conn:
                conn.execute(insert(jobs).values(**values))
                job = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        except Exception:
            snapshot.unlink(missing_ok=True)
            raise
        last = None
        if schedule is None:  # a job without a schedule runs once, now
            run_id = self.ctx.scheduler.run_now(job)
            with self.ctx.engine.connect() as conn:
                last = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        self.ctx.scheduler.wake.set()
        log.info(
            "%s created job %s (%s, %s, %s)",
            user,
            job_id,
            notebook,
            profile.slug,
            schedule or "once",
        )
        self.send(job_model(self.ctx, job, last), 201)


class JobHandler(JobsBase):
    async def get(self, job_id):
        job = self.owned_job(job_id)
        with self.ctx.engine.connect() as conn:
            last = _last_run(conn, job.id)
        model = job_model(self.ctx, job, last)
        if job.schedule and not job.paused:
            model["next_runs"] = [
                iso(t) for t in cron.next_times(job.schedule, job.timezone, count=3)
            ]
        self.send(model)

    async def patch(self, job_id):
        job = self.owned_job(job_id)
        body = self.body()
        check_fields(body, PATCHABLE, "cannot change")
        rules = self.ctx.rules
        values: dict = {}
        await rules.common(body, values)
        if "profile" in body:
            values["profile"] = (await resolve_profile(self.ctx, body["profile"], job.owner)).slug
        if "parameters" in body:
            try:
                nb, _ = read_notebook(Path(job.snapshot), job.notebook)
                values["parameters"] = check_parameters(body["parameters"], declared_parameters(nb))
            except NotebookError as e:
                raise APIError(400, str(e)) from None
        if "schedule" in body or "timezone" in body:
            merged = {
                "schedule": job.schedule,
                "timezone": job.timezone,
                **{k: body[k] for k in ("schedule", "timezone") if k in body},
            }
            values["schedule"], values["timezone"] = rules.schedule(merged)
        schedule = values.get("schedule", job.schedule)
        paused = values.get("paused", job.paused)
        if schedule and (
            "schedule" in values or "timezone" in values or (job.paused and not paused)
        ):
            # resuming does not catch up on the paused time: the next slot is in the future
            values["next_run_at"] = cron.next_times(schedule, values.get("timezone", job.timezone))[
                0
            ]
        elif not schedule:
            values["next_run_at"] = None
        values["updated_at"] = utcnow()
        with self.ctx.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
            job = conn.execute(select(jobs).where(jobs.c.id == job.id)).first()
        self.ctx.scheduler.wake.set()
        self.send(job_model(self.ctx, job))

    async def delete(self, job_id):
        job = self.owned_job(job_id)
        with self.ctx.engine.connect() as conn:
            active = conn.execute(
                select(runs).where(runs.c.job_id == job.id, runs.c.status.in_(ACTIVE))
            ).all()
        for run in active:
            self.ctx.scheduler.cancel(run)
        with self.ctx.engine.begin() as conn:
            conn.execute(delete(runs).where(runs.c.job_id == job.id, runs.c.status.not_in(ACTIVE)))
            conn.execute(delete(jobs).where(jobs.c.id == job.id))
        Path(job.snapshot).unlink(missing_ok=True)
        if not active:  # running ones are cancelled and keep their files until they end
            shutil.rmtree(
                self.ctx.data_dir / "jobs" / "runs" / job.owner / job.id, ignore_errors=True
            )
        self.set_status(204)
        self.finish()


class RunsHandler(JobsBase):
    async def get(self, job_id):
        job = self.owned_job(job_id)
        limit = whole_limit(self.get_argument("limit", "100"))
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.job_id == job.id)
                .order_by(runs.c.created_at.desc())
                .limit(limit)
            ).all()
        self.send({"runs": [run_model(r, self.ctx.public, self.ctx.mlflow_public) for r in rows]})

    async def post(self, job_id):
        job = self.owned_job(job_id)
        try:
            run_id = self.ctx.scheduler.run_now(job)
        except RunGoing as e:
            raise APIError(409, str(e), run_id=e.run_id) from None
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        self.send(run_model(run, self.ctx.public, self.ctx.mlflow_public), 201)


def whole_limit(value: str) -> int:
    if not re.fullmatch(r"\d{1,6}", value or ""):
        raise APIError(400, f"limit: a whole number from 1 to 1000 (got {value!r})")
    return max(1, min(int(value), 1000))


class RecentRunsHandler(JobsBase):
    """``api/runs?limit=N``: the caller's latest runs over all their jobs, newest first."""

    async def get(self):
        limit = whole_limit(self.get_argument("limit", "20"))
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(runs)
                .where(runs.c.owner == self.user_name)
                .order_by(runs.c.created_at.desc())
                .limit(limit)
            ).all()
        self.send({"runs": [run_model(r, self.ctx.public, self.ctx.mlflow_public) for r in rows]})


class LedgerHandler(JobsBase):
    """``api/ledger?since=<ISO time>``: every person's runs that ran at some time since then
    (start, end, profile and price), for the cost service's ledger; admins may read it too."""

    async def get(self):
        import datetime as dt

        model = self.current_user
        if (
            not (model.get("kind") == "service" and model.get("name") == "cost")
            and not self.is_admin
        ):
            raise APIError(403, "the runs' ledger is for the cost service and admins")
        raw = self.get_argument("since", "")
        try:
            since = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise APIError(
                400, f"since: an ISO 8601 time such as 2026-12-01T00:00:00Z (got {raw!r})"
            ) from None
        since = since.astimezone(dt.UTC).replace(tzinfo=None) if since.tzinfo else since
        now = utcnow()
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(runs, jobs.c.name.label("job_name"))
                .join(jobs, jobs.c.id == runs.c.job_id, isouter=True)
                .where(
                    (runs.c.status.in_(ACTIVE))
                    | (runs.c.finished_at >= since)
                    | (runs.c.started_at >= since)
                )
            ).all()
        self.send(
            {
                "now": iso(now),
                "runs": [
                    {
                        "id": r.id,
                        "owner": r.owner,
                        "job_name": r.job_name or "",
                        "status": r.status,
                        "profile": r.profile,
                        "price_per_hour": r.price_per_hour,
                        "started_at": iso(r.started_at),
                        "finished_at": iso(r.finished_at),
                    }
                    for r in rows
                ],
            }
        )


class RunHandler(JobsBase):
    async def get(self, run_id):
        self.send(run_model(self.owned_run(run_id), self.ctx.public, self.ctx.mlflow_public))


class RunFileHandler(JobsBase):
    """A run's output notebook, its HTML and its log; people open them from links, so a
    browser without a session is sent to log in."""

    page = True
    TYPES = {
        "output.ipynb": "application/x-ipynb+json",
        "output.html": "text/html; charset=utf-8",
        "log": "text/plain; charset=utf-8",
    }

    async def get(self, run_id, name):
        run = self.owned_run(run_id)
        path = self.ctx.scheduler.run_dir(run) / name
        live = getattr(self.ctx.scheduler.executor, "live_log", None)
        if name == "log" and run.status == "running" and live is not None:
            text = await live(path.parent)
            if text is not None:
                self.set_header("Content-Type", self.TYPES[name])
                self.finish(text)
                return
        if not path.exists():
            state = "has not produced it yet" if run.status in ACTIVE else "produced none"
            raise APIError(404, f"run {run_id} {state} ({name}); status {run.status}")
        self.set_header("Content-Type", self.TYPES[name])
        # what a notebook printed is its author's content: never a page of this origin
        self.set_header("Content-Security-Policy", "sandbox allow-scripts allow-popups")
        self.set_header("X-Content-Type-Options", "nosniff")
        if name == "output.ipynb":
            self.set_header("Content-Disposition", f'attachment; filename="{run_id}-output.ipynb"')
        self.finish(path.read_bytes())


class CancelHandler(JobsBase):
    async def post(self, run_id):
        run = self.owned_run(run_id)
        if run.status not in ACTIVE:
            raise APIError(409, f"run {run_id} already ended ({run.status})")
        self.ctx.scheduler.cancel(run)
        self.send(
            {"id": run_id, "status": "cancelled" if run.status == "queued" else "cancelling"}, 202
        )


class CronHandler(JobsBase):
    async def get(self):
        try:
            self.send(
                cron.preview(
                    self.get_argument("schedule", ""), self.get_argument("timezone", "UTC")
                )
            )
        except cron.CronError as e:
            raise APIError(400, str(e)) from None


def why_not_here(scheduler, profile) -> str | None:
    """Why a run on ``profile`` could never start where runs go (None: it can; busy GPUs only
    make it wait). On this host GPUs are the ledger's; a cluster places its own."""
    if not profile.gpu_model or getattr(scheduler.executor, "cluster_gpus", False):
        return None
    from hubml.hub_config.gpus import LedgerUnreadable

    try:
        _, total = scheduler.ledger().availability(profile.gpu_model)
    except LedgerUnreadable:
        return "the GPU ledger needs an administrator (see the hub's log)"
    if total < profile.gpu_count:
        have = f"only {total}" if total else "no"
        return f"this host has {have} {profile.gpu_model} GPU"
    return None


class ProfilesHandler(JobsBase):
    async def get(self):
        default = self.ctx.settings.default_profile.slug
        self.send(
            {
                "profiles": [
                    {
                        "slug": p.slug,
                        "display_name": p.display_name,
                        "price_per_hour": p.price_per_hour,
                        "gpu": f"{p.gpu_count} x {p.gpu_model}" if p.gpu_model else None,
                        "default": p.slug == default,
                        # the panel offers only what can run here, and says why not the rest
                        "why_not_here": why_not_here(self.ctx.scheduler, p),
                    }
                    for p in await profiles_for(self.ctx, self.user_name)
                ]
            }
        )


class NotebookHandler(JobsBase):
    """What a job on this notebook would take: its parameters, from the parameters cell.

    ``POST {"notebook", "content"}`` (the panel sends the notebook it shows) or
    ``GET ?path=`` (read from the caller's running server)."""

    async def get(self):
        await self._answer({"notebook": self.get_argument("path", "")})

    async def post(self):
        body = self.body()
        check_fields(body, {"notebook", "content"})
        await self._answer(body)

    async def _answer(self, body: dict):
        path, nb, raw = await self.notebook(body)
        self.send(
            {
                "notebook": path,
                "content_hash": content_hash(raw),
                "parameters": declared_parameters(nb),
            }
        )


ROUTES = [
    ("", SchedulesPage),
    ("api/jobs", JobsHandler),
    (r"api/jobs/([0-9a-f]+)", JobHandler),
    (r"api/jobs/([0-9a-f]+)/runs", RunsHandler),
    ("api/runs", RecentRunsHandler),
    ("api/ledger", LedgerHandler),
    (r"api/runs/([0-9a-f]+)", RunHandler),
    (r"api/runs/([0-9a-f]+)/(output\.ipynb|output\.html|log)", RunFileHandler),
    (r"api/runs/([0-9a-f]+)/cancel", CancelHandler),
    (r"api/runs/([0-9a-f]+)/runner/([\w.-]+)", RunnerHandler),
    ("api/cron", CronHandler),
    ("api/profiles", ProfilesHandler),
    ("api/notebook", NotebookHandler),
]
