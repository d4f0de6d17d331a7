"""Every store's schema comes from its alembic revisions, and a data dir made by the release
before migrations opens after an upgrade with nothing lost."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from hubml.extensions.common import migrate

PREVIOUS = Path(__file__).resolve().parent.parent / "fixtures" / "release-0.1.0"


def _jobs():
    from hubml.extensions.jobs import db

    return db.metadata, lambda engine: db.init_db(engine), db.make_engine


def _apps():
    from hubml.extensions.apps import store
    from hubml.extensions.jobs.db import make_engine

    return store.metadata, store.init_store, make_engine


def _audit():
    from hubml.extensions.tracking.registry import audit

    def init(engine):
        migrate.upgrade(engine, "audit", audit.MIGRATIONS, ("hubml_registry_audit",))

    return audit._metadata, init, sa.create_engine


STORES = {"jobs": _jobs, "apps": _apps, "audit": _audit}
FILES = {"jobs": "jobs.db", "apps": "apps.db", "audit": "registry-audit.sqlite"}


def differences(engine, metadata) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # the version table is alembic's, not the store's
                "include_name": lambda name, kind, _p: (
                    not (kind == "table" and name.endswith("_version"))
                ),
            },
        )
        return compare_metadata(context, metadata)


@pytest.mark.parametrize("store", sorted(STORES))
def test_the_revisions_build_exactly_the_tables_the_code_declares(tmp_path, store):
    metadata, init, make_engine = STORES[store]()
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    init(engine)
    assert differences(engine, metadata) == []
    head = migrate.revision(engine, store)
    assert head and head.startswith(f"{store}_")
    init(engine)  # a second start changes nothing
    assert migrate.revision(engine, store) == head


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_store_made_by_the_previous_release_opens_with_nothing_lost(tmp_path, store):
    metadata, init, make_engine = STORES[store]()
    path = tmp_path / FILES[store]
    shutil.copy(PREVIOUS / FILES[store], path)
    with sqlite3.connect(path) as raw:
        before = {
            table: raw.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in metadata.tables
        }
    assert any(before.values()), "the fixture has history to keep"
    engine = make_engine(f"sqlite:///{path}")
    init(engine)
    assert differences(engine, metadata) == []
    with engine.connect() as conn:
        for table, rows in before.items():
            after = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1")).all()
            assert [tuple(r)[: len(rows[0])] for r in after] == rows if rows else after == []


def test_jobs_history_upgraded_is_read_by_the_service_code(tmp_path):
    from sqlalchemy import select

    from hubml.extensions.jobs import db

    shutil.copy(PREVIOUS / "jobs.db", tmp_path / "jobs.db")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.init_db(engine)
    with engine.connect() as conn:
        job = conn.execute(select(db.jobs)).one()
        statuses = [r.status for r in conn.execute(select(db.runs).order_by(db.runs.c.id))]
    assert job.name == "nightly retrain" and job.parameters == {"alpha": 0.5}
    assert job.keep_runs is None and job.keep_days is None  # the service's defaults apply
    assert statuses == ["succeeded", "failed", "succeeded"]


def test_the_audit_log_stays_append_only_after_an_upgrade(tmp_path):
    from hubml.extensions.tracking.registry.audit import AuditLog

    shutil.copy(PREVIOUS / "registry-audit.sqlite", tmp_path / "a.sqlite")
    log = AuditLog(f"sqlite:///{tmp_path / 'a.sqlite'}")
    log.record(action="set_alias", model="churn", actor="carol", alias="champion", to_version="3")
    assert [e.actor for e in log.entries("churn")] == ["alice", "bob", "carol"]
    with sqlite3.connect(tmp_path / "a.sqlite") as raw, pytest.raises(sqlite3.DatabaseError):
        raw.execute("DELETE FROM hubml_registry_audit")
