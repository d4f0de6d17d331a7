"""Budgets admins set at run time (over the settings' cost.budgets).

Revision ID: cost_0002
Revises: cost_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "cost_0002"
down_revision = "cost_0001"


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("usd", sa.Float),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.Column("set_at", sa.DateTime, nullable=False),
    )
