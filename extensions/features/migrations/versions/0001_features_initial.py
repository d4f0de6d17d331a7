"""Feature proposals and the audit trail of a feature project.

Revision ID: features_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "features_0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "feature_proposals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("review", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("proposed_by", sa.String(255), nullable=False),
        sa.Column("proposed_at", sa.DateTime, nullable=False),
        sa.Column("reviewed_by", sa.String(255)),
        sa.Column("reviewed_at", sa.DateTime),
        sa.Column("comment", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_feature_proposals_project", "feature_proposals", ["project", "state"])
    op.create_table(
        "feature_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_feature_audit_project", "feature_audit", ["project", "at"])
