"""The apps store as released before migrations: apps and their shares.

Revision ID: apps_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "apps_0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("idle_timeout_s", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stopped_reason", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
    )
    op.create_table(
        "shares",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("app", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("accept_url", sa.Text),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("accepted_by", sa.JSON, nullable=False),
    )
    op.create_index("ix_shares_owner", "shares", ["owner"])


def downgrade() -> None:
    op.drop_table("shares")
    op.drop_table("apps")
