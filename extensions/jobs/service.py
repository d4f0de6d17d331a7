"""The ``jobs`` hub service: notebook jobs and cron schedules at ``/services/jobs/``.

JupyterHub starts and supervises this process (and starts it again if it dies). Requests are
authenticated with JupyterHub tokens (``Authorization: token|Bearer``) or, for a browser
opening an output, the hub's OAuth cookie; a user sees and acts on their own jobs only, admins
on all. The API contract is in issue 4 and docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import delete, insert, select, update
from tornado import httpclient, web

from . import cron
from .db import ACTIVE, init_db, iso, jobs, make_engine, new_id, runs, utcnow
from .notebooks import (
    NotebookError,
    check_parameters,
    content_hash,
    declared_parameters,
    read_notebook,
    relative_to_home,
    resolve_in_home,
    write_snapshot,
)
from .scheduler import Scheduler, run_model

log = logging.getLogger("hubml.jobs")

MAX_BODY = 64 * 1024
FIELDS = {
    "notebook", "parameters", "profile", "schedule", "timezone", "timeout_s", "max_retries", "name",
    "retry_delay_s", "concurrency", "webhook_url", "notify_on", "track_latest",
}
PATCHABLE = FIELDS - {"notebook"} | {"paused"}
MAX_TIMEOUT_S = 7 * 24 * 3600


class BadRequest(web.HTTPError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(status, reason=None)
        self.message = message


class HubClient:
    """The hub's REST API, with this service's token."""

    def __init__(self):
        self.api_url = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
        self.token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.http = httpclient.AsyncHTTPClient()

    async def _call(self, method: str, path: str, body=None):
        resp = await self.http.fetch(
            f"{self.api_url}/{path}", method=method, raise_error=False, request_timeout=20,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
        )
        return resp.code, (json.loads(resp.body) if resp.body else {})

    async def groups(self, user: str) -> set[str]:
        code, model = await self._call("GET", f"users/{quote(user)}")
        return set(model.get("groups", [])) if code == 200 else set()

    async def user_token(self, user: str, expires_in: int, note: str, scopes: list[str]) -> str | None:
        code, model = await self._call(
            "POST", f"users/{quote(user)}/tokens", {"expires_in": expires_in, "note": note, "scopes": scopes}
        )
        if code not in (200, 201):
            log.warning("could not get a token for %s (%s): %s", user, code, model.get("message"))
            return None
        return model["token"]


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{key}: must be a whole number from {lo} to {hi} (got {value!r})")
    return value


class JobRules:
    """Checks a job definition; every message names the field and what is allowed."""

    def __init__(self, settings, data_dir: Path):
        self.settings, self.data_dir = settings, data_dir

    def home(self, user: str) -> Path:
        return self.data_dir / "homes" / user

    def profile(self, slug, groups: set[str]):
        valid = [p.slug for p in self.settings.profiles if p.allows(groups)]
        if not isinstance(slug, str):
            raise BadRequest(f"profile: give a profile slug; yours: {', '.join(valid)}")
        profile = self.settings.profile(slug)
        if profile is None:
            raise BadRequest(f"profile: unknown profile {slug!r}; valid profiles: {', '.join(valid)}")
        if not profile.allows(groups):
            raise BadRequest(
                f"profile: {slug} is only for members of {', '.join(profile.allowed_groups)}; "
                f"yours: {', '.join(valid)}", 403,
            )
        return profile

    def schedule(self, body: dict) -> tuple[str | None, str]:
        tz = body.get("timezone") or "UTC"
        if not isinstance(tz, str):
            raise BadRequest("timezone: must be an IANA timezone name such as UTC")
        try:
            cron.zone(tz)
            schedule = body.get("schedule")
            return (cron.validate(schedule, tz) if schedule is not None else None), tz
        except cron.CronError as e:
            raise BadRequest(str(e)) from None

    def common(self, body: dict, out: dict) -> None:
        if "timeout_s" in body:
            out["timeout_s"] = _int(body, "timeout_s", 3600, 1, MAX_TIMEOUT_S)
        if "max_retries" in body:
            out["max_retries"] = _int(body, "max_retries", 0, 0, 10)
        if "retry_delay_s" in body:
            value = body["retry_delay_s"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
                raise BadRequest(f"retry_delay_s: must be seconds from 0 to 86400 (got {value!r})")
            out["retry_delay_s"] = float(value)
        if "concurrency" in body:
            if body["concurrency"] not in ("skip", "queue"):
                raise BadRequest(
                    "concurrency: 'skip' (a slot due while the previous run is going is skipped) or "
                    f"'queue' (it waits); got {body['concurrency']!r}"
                )
            out["concurrency"] = body["concurrency"]
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > 200:
                raise BadRequest("name: must be a non-empty string of at most 200 characters")
            out["name"] = name.strip()
        if "webhook_url" in body:
            url = body["webhook_url"]
            if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url) or len(url) > 2000):
                raise BadRequest("webhook_url: must be an http:// or https:// URL, or null")
            out["webhook_url"] = url
        if "notify_on" in body:
            value = body["notify_on"]
            if not isinstance(value, list) or not set(value) <= {"failure", "success"}:
                raise BadRequest("notify_on: a list of 'failure' and/or 'success'")
            out["notify_on"] = sorted(set(value))
        if "track_latest" in body:
            if not isinstance(body["track_latest"], bool):
                raise BadRequest("track_latest: true (run the latest saved notebook) or false (run the snapshot)")
            out["track_latest"] = body["track_latest"]
        if "paused" in body:
            if not isinstance(body["paused"], bool):
                raise BadRequest("paused: true or false")
            out["paused"] = body["paused"]


class Base(web.RequestHandler):
    """JSON errors, hub authentication, the service's shared objects."""

    def initialize(self, ctx):
        self.ctx = ctx
        self.hub_auth = ctx.hub_auth

    def check_xsrf_cookie(self):
        # token-authenticated API calls carry no cookie; cookie-authenticated writes from a
        # browser must be same-origin (Sec-Fetch-Site cannot be forged by another site)
        if self.request.headers.get("Authorization") or self.request.headers.get("Sec-Fetch-Site") == "same-origin":
            return
        return super().check_xsrf_cookie()

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "message", None) or getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def get_login_url(self):
        if self.request.method not in ("GET", "HEAD") or self.request.headers.get("Authorization") \
                or "/api/" in self.request.path and not self.request.path.endswith((".html", ".ipynb", "/log")):
            raise BadRequest("a JupyterHub token with access to the jobs service is required", 403)
        return super().get_login_url()

    @property
    def user(self) -> dict:
        return self.current_user

    @property
    def is_admin(self) -> bool:
        model = self.current_user or {}
        return bool(model.get("admin")) or "admin:users" in set(model.get("scopes", []))

    def body(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            raise BadRequest(f"request body is {len(self.request.body)} bytes; at most {MAX_BODY} (keep data out of parameters: pass a path)", 413)
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as e:
            raise BadRequest(f"request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    def send(self, data, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def owned_job(self, job_id: str):
        with self.ctx.engine.connect() as conn:
            job = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if job is None or (job.owner != self.user["name"] and not self.is_admin):
            raise BadRequest(f"no job {job_id!r} of yours", 404)
        return job

    def owned_run(self, run_id: str):
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        if run is None or (run.owner != self.user["name"] and not self.is_admin):
            raise BadRequest(f"no run {run_id!r} of yours", 404)
        return run


def job_model(ctx, job, last_run=None) -> dict:
    profile = ctx.settings.profile(job.profile)
    model = {
        "id": job.id, "owner": job.owner, "name": job.name, "notebook": job.notebook,
        "content_hash": job.content_hash, "track_latest": job.track_latest,
        "parameters": job.parameters, "profile": job.profile,
        "price_per_hour": profile.price_per_hour if profile else None,
        "schedule": job.schedule, "timezone": job.timezone,
        "timeout_s": job.timeout_s, "max_retries": job.max_retries, "retry_delay_s": job.retry_delay_s,
        "concurrency": job.concurrency, "webhook_url": job.webhook_url, "notify_on": job.notify_on,
        "paused": job.paused, "next_run_at": iso(job.next_run_at) if not job.paused else None,
        "created_at": iso(job.created_at), "updated_at": iso(job.updated_at),
        "url": f"{ctx.prefix}api/jobs/{job.id}",
    }
    if job.schedule:
        model["schedule_description"] = cron.describe(job.schedule, job.timezone)
    if last_run is not None:
        model["last_run"] = run_model(last_run, ctx.prefix)
    return model


class JobsHandler(Base):
    @web.authenticated
    async def get(self):
        with self.ctx.engine.connect() as conn:
            q = select(jobs).order_by(jobs.c.created_at.desc())
            if not (self.is_admin and self.get_argument("all", "") in ("1", "true")):
                q = q.where(jobs.c.owner == self.user["name"])
            rows = conn.execute(q).all()
            last = {}
            for job in rows:
                last[job.id] = conn.execute(
                    select(runs).where(runs.c.job_id == job.id).order_by(runs.c.created_at.desc()).limit(1)
                ).first()
        self.send({"jobs": [job_model(self.ctx, j, last.get(j.id)) for j in rows]})

    @web.authenticated
    async def post(self):
        body = self.body()
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
        user = self.user["name"]
        rules = self.ctx.rules
        home = rules.home(user)
        try:
            path = resolve_in_home(home, body.get("notebook"))
            nb, raw = read_notebook(path, body.get("notebook"))
            params = check_parameters(body.get("parameters"), declared_parameters(nb))
        except NotebookError as e:
            raise BadRequest(str(e)) from None
        groups = await self.ctx.hub.groups(user)
        profile = rules.profile(body.get("profile", self.ctx.default_profile), groups)
        schedule, tz = rules.schedule(body)
        fields = {"timeout_s": 3600, "max_retries": 0, "retry_delay_s": 30.0, "concurrency": "skip",
                  "webhook_url": None, "notify_on": ["failure"], "track_latest": False}
        rules.common(body, fields)
        notebook = relative_to_home(home, path)
        job_id = new_id()
        snapshot = self.ctx.data_dir / "jobs" / "snapshots" / user / f"{job_id}.ipynb"
        now = utcnow()
        values = dict(
            id=job_id, owner=user, name=fields.pop("name", None) or Path(notebook).stem, notebook=notebook,
            snapshot=str(snapshot), content_hash=content_hash(raw), parameters=params, profile=profile.slug,
            schedule=schedule, timezone=tz, paused=False,
            next_run_at=cron.next_times(schedule, tz)[0] if schedule else None,
            created_at=now, updated_at=now, **fields,
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
        log.info("%s created job %s (%s, %s, %s)", user, job_id, notebook, profile.slug, schedule or "once")
        self.send(job_model(self.ctx, job, last), 201)


class JobHandler(Base):
    @web.authenticated
    async def get(self, job_id):
        job = self.owned_job(job_id)
        with self.ctx.engine.connect() as conn:
            last = conn.execute(
                select(runs).where(runs.c.job_id == job.id).order_by(runs.c.created_at.desc()).limit(1)
            ).first()
        model = job_model(self.ctx, job, last)
        if job.schedule and not job.paused:
            model["next_runs"] = [iso(t) for t in cron.next_times(job.schedule, job.timezone, count=3)]
        self.send(model)

    @web.authenticated
    async def patch(self, job_id):
        job = self.owned_job(job_id)
        body = self.body()
        unknown = sorted(set(body) - PATCHABLE)
        if unknown:
            raise BadRequest(f"cannot change {', '.join(unknown)}; changeable: {', '.join(sorted(PATCHABLE))}")
        rules = self.ctx.rules
        values: dict = {}
        rules.common(body, values)
        if "profile" in body:
            values["profile"] = rules.profile(body["profile"], await self.ctx.hub.groups(job.owner)).slug
        if "parameters" in body:
            try:
                nb, _ = read_notebook(Path(job.snapshot), job.notebook)
                values["parameters"] = check_parameters(body["parameters"], declared_parameters(nb))
            except NotebookError as e:
                raise BadRequest(str(e)) from None
        if "schedule" in body or "timezone" in body:
            merged = {"schedule": job.schedule, "timezone": job.timezone, **{k: body[k] for k in ("schedule", "timezone") if k in body}}
            values["schedule"], values["timezone"] = rules.schedule(merged)
        schedule = values.get("schedule", job.schedule)
        paused = values.get("paused", job.paused)
        if schedule and ("schedule" in values or "timezone" in values or (job.paused and not paused)):
            # resuming does not catch up on the paused time: the next slot is in the future
            values["next_run_at"] = cron.next_times(schedule, values.get("timezone", job.timezone))[0]
        elif not schedule:
            values["next_run_at"] = None
        values["updated_at"] = utcnow()
        with self.ctx.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(**values))
            job = conn.execute(select(jobs).where(jobs.c.id == job.id)).first()
        self.ctx.scheduler.wake.set()
        self.send(job_model(self.ctx, job))

    @web.authenticated
    async def delete(self, job_id):
        job = self.owned_job(job_id)
        with self.ctx.engine.connect() as conn:
            active = conn.execute(select(runs).where(runs.c.job_id == job.id, runs.c.status.in_(ACTIVE))).all()
        for run in active:
            self.ctx.scheduler.cancel(run)
        with self.ctx.engine.begin() as conn:
            conn.execute(delete(runs).where(runs.c.job_id == job.id, runs.c.status.not_in(ACTIVE)))
            conn.execute(delete(jobs).where(jobs.c.id == job.id))
        Path(job.snapshot).unlink(missing_ok=True)
        if not active:  # running ones are cancelled and keep their files until they end
            shutil.rmtree(self.ctx.data_dir / "jobs" / "runs" / job.owner / job.id, ignore_errors=True)
        self.set_status(204)
        self.finish()


class RunsHandler(Base):
    @web.authenticated
    async def get(self, job_id):
        job = self.owned_job(job_id)
        limit = min(int(self.get_argument("limit", "100") or 100), 1000)
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(runs).where(runs.c.job_id == job.id).order_by(runs.c.created_at.desc()).limit(limit)
            ).all()
        self.send({"runs": [run_model(r, self.ctx.prefix) for r in rows]})

    @web.authenticated
    async def post(self, job_id):
        job = self.owned_job(job_id)
        run_id = self.ctx.scheduler.run_now(job)
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        self.send(run_model(run, self.ctx.prefix), 201)


class RunHandler(Base):
    @web.authenticated
    async def get(self, run_id):
        self.send(run_model(self.owned_run(run_id), self.ctx.prefix))


class RunFileHandler(Base):
    TYPES = {"output.ipynb": "application/x-ipynb+json", "output.html": "text/html; charset=utf-8",
             "log": "text/plain; charset=utf-8"}

    @web.authenticated
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
            raise BadRequest(f"run {run_id} {state} ({name}); status {run.status}", 404)
        self.set_header("Content-Type", self.TYPES[name])
        if name == "output.html":
            # a notebook's output is the user's content: sandbox it away from the hub's origin
            self.set_header("Content-Security-Policy", "sandbox allow-scripts allow-popups")
        if name == "output.ipynb":
            self.set_header("Content-Disposition", f'attachment; filename="{run_id}-output.ipynb"')
        self.finish(path.read_bytes())


class RunnerHandler(web.RequestHandler):
    """What a run's pod (kubernetes executor) fetches and sends back; see :mod:`.kube`.

    Authenticated by the run's own secret (``Authorization: hubml-run <secret>``), never by a
    hub token: only the pod of that run has it, and only while the run is running.
    """

    FILES = {"output.ipynb", "output.html", "result.json"}
    STATUSES = {"succeeded", "failed", "timed_out"}

    def initialize(self, ctx):
        self.ctx = ctx

    def check_xsrf_cookie(self):
        return  # no cookies here: the secret is in a header

    def write_error(self, status_code, **kwargs):
        Base.write_error(self, status_code, **kwargs)

    def _run(self, run_id: str):
        from .kube import TOKEN_FILE, token_hash

        scheme, _, secret = self.request.headers.get("Authorization", "").partition(" ")
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        path = self.ctx.scheduler.run_dir(run) / TOKEN_FILE if run is not None else None
        expected = path.read_text() if path is not None and path.exists() else ""
        if scheme != "hubml-run" or not expected or not hmac.compare_digest(token_hash(secret), expected):
            raise BadRequest("this endpoint is for a run's own pod: Authorization: hubml-run <the run's secret>", 403)
        if run.status != "running":
            raise BadRequest(f"run {run_id} is {run.status}, no longer running", 409)
        return run

    async def get(self, run_id, name):
        if name != "spec":
            raise BadRequest(f"GET {name}: only spec can be read here", 405)
        run = self._run(run_id)
        from .kube import REMOTE_SPEC

        spec = json.loads((self.ctx.scheduler.run_dir(run) / REMOTE_SPEC).read_text())
        spec["input"] = json.loads(Path(spec["input"]).read_text(encoding="utf-8"))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(spec))

    async def put(self, run_id, name):
        if name not in self.FILES:
            raise BadRequest(f"PUT {name}: a run sends {', '.join(sorted(self.FILES))}", 404)
        run = self._run(run_id)
        body = self.request.body
        if name != "output.html":
            try:
                data = json.loads(body)
            except ValueError as e:
                raise BadRequest(f"{name} is not JSON: {e}") from None
            if name == "output.ipynb" and not (isinstance(data, dict) and isinstance(data.get("cells"), list)):
                raise BadRequest("output.ipynb is not a notebook (no cells)")
            if name == "result.json":
                if not isinstance(data, dict) or data.get("status") not in self.STATUSES:
                    raise BadRequest(f"result.json needs status one of {', '.join(sorted(self.STATUSES))}")
                error, mlflow_id = data.get("error"), data.get("mlflow_run_id")
                if not (error is None or isinstance(error, str)) or not (
                        mlflow_id is None or isinstance(mlflow_id, str) and re.fullmatch(r"[0-9A-Za-z_-]{1,64}", mlflow_id)):
                    raise BadRequest("result.json: error must be a string or null, mlflow_run_id an MLflow run id or null")
                body = json.dumps({"status": data["status"], "error": error and error[:4000],
                                   "mlflow_run_id": mlflow_id, "runner_seconds": data.get("runner_seconds")}).encode()
        run_dir = self.ctx.scheduler.run_dir(run)
        tmp = run_dir / f".{name}.upload"
        tmp.write_bytes(body)
        os.replace(tmp, run_dir / name)
        if name == "result.json":
            self.ctx.scheduler.wake.set()
        self.set_status(204)
        self.finish()


