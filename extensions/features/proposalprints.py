"""What a feature view computes, whatever it is called: its fingerprints.

:func:`normalise_path` spells a source path one way; :func:`fingerprint` hashes a view's
normalised source path, timestamp field and features, :func:`feature_fingerprints` each feature's
source path and column. They read proposed views (:mod:`.proposalread`) and catalog views
(:mod:`.catalog`) alike, so :mod:`.proposalcheck` finds a proposal that copies existing data.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)", re.DOTALL)


def normalise_path(path: str | None) -> str:
    """A source path spelled one way: ``./data/../data/x.parquet`` and ``data/x.parquet/`` are
    ``data/x.parquet``; ``S3://b/x`` is ``s3://b/x``; ``file:///d/x`` is ``/d/x``. (POSIX
    ``os.path.normpath``, applied after the scheme, so ``s3://`` keeps both slashes.)"""
    if not path:
        return ""
    path = path.strip()
    match = _SCHEME.fullmatch(path)
    scheme, rest = (match.group(1).lower(), match.group(2)) if match else ("", path)
    if scheme == "file" and rest.startswith("/"):
        scheme = ""
    rest = posixpath.normpath(rest) if rest else ""
    if rest == ".":
        rest = ""
    if len(rest) > 1:
        rest = rest.rstrip("/")
    return f"{scheme}://{rest}" if scheme else rest


def _source_of(view: dict, sources: dict[str, dict] | None) -> tuple[str, str]:
    """(path, timestamp field) of a proposed view (``source``: a name, ``source_path``) or of a
    catalog view (``source``: a dict)."""
    source = view.get("source")
    if isinstance(source, dict):
        path, timestamp = source.get("path"), source.get("timestamp_field")
    else:
        known = (sources or {}).get(source) if isinstance(source, str) else None
        path = view.get("source_path") or (known or {}).get("path")
        timestamp = (known or {}).get("timestamp_field")
    return normalise_path(path), view.get("timestamp_field") or timestamp or ""


def _sha(parts) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def _dtype(dtype) -> str:
    return "".join(str(dtype or "").split()).lower()


def fingerprint(view: dict, sources: dict[str, dict] | None = None) -> str:
    """What a feature view computes, whatever it is called: sha256 over its normalised source
    path, its timestamp field and its sorted (feature name lowercased, dtype) pairs. ``sources``
    (by name) resolves a proposed view whose ``source`` is only a name."""
    path, timestamp = _source_of(view, sources)
    features = sorted([f["name"].lower(), _dtype(f.get("dtype"))] for f in view.get("features", []))
    return _sha(["view", path, timestamp, features])


def feature_fingerprints(view: dict, sources: dict[str, dict] | None = None) -> dict[str, str]:
    """Each feature's fingerprint: sha256 over (normalised source path, column name lowercased),
    so a feature reading the same column of the same source as another is found."""
    path, _ = _source_of(view, sources)
    return {f["name"]: _sha(["feature", path, f["name"].lower()]) for f in view.get("features", [])}
