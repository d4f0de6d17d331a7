"""The registry's audit log as released before migrations: append-only, enforced on SQLite.

Revision ID: audit_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "hubml_registry_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("alias", sa.String(255)),
        sa.Column("from_version", sa.String(20)),
        sa.Column("to_version", sa.String(20)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("gates", sa.Text),
    )
    op.create_index("ix_hubml_registry_audit_model", "hubml_registry_audit", ["model"])
    if op.get_bind().dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER IF NOT EXISTS hubml_registry_audit_no_{what.lower()} "
                f"BEFORE {what} ON hubml_registry_audit BEGIN "
                "SELECT RAISE(ABORT, 'the registry audit log is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table("hubml_registry_audit")