class CancelHandler(Base):
    @web.authenticated
    async def post(self, run_id):
        run = self.owned_run(run_id)
        if run.status not in ACTIVE:
            raise BadRequest(f"run {run_id} already ended ({run.status})", 409)
        self.ctx.scheduler.cancel(run)
        self.send({"id": run_id, "status": "cancelled" if run.status == "queued" else "cancelling"}, 202)


class CronHandler(Base):
    @web.authenticated
    async def get(self):
        try:
            self.send(cron.preview(self.get_argument("schedule", ""), self.get_argument("timezone", "UTC")))
        except cron.CronError as e:
            raise BadRequest(str(e)) from None


class ProfilesHandler(Base):
    @web.authenticated
    async def get(self):
        groups = await self.ctx.hub.groups(self.user["name"])
        self.send({"profiles": [
            {"slug": p.slug, "display_name": p.display_name, "price_per_hour": p.price_per_hour,
             "gpu": f"{p.gpu_count} x {p.gpu_model}" if p.gpu_model else None, "default": p.slug == self.ctx.default_profile}
            for p in self.ctx.settings.profiles if p.allows(groups)
        ]})


class NotebookHandler(Base):
    """What a job on this notebook would take: its parameters, from the parameters cell."""

    @web.authenticated
    async def get(self):
        shown = self.get_argument("path", "")
        home = self.ctx.rules.home(self.user["name"])
        try:
            path = resolve_in_home(home, shown)
            nb, raw = read_notebook(path, shown)
        except NotebookError as e:
            raise BadRequest(str(e)) from None
        self.send({"notebook": relative_to_home(home, path), "content_hash": content_hash(raw),
                   "parameters": declared_parameters(nb)})


