"""The cost ledger: one row per server, app or job run, priced when it started.

Revision ID: cost_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "cost_0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "charges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ref", sa.String(300), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("what", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("price_per_hour", sa.Float, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("seen_at", sa.DateTime, nullable=False),
        sa.Column("end_reason", sa.Text),
        sa.UniqueConstraint("kind", "ref", name="uq_charges_kind_ref"),
    )
    op.create_index("ix_charges_user", "charges", ["user"])
    op.create_index("ix_charges_ended_at", "charges", ["ended_at"])
