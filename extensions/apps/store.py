"""The apps service's records: apps and their shares (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text

from hubml.extensions.common import urls

# short enough for the hub to route as a named server (app-<name>), and no "--"
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,24}[a-z0-9])?$")
MODEL_URI = re.compile(r"^models:/([^@/]+)@([A-Za-z0-9_-]+)$")

metadata = MetaData()
apps = Table(
    "apps",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("name", String(40), primary_key=True),
    Column("kind", String(8), nullable=False),  # source | model
    Column("source", Text),
    Column("model", Text),
    Column("profile", String(63), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("idle_timeout_s", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # starting | running | stopped
    Column("stopped_reason", Text),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
)
shares = Table(
    "shares",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(255), nullable=False, index=True),
    Column("app", String(40), nullable=False),
    Column("kind", String(8), nullable=False),  # user | group | link
    Column("target", String(255)),  # user or group name; the hub's share-code id for links
    Column("accept_url", Text),
    Column("expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("accepted_by", JSON, nullable=False, default=list),  # links: who accepted them
)


MIGRATIONS = Path(__file__).parent / "migrations"


def init_store(engine) -> None:
    """Create or upgrade the store's schema (alembic revisions in ``migrations/``)."""
    from hubml.extensions.common.migrate import upgrade

    upgrade(engine, "apps", MIGRATIONS, ("apps", "shares"))


def server_name(app: str) -> str:
    return f"app-{app}"


def app_url(owner: str, app: str) -> str:
    """Where people open the app: its owner's origin, the app's named server."""
    return urls.user_server_url(owner, server_name(app))