class HealthHandler(web.RequestHandler):
    def initialize(self, ctx):
        self.ctx = ctx

    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish({"status": "ok", "pid": os.getpid(), "started_at": self.ctx.started_at})


class Context:
    def __init__(self, settings, engine, scheduler, hub, hub_auth, prefix, data_dir):
        self.settings, self.engine, self.scheduler, self.hub = settings, engine, scheduler, hub
        self.hub_auth, self.prefix, self.data_dir = hub_auth, prefix, Path(data_dir)
        self.rules = JobRules(settings, self.data_dir)
        self.default_profile = next((p.slug for p in settings.profiles if p.default), settings.profiles[0].slug)
        self.started_at = iso(utcnow())


def make_app(ctx: Context):
    from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated

    # every handler authenticates with the hub
    def authed(cls):
        return type(cls.__name__, (HubOAuthenticated, cls), {})

    class CallbackHandler(HubOAuthCallbackHandler):
        def initialize(self):
            self.hub_auth = ctx.hub_auth

    p = ctx.prefix
    kw = {"ctx": ctx}
    handlers = [
        (p + "oauth_callback", CallbackHandler),
        (p + "hubml/health", HealthHandler, kw),
        (p + "api/jobs", authed(JobsHandler), kw),
        (p + r"api/jobs/([0-9a-f]+)", authed(JobHandler), kw),
        (p + r"api/jobs/([0-9a-f]+)/runs", authed(RunsHandler), kw),
        (p + r"api/runs/([0-9a-f]+)", authed(RunHandler), kw),
        (p + r"api/runs/([0-9a-f]+)/(output\.ipynb|output\.html|log)", authed(RunFileHandler), kw),
        (p + r"api/runs/([0-9a-f]+)/cancel", authed(CancelHandler), kw),
        (p + r"api/runs/([0-9a-f]+)/runner/([\w.-]+)", RunnerHandler, kw),
        (p + "api/cron", authed(CronHandler), kw),
        (p + "api/profiles", authed(ProfilesHandler), kw),
        (p + "api/notebook", authed(NotebookHandler), kw),
    ]
    return web.Application(handlers, cookie_secret=os.urandom(32), max_body_size=32 * 1024**2, hub_auth=ctx.hub_auth)


