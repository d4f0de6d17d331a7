"""The jobs store as released before migrations: jobs and their runs.

Revision ID: jobs_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "jobs_0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("notebook", sa.Text, nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("track_latest", sa.Boolean, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("schedule", sa.String(200)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("timeout_s", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("retry_delay_s", sa.Float, nullable=False),
        sa.Column("concurrency", sa.String(8), nullable=False),
        sa.Column("webhook_url", sa.Text),
        sa.Column("notify_on", sa.JSON, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_run_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_next_run_at", "jobs", ["next_run_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime, nullable=False),
        sa.Column("not_before", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("duration_s", sa.Float),
        sa.Column("cost_usd", sa.Float),
        sa.Column("price_per_hour", sa.Float, nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("gpu_devices", sa.String(64)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.UniqueConstraint(
            "job_id", "scheduled_for", "attempt", name="one_run_per_slot_and_attempt"
        ),
    )
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_index("ix_runs_owner", "runs", ["owner"])
    op.create_index("ix_runs_status", "runs", ["status"])


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("jobs")
