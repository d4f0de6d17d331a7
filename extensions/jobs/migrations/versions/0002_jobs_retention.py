"""Per-job history retention: keep the newest N runs and/or runs of the last D days.

Revision ID: jobs_0002
Revises: jobs_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "jobs_0002"
down_revision = "jobs_0001"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        # null: the service's defaults (jobs.keep_runs, jobs.keep_days)
        batch.add_column(sa.Column("keep_runs", sa.Integer))
        batch.add_column(sa.Column("keep_days", sa.Integer))
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_finished_at", "runs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("keep_days")
        batch.drop_column("keep_runs")
