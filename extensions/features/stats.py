"""Statistics and sample rows of a feature view, read from its Parquet source with pyarrow.

Capped: at most ``stats_max_rows`` rows (the file's last row groups, where appended data is
newest) and ``stats_max_seconds`` of work; what was cut says so (``rows_read``, ``partial``).
Cached by the source file's path, size and modification time, so a second look costs a lookup
and new data is read again.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict

BINS = 10


def _jsonable(value):
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _column_stats(column, kind: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    total = len(column)
    nulls = column.null_count
    out = {"count": total, "nulls": nulls, "null_share": nulls / total if total else 0.0}
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        out["kind"] = "list"
        return out
    out["distinct"] = pc.count_distinct(column, mode="only_valid").as_py()
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if numeric:
        values = column.drop_null().to_numpy(zero_copy_only=False).astype("float64")
        values = values[np.isfinite(values)]
        out["kind"] = "numeric"
        if values.size:
            out.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()))
            counts, edges = np.histogram(values, bins=BINS)
            out["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
        return out
    if pa.types.is_boolean(column.type):
        out["kind"] = "bool"
        out["true"] = pc.sum(column).as_py() or 0
        return out
    if pa.types.is_timestamp(column.type):
        out["kind"] = "time"
        mm = pc.min_max(column).as_py()
        out.update(min=_jsonable(mm["min"]), max=_jsonable(mm["max"]))
        return out
    out["kind"] = kind
    counts = pc.value_counts(column.drop_null())
    top = sorted(((c["values"], c["counts"]) for c in counts.to_pylist()), key=lambda vc: -vc[1])[
        :BINS
    ]
    out["top"] = [{"value": _jsonable(v), "count": n} for v, n in top]
    return out


def _read_newest(path: str, columns: list[str], max_rows: int):
    """The file's last row groups holding up to ``max_rows`` rows (all of a smaller file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    total = meta.metadata.num_rows
    available = set(meta.schema_arrow.names)
    missing = [c for c in columns if c not in available]
    if missing:
        raise KeyError(
            f"the source {path} has no column(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(available))})"
        )
    if total <= max_rows:
        return meta.read(columns=columns), total
    groups, rows = [], 0
    for i in range(meta.num_row_groups - 1, -1, -1):
        groups.insert(0, i)
        rows += meta.metadata.row_group(i).num_rows
        if rows >= max_rows:
            break
    table = meta.read_row_groups(groups, columns=columns)
    if len(table) > max_rows:
        table = table.slice(len(table) - max_rows)
    return pa.Table.from_batches(table.to_batches()), total


def compute(view: dict, max_rows: int, max_seconds: float, sample_rows: int) -> dict:
    """Statistics of each feature of ``view`` (a :func:`.catalog.view_json`) and sample rows."""
    import pyarrow.compute as pc

    source = view.get("source") or {}
    path = source.get("path")
    if not path or source.get("type") != "FileSource":
        return {"available": False, "reason": "statistics need a Parquet (file) source"}
    if not os.path.exists(path):
        return {"available": False, "reason": f"the source file {path} is not there"}
    ts = source["timestamp_field"]
    features = [f["name"] for f in view["features"]]
    keys = list(view["join_keys"])
    columns = list(dict.fromkeys([*keys, ts, *features]))
    started = time.monotonic()
    table, total = _read_newest(path, columns, max_rows)
    stats, partial = {}, False
    kinds = {f["name"]: f["dtype"] for f in view["features"]}
    for name in features:
        if time.monotonic() - started > max_seconds:
            partial = True
            break
        stats[name] = _column_stats(table.column(name), kinds.get(name, "text").lower())
    # the newest rows: a top-k selection, not a sort of the whole table
    top = pc.select_k_unstable(table, k=sample_rows, sort_keys=[(ts, "descending")])
    newest = table.take(top).sort_by([(ts, "descending")])
    rows = [{k: _jsonable(v) for k, v in row.items()} for row in newest.to_pylist()]
    span = pc.min_max(table.column(ts)).as_py()
    return {
        "available": True,
        "rows_total": total,
        "rows_read": len(table),
        "partial": partial,
        "time_range": [_jsonable(span["min"]), _jsonable(span["max"])],
        "features": stats,
        "sample": {"columns": columns, "rows": rows},
        "seconds": round(time.monotonic() - started, 4),
    }


class StatsCache:
    """:func:`compute`'s answers by (view, source path, size, mtime); least recently used out."""

    def __init__(self, settings, size: int = 256):
        self.settings = settings
        self.size = size
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def key(self, view: dict):
        path = (view.get("source") or {}).get("path") or ""
        try:
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        features = tuple(f["name"] for f in view["features"])
        return (view["project"], view["name"], path, stamp, features)

    def get(self, view: dict) -> dict:
        key = self.key(view)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return {**self._cache[key], "cached": True}
        f = self.settings.features
        answer = compute(view, f.stats_max_rows, f.stats_max_seconds, f.sample_rows)
        with self._lock:
            self._cache[key] = answer
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return {**answer, "cached": False}
