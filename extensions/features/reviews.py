"""Proposals to a feature project and its audit trail, in the platform's database.

A proposal is the Python a person submitted (kept as written), what it defines (read without
running it: :mod:`.proposals`) and the review's findings. Its states: ``pending`` (waiting for a
project owner), ``rejected``, ``approved`` (being applied), ``applied`` (in the registry) or ``failed`` (approved,
but Feast refused to apply it; the error is kept). Every change to a project, by a proposal or
a saved feature service, is a row of the audit trail: who, what, when.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

STATES = ("pending", "rejected", "approved", "applied", "failed")

metadata = MetaData()
proposals = Table(
    "feature_proposals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(63), nullable=False),
    Column("title", String(255), nullable=False),
    Column("source", Text, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("review", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("proposed_by", String(255), nullable=False),
    Column("proposed_at", DateTime, nullable=False),
    Column("reviewed_by", String(255)),
    Column("reviewed_at", DateTime),
    Column("comment", Text),
    Column("error", Text),
)
audit = Table(
    "feature_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(63), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("detail", JSON, nullable=False),
)

MIGRATIONS = Path(__file__).parent / "migrations"


def db_url(settings) -> str:
    from hubml.extensions.common.app import store_url

    return store_url(settings.features.db_url, settings.data_dir, "features", "reviews.db")


def open_reviews_at(url: str):
    from hubml.extensions.common.migrate import upgrade
    from hubml.extensions.jobs.db import make_engine

    engine = make_engine(url)
    upgrade(engine, "features", MIGRATIONS, ("feature_proposals",))
    return engine


def _naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def _iso(when: dt.datetime | None) -> str | None:
    return (
        when.replace(tzinfo=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if when
        else None
    )


def record(engine, project: str, actor: str, action: str, subject: str, now, **detail) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(audit).values(
                project=project,
                at=_naive(now),
                actor=actor,
                action=action,
                subject=subject,
                detail=detail,
            )
        )


def trail(engine, project: str, limit: int = 100) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit)
            .where(audit.c.project == project)
            .order_by(audit.c.at.desc(), audit.c.id.desc())
            .limit(limit)
        ).all()
    return [
        {
            "at": _iso(r.at),
            "actor": r.actor,
            "action": r.action,
            "subject": r.subject,
            "detail": r.detail,
        }
        for r in rows
    ]


def add(
    engine, project: str, title: str, source: str, definition: dict, review: dict, by: str, now
) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(proposals).values(
                project=project,
                title=title,
                source=source,
                definition=definition,
                review=review,
                state="pending",
                proposed_by=by,
                proposed_at=_naive(now),
            )
        ).inserted_primary_key[0]


def as_json(row) -> dict:
    return {
        "id": row.id,
        "project": row.project,
        "title": row.title,
        "source": row.source,
        "definition": row.definition,
        "review": row.review,
        "state": row.state,
        "proposed_by": row.proposed_by,
        "proposed_at": _iso(row.proposed_at),
        "reviewed_by": row.reviewed_by,
        "reviewed_at": _iso(row.reviewed_at),
        "comment": row.comment,
        "error": row.error,
    }


def get(engine, proposal_id: int):
    with engine.connect() as conn:
        return conn.execute(select(proposals).where(proposals.c.id == proposal_id)).first()


def listed(engine, projects: list[str], state: str = "", limit: int = 200) -> list:
    query = select(proposals).where(proposals.c.project.in_(projects))
    if state:
        query = query.where(proposals.c.state == state)
    with engine.connect() as conn:
        return conn.execute(query.order_by(proposals.c.id.desc()).limit(limit)).all()


def decide(
    engine, proposal_id: int, state: str, by: str, comment: str, now, error: str = ""
) -> bool:
    """Move a pending proposal to ``state``; False when it was no longer pending (decided by
    someone else meanwhile): a proposal is decided once."""
    with engine.begin() as conn:
        done = conn.execute(
            update(proposals)
            .where(proposals.c.id == proposal_id, proposals.c.state == "pending")
            .values(
                state=state,
                reviewed_by=by,
                reviewed_at=_naive(now),
                comment=comment or None,
                error=error or None,
            )
        )
    return done.rowcount > 0


def set_outcome(engine, proposal_id: int, state: str, error: str = "") -> None:
    with engine.begin() as conn:
        conn.execute(
            update(proposals)
            .where(proposals.c.id == proposal_id)
            .values(state=state, error=error or None)
        )
