"""The cost ledger: what each server, app and job run has cost, in the platform's database.

One row per thing that runs (``kind``: ``server``, ``app`` or ``job``; ``ref`` names it once:
``alice/`` + the hub's start time for a server, the run id for a job run), with the profile and
the price per hour in force when it started, its start, and its end once it has ended. A charge
is price × (end − start), or × (now − start) while it runs. Opening the same thing twice is a
no-op (the pair kind/ref is unique), so re-reading the hub after a restart charges nothing twice.

SQLite (WAL) under ``<data_dir>/cost/`` by default, ``cost.db_url`` (PostgreSQL) in production.
Written by the cost service (servers and apps, from the hub's own records) and the jobs service
(its runs, from its own clock); read by the cost service's API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

KINDS = ("server", "app", "job")

metadata = MetaData()
charges = Table(
    "charges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("ref", String(300), nullable=False),
    Column("user", String(255), nullable=False, index=True),
    Column("groups", JSON, nullable=False, default=list),  # the user's groups when it started
    Column("what", String(255), nullable=False),  # as people read it: "alice's server", a job name
    Column("profile", String(63), nullable=False),
    Column("price_per_hour", Float, nullable=False),
    Column("started_at", DateTime, nullable=False),  # naive UTC
    Column("ended_at", DateTime, index=True),
    Column("seen_at", DateTime, nullable=False),  # last time it was known to run
    Column("end_reason", Text),
    UniqueConstraint("kind", "ref", name="uq_charges_kind_ref"),
)

# budgets admins set at run time, over the settings' (usd NULL: none, whatever the settings say)
budgets = Table(
    "budgets",
    metadata,
    Column("scope", String(8), primary_key=True),  # user | group
    Column("name", String(255), primary_key=True),
    Column("usd", Float),
    Column("set_by", String(255), nullable=False),
    Column("set_at", DateTime, nullable=False),
)

MIGRATIONS = Path(__file__).parent / "migrations"


def init_ledger(engine) -> None:
    from hubml.extensions.common.migrate import upgrade

    upgrade(engine, "cost", MIGRATIONS, ("charges",))


def set_budget(engine, scope: str, name: str, usd: float | None, by: str, now: dt.datetime) -> None:
    """An admin's budget for ``scope`` (user or group) ``name``: USD a month, or None for none."""
    from sqlalchemy import delete

    with engine.begin() as conn:
        conn.execute(delete(budgets).where(budgets.c.scope == scope, budgets.c.name == name))
        conn.execute(
            insert(budgets).values(scope=scope, name=name, usd=usd, set_by=by, set_at=naive(now))
        )


def budget_overrides(engine) -> dict[tuple[str, str], float | None]:
    with engine.connect() as conn:
        return {(r.scope, r.name): r.usd for r in conn.execute(select(budgets))}


def db_url(settings) -> str:
    from hubml.extensions.common.app import store_url

    return store_url(settings.cost.db_url, settings.data_dir, "cost", "ledger.db")


def open_ledger_at(url: str):
    """The ledger's engine at ``url``, made and upgraded."""
    from hubml.extensions.jobs.db import make_engine

    engine = make_engine(url)
    init_ledger(engine)
    return engine


def open_ledger(settings):
    return open_ledger_at(db_url(settings))


def naive(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def open_charge(
    engine,
    kind: str,
    ref: str,
    *,
    user: str,
    profile: str,
    price_per_hour: float,
    started_at: dt.datetime,
    what: str = "",
    groups: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> bool:
    """Record that ``kind``/``ref`` started; False when it was already recorded."""
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)} (got {kind!r})")
    started = naive(started_at)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(charges).values(
                    kind=kind,
                    ref=ref,
                    user=user,
                    groups=sorted(groups),
                    what=what or ref,
                    profile=profile,
                    price_per_hour=float(price_per_hour),
                    started_at=started,
                    seen_at=naive(now) if now else started,
                )
            )
    except IntegrityError:
        return False
    return True


def close_charge(engine, kind: str, ref: str, ended_at: dt.datetime, reason: str = "") -> bool:
    """Record the end of ``kind``/``ref``; False when it was not open (unknown or ended)."""
    with engine.begin() as conn:
        done = conn.execute(
            update(charges)
            .where(charges.c.kind == kind, charges.c.ref == ref, charges.c.ended_at.is_(None))
            .values(ended_at=naive(ended_at), seen_at=naive(ended_at), end_reason=reason or None)
        )
    return done.rowcount > 0


def drop_charge(engine, kind: str, ref: str) -> bool:
    """Forget an open charge of something that did not start after all (a job run put back in
    its queue): it is opened again, from its real start, when it does."""
    from sqlalchemy import delete

    with engine.begin() as conn:
        done = conn.execute(
            delete(charges).where(
                charges.c.kind == kind, charges.c.ref == ref, charges.c.ended_at.is_(None)
            )
        )
    return done.rowcount > 0


def latest_end(engine, kind: str) -> dt.datetime | None:
    from sqlalchemy import func

    with engine.connect() as conn:
        return conn.execute(
            select(func.max(charges.c.ended_at)).where(charges.c.kind == kind)
        ).scalar()


def mark_seen(engine, ids: list[int], now: dt.datetime) -> None:
    if ids:
        with engine.begin() as conn:
            conn.execute(update(charges).where(charges.c.id.in_(ids)).values(seen_at=naive(now)))


def open_charges(engine, kinds: Iterable[str] = KINDS) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(charges).where(charges.c.ended_at.is_(None), charges.c.kind.in_(list(kinds)))
        ).all()


def cost_between(row, start: dt.datetime, end: dt.datetime) -> tuple[float, float]:
    """(seconds, USD) of ``row`` inside [start, end) (naive UTC); running rows count to ``end``."""
    begin = max(row.started_at, start)
    finish = min(row.ended_at or end, end)
    seconds = max(0.0, (finish - begin).total_seconds())
    return seconds, row.price_per_hour * seconds / 3600


def month_start(now: dt.datetime) -> dt.datetime:
    now = naive(now)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: dt.datetime) -> dt.datetime:
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def rows_between(engine, start: dt.datetime, end: dt.datetime, user: str | None = None) -> list:
    """Charges that ran at some time in [start, end), optionally one user's."""
    cond = and_(
        charges.c.started_at < end, or_(charges.c.ended_at.is_(None), charges.c.ended_at > start)
    )
    if user is not None:
        cond = and_(cond, charges.c.user == user)
    with engine.connect() as conn:
        return conn.execute(select(charges).where(cond).order_by(charges.c.started_at)).all()


def spent(engine, user: str, now: dt.datetime) -> float:
    """What ``user`` has spent this month (UTC) until ``now``, running things included."""
    start = month_start(now)
    return sum(
        cost_between(r, start, naive(now))[1] for r in rows_between(engine, start, naive(now), user)
    )
