"""What fastlog sends: metric, param and tag items, their checks, and batches within MLflow's limits.

The checks run in the caller (:class:`.fastlog.BatchLogger`'s ``log_*`` methods), so mistakes
surface where they are made; :class:`_Batch` cuts the queue into ``log_batch`` requests that
respect MLflow's per-request limits. No heavy import.
"""

from __future__ import annotations

import math
import numbers
import posixpath
import re
from typing import Any, NamedTuple

# MLflow's limits (mlflow/utils/validation.py): per log_batch request and per entity.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
# MLflow caps a log_batch request at 1e6 bytes of JSON; stay clearly below it.
MAX_BATCH_BYTES = 900_000
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# MLflow's rule for metric/param/tag names (validate_param_and_metric_name, non-Windows).
_NAME_RE = re.compile(r"^[/\w.\- :]*$")
_ALLOWED_NAME = "letters, digits, underscores, dashes, periods, spaces, colons and slashes"


class Metric(NamedTuple):
    key: str
    value: float
    timestamp: int  # milliseconds since the epoch, fixed when the point was logged
    step: int


class Param(NamedTuple):
    key: str
    value: str


class Tag(NamedTuple):
    key: str
    value: str


# --- validation (runs in the caller, so mistakes surface where they are made) -----------------


def check_key(kind: str, key: Any) -> str:
    if not isinstance(key, str):
        raise ValueError(f"{kind} key must be a non-empty str, got {type(key).__name__} {key!r}")
    if not key:
        raise ValueError(f"{kind} key must be a non-empty str, got ''")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{kind} key {key[:40]!r}... is {len(key)} characters; MLflow allows at most {MAX_KEY_LENGTH}"
        )
    if not _NAME_RE.match(key):
        raise ValueError(
            f"{kind} key {key!r} has characters MLflow refuses; allowed are {_ALLOWED_NAME}"
        )
    normalized = posixpath.normpath(key)
    if normalized != key or normalized == "." or key.startswith(("..", "/")):
        raise ValueError(
            f"{kind} key {key!r} is not a clean relative path (MLflow refuses leading '/', '..', "
            f"'./', '//' and trailing '/'); use for example {normalized.lstrip('/')!r}"
        )
    return key


def check_metric_value(key: str, value: Any) -> float:
    if type(value) is float:  # the common case, kept fast
        number = value
    elif isinstance(value, bool | str | bytes) or value is None:
        raise ValueError(
            f"metric {key!r}: value {value!r} ({type(value).__name__}) is not a number; "
            "allowed are finite int/float values (or numpy/torch scalars), e.g. float(x)"
        )
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        try:
            number = float(value)  # numpy 0-d arrays, one-element tensors
        except (TypeError, ValueError):
            raise ValueError(
                f"metric {key!r}: value {value!r} ({type(value).__name__}) is not a number; "
                "allowed are finite int/float values (or numpy/torch scalars), e.g. loss.item()"
            ) from None
    if not math.isfinite(number):
        raise ValueError(
            f"metric {key!r}: value is {number}; only finite numbers are allowed (NaN and +/-inf "
            "are refused here, where they happen, instead of being stored as 0 or +/-1.8e308)"
        )
    return number


def check_int(what: str, key: str, value: Any, minimum: int = _INT64_MIN) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"metric {key!r}: {what} must be an int, got {type(value).__name__} {value!r}"
        )
    number = int(value)
    if not minimum <= number <= _INT64_MAX:
        raise ValueError(f"metric {key!r}: {what} {number} is outside {minimum}..{_INT64_MAX}")
    return number


def check_text(kind: str, key: str, value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        hint = (
            " (log long text as an artifact, e.g. mlflow.log_text, or as a tag: up to 8000)"
            if kind == "param"
            else " (log long text as an artifact, e.g. mlflow.log_text)"
        )
        raise ValueError(
            f"{kind} {key!r}: value is {len(text)} characters; MLflow allows at most {limit}{hint}"
        )
    return text


# --- batching ------------------------------------------------------------------------------------


class _Batch:
    """One log_batch request being filled; ``items`` counts queue items consumed (a tag set twice
    in one batch is one entity but two items)."""

    __slots__ = ("metrics", "params", "tags", "items", "nbytes")

    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        self.params: list[Param] = []
        self.tags: dict[str, Tag] = {}
        self.items = 0
        self.nbytes = 0

    def entities(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)

    def add(self, item: Metric | Param | Tag) -> bool:
        """Add ``item``; False (and nothing added) if it would break a per-request limit."""
        size = 80 + len(item.key) + (len(item.value) if type(item) is not Metric else 0)
        if self.items and self.nbytes + size > MAX_BATCH_BYTES:
            return False
        kind = type(item)
        if kind is Tag and item.key in self.tags:
            self.tags[item.key] = item  # same key again: last value wins, as with set_tag calls
        else:
            if self.entities() >= MAX_ENTITIES_PER_BATCH:
                return False
            if kind is Metric:
                if len(self.metrics) >= MAX_METRICS_PER_BATCH:
                    return False
                self.metrics.append(item)
            elif kind is Param:
                if len(self.params) >= MAX_PARAMS_PER_BATCH:
                    return False
                self.params.append(item)
            else:
                if len(self.tags) >= MAX_TAGS_PER_BATCH:
                    return False
                self.tags[item.key] = item
        self.items += 1
        self.nbytes += size
        return True

    def split_by_kind(self) -> list[_Batch]:
        """The metrics, params and tags as separate batches (item counts preserved)."""
        parts = []
        for kind in (self.metrics, self.params, list(self.tags.values())):
            if kind:
                part = _Batch()
                for item in kind:
                    part.add(item)
                parts.append(part)
        # Replaced tags were consumed items too: credit them to the last part.
        parts[-1].items += self.items - sum(p.items for p in parts)
        return parts

    def describe(self, limit: int = 20) -> str:
        out = []
        for name, entries in (
            ("metrics", self.metrics),
            ("params", self.params),
            ("tags", self.tags.values()),
        ):
            keys = sorted({e.key for e in entries})
            if keys:
                more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
                out.append(f"{name} {', '.join(keys[:limit])}{more}")
        return "; ".join(out) or "nothing"
