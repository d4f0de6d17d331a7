"""Whether MLflow's backend store is the one this hub has been using, before MLflow opens it.

``mlflow server`` creates a new, empty store wherever its URL points at nothing: a SQLite file
that was removed (a wrong restore, a cleaned disk) comes back empty, and every experiment and
run silently disappears from view, while the artifacts are still on disk. So the service keeps
a marker next to its data (``store.json``: which store, since when) once a store holds
MLflow's tables, and at every (re)start of the MLflow server checks that the store is there
and readable. If not, MLflow is not started: the front door answers 503 and the service's log
says, in one line, what is wrong and what to do.

Importing this module imports no heavy library (SQLAlchemy only for non-SQLite stores).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

MARKER = "store.json"


class StoreUnavailable(Exception):
    """The store this hub used is missing or unreadable; the message says what to do."""


def describe(uri: str) -> str:
    """The store's URL without a password, for logs and the marker."""
    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return uri


def sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def _tables(uri: str) -> set[str]:
    path = sqlite_path(uri)
    if path is not None:
        # read-only: never create the file, never change it
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        finally:
            conn.close()
        return {r[0] for r in rows}
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, pool_pre_ping=True)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check(uri: str, data_dir: Path) -> bool:
    """Raise :class:`StoreUnavailable` if the store this hub used is gone or unreadable.
    Returns whether the store holds MLflow's tables (False: a first start, MLflow creates it)."""
    marker = Path(data_dir) / MARKER
    used = json.loads(marker.read_text()) if marker.exists() else None
    since = f" since {used.get('since')}" if used else ""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        if used:
            raise StoreUnavailable(
                f"the MLflow database {path} is missing, but this hub has used it{since}; MLflow "
                "is not started, so it cannot replace it with an empty one. Restore the file "
                f"from a backup, or, to start over with an empty store, remove {marker}"
            )
        return False
    try:
        tables = _tables(uri)
    except Exception as e:  # sqlite3.DatabaseError, SQLAlchemy's OperationalError, ...
        first = (str(e).strip().splitlines() or [""])[0]
        raise StoreUnavailable(
            f"the MLflow store {describe(uri)} cannot be read ({type(e).__name__}: {first}); "
            "MLflow is not started. Check the database (its server, its credentials, the file's "
            "integrity) and restart the hub"
        ) from None
    if "experiments" in tables:
        return True
    if used:
        raise StoreUnavailable(
            f"the MLflow store {describe(uri)} has no MLflow tables, but this hub has used it"
            f"{since}; MLflow is not started, so it cannot create an empty store there. Restore "
            f"the database from a backup, or, to start over, remove {marker}"
        )
    return False


def remember(uri: str, data_dir: Path) -> None:
    """Record that this hub's data is in ``uri`` (once MLflow has created its tables there)."""
    marker = Path(data_dir) / MARKER
    if marker.exists():
        return
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "store": describe(uri),
                "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            }
        )
    )
    os.replace(tmp, marker)
