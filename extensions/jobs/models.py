"""Jobs and runs as the API shows them (what the panel, the home page and webhooks read)."""

from __future__ import annotations

from . import cron
from .db import iso


def job_model(ctx, job, last_run=None) -> dict:
    profile = ctx.settings.profile(job.profile)
    model = {
        "id": job.id,
        "owner": job.owner,
        "name": job.name,
        "notebook": job.notebook,
        "content_hash": job.content_hash,
        "track_latest": job.track_latest,
        "parameters": job.parameters,
        "profile": job.profile,
        "price_per_hour": profile.price_per_hour if profile else None,
        "schedule": job.schedule,
        "timezone": job.timezone,
        "timeout_s": job.timeout_s,
        "max_retries": job.max_retries,
        "retry_delay_s": job.retry_delay_s,
        "concurrency": job.concurrency,
        "webhook_url": job.webhook_url,
        "notify_on": job.notify_on,
        "paused": job.paused,
        # the history kept: this job's own limits, else the service's (0: no limit)
        "keep_runs": job.keep_runs if job.keep_runs is not None else ctx.settings.jobs.keep_runs,
        "keep_days": job.keep_days if job.keep_days is not None else ctx.settings.jobs.keep_days,
        "next_run_at": iso(job.next_run_at) if not job.paused else None,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "url": f"{ctx.public}api/jobs/{job.id}",
    }
    if job.schedule:
        model["schedule_description"] = cron.describe(job.schedule, job.timezone)
    if last_run is not None:
        model["last_run"] = run_model(last_run, ctx.public, ctx.mlflow_public)
    return model


def run_model(run, public_prefix: str, mlflow_public: str = "") -> dict:
    """A run as the API shows it; links are absolute URLs on the service's own origin."""
    base = f"{public_prefix}api/runs/{run.id}"
    return {
        "id": run.id,
        "job_id": run.job_id,
        "owner": run.owner,
        "status": run.status,
        "attempt": run.attempt,
        "trigger": run.trigger,
        "profile": run.profile,
        "parameters": run.parameters,
        "scheduled_for": iso(run.scheduled_for),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "cost_usd": run.cost_usd,
        "price_per_hour": run.price_per_hour,
        "mlflow_run_id": run.mlflow_run_id,
        "mlflow_url": f"{mlflow_public}#/runs/{run.mlflow_run_id}"
        if run.mlflow_run_id and mlflow_public
        else None,
        "error": run.error,
        "gpu_devices": run.gpu_devices,
        "links": {
            "output": f"{base}/output.ipynb",
            "html": f"{base}/output.html",
            "log": f"{base}/log",
            "cancel": f"{base}/cancel",
        },
    }
