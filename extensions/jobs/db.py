"""The jobs store: job definitions and their runs, in SQLite (WAL) or PostgreSQL.

Every state change that must happen at most once is a conditional write decided by the
database, never by the service's memory, so a service killed at any moment and started again
cannot lose or duplicate a run:

- a scheduled slot becomes a run by inserting ``(job_id, scheduled_for, attempt)``, which is
  unique, in the same transaction that moves the job's ``next_run_at`` forward only if it still
  holds the value that was read (compare-and-set);
- a queued run is claimed with ``UPDATE ... WHERE status = 'queued'``: one claimer wins;
- a retry is inserted in the transaction that finishes the failed attempt.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped")
ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "timed_out", "cancelled", "skipped")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(255), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    # where the user keeps it (relative to their home) and the copy runs execute
    Column("notebook", Text, nullable=False),
    Column("snapshot", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("track_latest", Boolean, nullable=False, default=False),
    Column("parameters", JSON, nullable=False),
    Column("profile", String(63), nullable=False),
    Column("schedule", String(200)),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("timeout_s", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("retry_delay_s", Float, nullable=False),
    Column("concurrency", String(8), nullable=False, default="skip"),
    Column("webhook_url", Text),
    Column("notify_on", JSON, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    Column("next_run_at", DateTime, index=True),  # UTC, naive
    # history kept for this job (null: the service's jobs.keep_runs / jobs.keep_days)
    Column("keep_runs", Integer),
    Column("keep_days", Integer),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("owner", String(255), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | schedule | catch-up | retry
    Column("status", String(16), nullable=False, index=True),
    # the slot this run fills: the cron time for scheduled runs, the request time otherwise
    Column("scheduled_for", DateTime, nullable=False),
    Column("not_before", DateTime, nullable=False),  # retries wait out their backoff
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime, index=True),
    Column("duration_s", Float),
    Column("cost_usd", Float),
    Column("price_per_hour", Float, nullable=False),
    Column("profile", String(63), nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("mlflow_run_id", String(64)),
    Column("error", Text),
    Column("pid", Integer),
    Column("gpu_devices", String(64)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    UniqueConstraint("job_id", "scheduled_for", "attempt", name="one_run_per_slot_and_attempt"),
)


def new_id() -> str:
    return secrets.token_hex(6)


def utcnow() -> dt.datetime:
    """Naive UTC with millisecond precision (what both SQLite and PostgreSQL round-trip)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: dt.datetime | None) -> str | None:
    return value.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            conn.isolation_level = None  # pysqlite must not BEGIN on its own (see _begin)
            cur = conn.cursor()
            # WAL: readers never block the writer; the API stays responsive while runs finish
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # write transactions take the lock up front: no deadlock between two upgrading readers
        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


MIGRATIONS = Path(__file__).parent / "migrations"


def init_db(engine: Engine) -> None:
    """Create or upgrade the store's schema (alembic revisions in ``migrations/``)."""
    from hubml.extensions.common.migrate import upgrade

    upgrade(engine, "jobs", MIGRATIONS, ("jobs", "runs"))
