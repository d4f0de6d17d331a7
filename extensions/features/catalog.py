"""A project's registry as plain JSON: feature views, entities, sources and feature services,
with freshness, and search over them. Built from Feast's own objects (``FeatureStore.list_*``).

Freshness: a feature view's last materialization is the end of its newest materialization
interval; it is ``stale`` when that is older than the view's ttl, ``never`` when it has not been
materialized, ``fresh`` otherwise (a ttl of 0 never goes stale).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re


def _utc(when):
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _iso(when) -> str | None:
    when = _utc(when)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z") if when else None


def freshness(view, now: dt.datetime) -> dict:
    ends = [_utc(end) for _start, end in (view.materialization_intervals or [])]
    ttl_s = int(view.ttl.total_seconds()) if view.ttl else 0
    if not ends:
        return {"state": "never", "last_materialized": None, "age_s": None, "ttl_s": ttl_s}
    last = max(ends)
    age = max(0, int((now - last).total_seconds()))
    state = "stale" if ttl_s and age > ttl_s else "fresh"
    return {"state": state, "last_materialized": _iso(last), "age_s": age, "ttl_s": ttl_s}


def refresh_freshness(cat: dict, now: dt.datetime) -> None:
    """Bring a built catalog's ages and states up to ``now`` (at most once a second)."""
    stamp = now.timestamp()
    if stamp - cat.get("_aged_at", 0) < 1:
        return
    cat["_aged_at"] = stamp
    for view in cat["feature_views"]:
        f = view["freshness"]
        if not f["last_materialized"]:
            continue
        last = dt.datetime.fromisoformat(f["last_materialized"].replace("Z", "+00:00"))
        f["age_s"] = max(0, int((now - last).total_seconds()))
        f["state"] = "stale" if f["ttl_s"] and f["age_s"] > f["ttl_s"] else "fresh"


def _source(src) -> dict:
    if src is None:
        return None
    return {
        "name": src.name,
        "type": type(src).__name__,
        "path": getattr(src, "path", None),
        "timestamp_field": src.timestamp_field,
        "created_timestamp_column": src.created_timestamp_column or None,
        "description": src.description,
        "owner": src.owner,
    }


def view_json(view, project: str, services: dict[str, list[str]], now: dt.datetime) -> dict:
    return {
        "project": project,
        "name": view.name,
        "description": view.description,
        "owner": view.owner,
        "tags": dict(view.tags),
        "entities": list(view.entities),
        "join_keys": [c.name for c in view.entity_columns],
        "features": [
            {"name": f.name, "dtype": str(f.dtype), "description": f.description}
            for f in view.features
        ],
        "source": _source(view.batch_source),
        "ttl_s": int(view.ttl.total_seconds()) if view.ttl else 0,
        "online": bool(view.online),
        "freshness": freshness(view, now),
        "feature_services": services.get(view.name, []),
        "created": _iso(view.created_timestamp),
        "updated": _iso(view.last_updated_timestamp),
    }


def project_catalog(store, project: str, now: dt.datetime | None = None) -> dict:
    """Everything the registry holds about ``project`` (Feast's ``list_*`` calls)."""
    now = now or dt.datetime.now(dt.UTC)
    services = []
    used_by: dict[str, list[str]] = {}
    for fs in store.list_feature_services():
        views = [p.name for p in fs.feature_view_projections]
        for v in views:
            used_by.setdefault(v, []).append(fs.name)
        services.append(
            {
                "name": fs.name,
                "description": fs.description,
                "owner": fs.owner,
                "tags": dict(fs.tags),
                "features": views,
                "refs": [
                    f"{p.name}:{f.name}" for p in fs.feature_view_projections for f in p.features
                ],
            }
        )
    return {
        "project": project,
        "feature_views": sorted(
            (view_json(v, project, used_by, now) for v in store.list_feature_views()),
            key=lambda v: v["name"],
        ),
        "entities": sorted(
            (
                {
                    "name": e.name,
                    "join_keys": [e.join_key],
                    "description": e.description,
                    "owner": e.owner,
                    "tags": dict(e.tags),
                }
                for e in store.list_entities()
            ),
            key=lambda e: e["name"],
        ),
        "sources": sorted((_source(s) for s in store.list_data_sources()), key=lambda s: s["name"]),
        "feature_services": sorted(services, key=lambda s: s["name"]),
    }


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


class Index:
    """Search over feature views (of the projects a person may read): by words of the name,
    description, features and tags, and by exact tag, owner and entity filters."""

    def __init__(self, catalogs: list[dict]):
        self.rows = []
        for cat in catalogs:
            for view in cat["feature_views"]:
                text = " ".join(
                    [
                        view["name"],
                        view["description"],
                        view["owner"],
                        " ".join(view["entities"]),
                        " ".join(f"{k} {v}" for k, v in view["tags"].items()),
                        " ".join(f["name"] + " " + f["description"] for f in view["features"]),
                    ]
                ).lower()
                names = [view["name"].lower(), *(f["name"].lower() for f in view["features"])]
                self.rows.append((view, text, names, set(_words(text))))

    def search(
        self,
        q: str = "",
        *,
        tag: str = "",
        owner: str = "",
        entity: str = "",
        project: str = "",
        limit: int = 50,
    ) -> tuple[int, list[dict]]:
        terms = _words(q)
        tag_key, _, tag_value = tag.partition("=") if tag else ("", "", "")
        hits = []
        for view, text, names, words in self.rows:
            if project and view["project"] != project:
                continue
            if owner and owner.lower() not in view["owner"].lower():
                continue
            if entity and entity not in view["entities"]:
                continue
            if tag_key and not (
                tag_key in view["tags"] and (not tag_value or view["tags"][tag_key] == tag_value)
            ):
                continue
            score = 0.0
            for term in terms:
                if term in names:
                    score += 3
                elif any(term in n for n in names):
                    score += 2
                elif term in words or term in text:
                    score += 1
                else:
                    score = -1
                    break
            if score >= 0:
                hits.append((-score, view["project"], view["name"], view))
        hits.sort(key=lambda h: h[:3])
        return len(hits), [summary(h[3]) for h in hits[:limit]]

    def similar_names(self, name: str, cutoff: float = 0.8) -> list[str]:
        names = [row[0]["name"] for row in self.rows]
        return difflib.get_close_matches(name, names, n=3, cutoff=cutoff)


def summary(view: dict) -> dict:
    """What a search result shows of a view."""
    return {
        "project": view["project"],
        "name": view["name"],
        "description": view["description"],
        "owner": view["owner"],
        "tags": view["tags"],
        "entities": view["entities"],
        "features": [f["name"] for f in view["features"]],
        "freshness": view["freshness"]["state"],
    }
