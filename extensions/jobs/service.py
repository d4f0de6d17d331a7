"""The ``jobs`` hub service: notebook jobs and cron schedules at ``/services/jobs/``.

JupyterHub starts and supervises this process (and starts it again if it dies); as root it runs
as the platform's account. Requests are authenticated by the service kit (hub tokens, or the
hub's OAuth cookie with its XSRF token for a browser); the routes are in :mod:`.handlers`, the
scheduler in :mod:`.scheduler`, the store in :mod:`.db`. Runs execute as their owners: through
the runner service on one machine (:mod:`.executor`, :mod:`.runnerd`) or as Kubernetes Jobs
(:mod:`.kube`).
"""

from __future__ import annotations

import json
import logging
import sys

from sqlalchemy import select
from tornado import httpclient

from hubml.extensions.common import urls
from hubml.extensions.common.app import (
    ServiceContext,
    StoreUnavailable,
    load_service_settings,
    make_app,
    open_store,
    serve,
    serve_unavailable,
    setup_logging,
)
from hubml.extensions.common.netcheck import CheckedResolver, URLNotAllowed, check_url_syntax

from .db import init_db, jobs, make_engine, runs
from .handlers import ROUTES
from .models import job_model, run_model
from .rules import JobRules
from .scheduler import Scheduler

log = logging.getLogger("hubml.jobs")


class JobsContext(ServiceContext):
    """What the jobs handlers share."""

    def __init__(self, settings, engine, **kw):
        super().__init__("jobs", settings, **kw)
        self.engine = engine
        self.data_dir = settings.data_dir
        self.rules = JobRules(settings)
        self.scheduler: Scheduler | None = None
        # links people follow are absolute URLs on the services' own origins
        self.public = urls.service_public_url("jobs")
        self.mlflow_public = urls.service_public_url("mlflow") if settings.tracking.enabled else ""

    def health(self) -> dict:
        return {**super().health(), "db": self.engine.url.get_backend_name()}


async def notifier(ctx: JobsContext, run_id: str) -> None:
    """POST the finished run to the job's webhook when the job asks for it, to an allowed host only."""
    with ctx.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        job = conn.execute(select(jobs).where(jobs.c.id == run.job_id)).first() if run else None
    if run is None or job is None or not job.webhook_url:
        return
    kind = "success" if run.status == "succeeded" else "failure"
    if kind not in (job.notify_on or []):
        return
    payload = {
        "event": f"run.{run.status}",
        "job": job_model(ctx, job),
        "run": run_model(run, ctx.public, ctx.mlflow_public),
    }
    client = httpclient.AsyncHTTPClient(
        force_instance=True,
        resolver=CheckedResolver(allowed_hosts=ctx.settings.jobs.webhook_allowed_hosts),
    )
    try:
        check_url_syntax(job.webhook_url)
        resp = await client.fetch(
            job.webhook_url,
            method="POST",
            body=json.dumps(payload),
            raise_error=False,
            request_timeout=10,
            follow_redirects=False,
            headers={"Content-Type": "application/json", "User-Agent": "hubml-jobs"},
        )
        log.info("webhook for run %s: HTTP %s", run_id, resp.code)
    except URLNotAllowed as e:
        log.warning("webhook for run %s not sent: %s", run_id, e)
    except Exception as e:
        log.warning("webhook for run %s failed: %s", run_id, e)
    finally:
        client.close()


def db_url(settings) -> str:
    from hubml.extensions.common.app import store_url

    return store_url(settings.jobs.db_url, settings.data_dir, "jobs", "jobs.db")


def make_executor(settings):
    if settings.jobs.executor == "kubernetes":
        from .kube import KubernetesExecutor

        return KubernetesExecutor(settings, urls.service_internal_url("jobs"))
    from .executor import LocalExecutor
    from .runnerd import socket_path

    return LocalExecutor(socket_path(settings.data_dir), urls.service_internal_url("jobs"))


def main() -> int:
    setup_logging()
    settings = load_service_settings()

    def init(url):
        engine = make_engine(url)
        init_db(engine)
        return engine

    try:
        engine = open_store("jobs", db_url(settings), init)
    except StoreUnavailable as problem:
        return serve_unavailable("jobs", problem)
    ctx = JobsContext(settings, engine)
    executor = make_executor(settings)
    scheduler = Scheduler(
        engine,
        settings,
        executor,
        settings.data_dir,
        ctx=ctx,
        mlflow_url=urls.service_internal_url("mlflow"),
    )
    ctx.scheduler = scheduler

    async def notify(run_id):
        await notifier(ctx, run_id)

    scheduler.notify = notify
    scheduler.recover()
    app = make_app(ctx, ROUTES, max_body_size=64 * 1024**2)
    log.info("jobs store %s", engine.url.render_as_string(hide_password=True))

    async def start():
        await scheduler.loop()

    # runs keep going when the service stops: they are in their own sessions, and the next
    # start re-attaches them
    serve(app, "jobs", on_start=start, on_stop=executor.close)
    return 0


if __name__ == "__main__":
    sys.exit(main())
