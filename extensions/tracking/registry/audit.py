"""The registry's audit log: an append-only SQL table of every alias move and refusal, and the
rollback rule that replays it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .gates import GateReport, GateResult
from .validation import CHAMPION, MAX_ALIAS_LENGTH, MAX_MODEL_NAME_LENGTH

# One JSON object per alias move, on its own logger so operators can route it to a SIEM
audit_log = logging.getLogger("hubml.audit.registry")

MIGRATIONS = Path(__file__).parent / "migrations"
_metadata = sa.MetaData()
_audit = sa.Table(
    "hubml_registry_audit",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("model", sa.String(MAX_MODEL_NAME_LENGTH), nullable=False, index=True),
    sa.Column("alias", sa.String(MAX_ALIAS_LENGTH)),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("gates", sa.Text),  # JSON list of {name, passed, detail}
)
# Defence in depth on SQLite: the database itself refuses to rewrite history. On PostgreSQL,
# grant the service role INSERT and SELECT only.
for _op in ("UPDATE", "DELETE"):
    sa.event.listen(
        _audit,
        "after_create",
        sa.DDL(
            f"CREATE TRIGGER IF NOT EXISTS hubml_registry_audit_no_{_op.lower()} BEFORE {_op} "
            "ON hubml_registry_audit BEGIN SELECT RAISE(ABORT, 'the registry audit log is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One recorded action. ``alias`` moves ``from_version`` -> ``to_version`` (either may be None)."""

    id: int
    at: str
    action: str
    model: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    gates: list[dict[str, Any]] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_audit_url(data_dir: str | Path) -> str:
    """The SQLite audit database in the platform's data dir."""
    return f"sqlite:///{Path(data_dir).resolve() / 'registry-audit.sqlite'}"


class AuditLog:
    """Append-only record of registry actions in a SQL database (SQLite file or PostgreSQL).

    There is deliberately no update or delete method. The table is created (or upgraded: its
    alembic revisions are in ``migrations/``) on first use.
    """

    def __init__(self, url: str):
        self.url = url
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                url = sa.engine.make_url(self.url)
                if url.get_backend_name() == "sqlite" and url.database not in (
                    None,
                    "",
                    ":memory:",
                ):
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url)
                from hubml.extensions.common.migrate import upgrade

                upgrade(engine, "audit", MIGRATIONS, ("hubml_registry_audit",))
                self._engine = engine
            return self._engine

    def record(
        self,
        *,
        action: str,
        model: str,
        actor: str,
        alias: str | None = None,
        from_version: str | None = None,
        to_version: str | None = None,
        reason: str = "",
        gates: GateReport | list[GateResult] | None = None,
    ) -> AuditEntry:
        """Append one entry (UTC timestamp now) and log it as a JSON line."""
        if isinstance(gates, GateReport):
            gates = gates.results
        gate_rows = (
            None
            if gates is None
            else [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in gates]
        )
        row = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "model": model,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "actor": actor,
            "reason": reason or "",
            "gates": None if gate_rows is None else json.dumps(gate_rows),
        }
        with self._connect().begin() as conn:
            entry_id = conn.execute(_audit.insert().values(**row)).inserted_primary_key[0]
        entry = AuditEntry(id=entry_id, **{**row, "gates": gate_rows})
        audit_log.info("%s", json.dumps(entry.to_dict(), sort_keys=True))
        return entry

    def entries(self, model: str | None = None) -> list[AuditEntry]:
        """Entries in the order they were recorded (newest last), for one model or all."""
        query = sa.select(_audit).order_by(_audit.c.id)
        if model is not None:
            query = query.where(_audit.c.model == model)
        with self._connect().connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(**{**r, "gates": json.loads(r["gates"]) if r["gates"] else None})
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def previous_champion(entries: Iterable[AuditEntry]) -> str | None:
    """The version a rollback would restore, by replaying ``@champion`` moves as a stack.

    Each approval pushes the champion it replaced; each rollback pops. So after v1, v2, v3 were
    approved, rollbacks restore v2 and then v1, and a third is refused.
    """
    stack: list[str] = []
    for e in entries:
        if e.alias != CHAMPION or e.action not in ("approve", "rollback"):
            continue
        if e.action == "rollback":
            if stack:
                stack.pop()
        elif e.from_version is not None:
            stack.append(e.from_version)
    return stack[-1] if stack else None
