"""Each hubml store's schema, brought up to date with alembic when its service starts.

A store's revisions live in its package (``extensions/<store>/migrations/``, plain alembic
revision files; no ``env.py``: this module is the environment). Each store keeps its own version
table (``hubml_<store>_version``), so several stores can share one PostgreSQL database. A store
made before it had migrations (its tables, no version table) is stamped at its first revision,
which is that release's schema, and then upgraded: an existing data dir opens after an upgrade
with nothing lost.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("hubml.migrate")


def _config(location: Path, store: str, connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = version_table(store)
    return cfg


def version_table(store: str) -> str:
    return f"hubml_{store}_version"


def upgrade(engine, store: str, location: Path, tables: tuple[str, ...]) -> str:
    """Upgrade the store at ``engine`` to its newest revision and return it. ``tables``: the
    names its first revision creates (how a store older than its migrations is recognised)."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.begin() as conn:
        cfg = _config(location, store, conn)
        script = ScriptDirectory.from_config(cfg)
        head = script.get_current_head()
        context = MigrationContext.configure(conn, opts={"version_table": version_table(store)})
        current = context.get_current_revision()
        if current == head:
            return head
        if current is None and set(tables) <= set(sa.inspect(conn).get_table_names()):
            base = script.get_base()
            log.info("the %s store predates its migrations: it is revision %s", store, base)
            command.stamp(cfg, base)
        command.upgrade(cfg, "head")
    log.info("the %s store is at revision %s (was %s)", store, head, current or "empty")
    return head


def revision(engine, store: str) -> str | None:
    """The store's current revision (None: not made by a migration yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": version_table(store)})
        return context.get_current_revision()


def run_migrations() -> None:
    """The body of each store's ``migrations/env.py``: run on the connection :func:`upgrade`
    passes in, with the store's own version table."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        version_table=attributes["version_table"],
        render_as_batch=True,  # SQLite alters a table by copying it
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
