"""The registry's audit entries in words, for the model page and the publish panel (no imports:
the panel must stay light)."""

from __future__ import annotations


def _v(version) -> str:
    return f"v{version}" if version not in (None, "") else "none"


def describe_move(entry: dict) -> str:
    """What an entry did to an alias: ``@champion: v1 → v2`` for a move; a request moves
    nothing, so it reads ``asks v2 as @champion (now v1)``; entries without an alias: ``""``."""
    alias = entry.get("alias")
    if not alias:
        return ""
    if entry.get("action") == "request_promotion":
        return (
            f"asks {_v(entry.get('to_version'))} as @{alias} (now {_v(entry.get('from_version'))})"
        )
    return f"@{alias}: {_v(entry.get('from_version'))} → {_v(entry.get('to_version'))}"