async def notifier(ctx: Context, run_id: str) -> None:
    """POST the finished run to the job's webhook when the job asks for it."""
    with ctx.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        job = conn.execute(select(jobs).where(jobs.c.id == run.job_id)).first() if run else None
    if run is None or job is None or not job.webhook_url:
        return
    kind = "success" if run.status == "succeeded" else "failure"
    if kind not in (job.notify_on or []):
        return
    payload = {"event": f"run.{run.status}", "job": job_model(ctx, job), "run": run_model(run, ctx.prefix)}
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(
            job.webhook_url, method="POST", body=json.dumps(payload), raise_error=False, request_timeout=10,
            headers={"Content-Type": "application/json", "User-Agent": "hubml-jobs"},
        )
        log.info("webhook for run %s: HTTP %s", run_id, resp.code)
    except Exception as e:
        log.warning("webhook for run %s failed: %s", run_id, e)


def db_url(settings) -> str:
    if settings.jobs.db_url:
        return settings.jobs.db_url
    path = settings.data_dir / "jobs" / "jobs.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def main() -> int:
    from jupyterhub.services.auth import HubOAuth
    from tornado import ioloop

    from hubml.hub_config.settings import load_settings

    from .executor import LocalExecutor

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    settings = load_settings()
    engine = make_engine(db_url(settings))
    init_db(engine)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jobs/")
    if settings.jobs.executor == "kubernetes":
        from .kube import KubernetesExecutor

        executor = KubernetesExecutor(settings)
    else:
        executor = LocalExecutor(warm_spares=settings.jobs.warm_runners, max_idle=settings.jobs.max_concurrent_runs)
    hub = HubClient()
    public = os.environ.get("HUBML_PUBLIC_URL", "")
    scheduler = Scheduler(engine, settings, executor, settings.data_dir, hub=hub, public_url=public)
    ctx = Context(settings, engine, scheduler, hub, HubOAuth(cache_max_age=60), prefix, settings.data_dir)

    async def notify(run_id):
        await notifier(ctx, run_id)

    scheduler.notify = notify
    scheduler.recover()
    app = make_app(ctx)
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:5001")
    port = int(service_url.rsplit(":", 1)[-1].split("/")[0])
    app.listen(port, address=os.environ.get("HUBML_SERVICE_BIND", "127.0.0.1"), xheaders=True)
    log.info("jobs service on 127.0.0.1:%s%s (pid %s, db %s)", port, prefix, os.getpid(), engine.url.render_as_string(hide_password=True))

    loop = ioloop.IOLoop.current()
    task = None

    def start_scheduler():
        nonlocal task
        task = asyncio.ensure_future(scheduler.loop())

    loop.add_callback(start_scheduler)

    def shutdown(signum, frame):
        # runs keep going: they are in their own sessions and the next start re-attaches them
        log.info("stopping (signal %s); running jobs continue", signum)
        executor.close()
        loop.add_callback_from_signal(loop.stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
