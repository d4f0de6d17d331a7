"""The checks a review starts from.

:func:`check` compares a proposal (the data :func:`.proposalread.read_definition` returns) with
the project's catalog (:mod:`.catalog`): what is missing for a complete definition, names that
collide, duplicates of existing views and features (by the normalised fingerprints of source,
timestamp and features: :mod:`.proposalprints`) and near-identical names. Each finding is a dict
with ``what`` it is about and a ``message`` that says what to do.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from .proposalprints import _source_of, feature_fingerprints, fingerprint, normalise_path

SIMILAR_RATIO = 0.85
_VERSION_SUFFIX = re.compile(r"_v\d+(?![a-z0-9])")


def _normalised_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _VERSION_SUFFIX.sub("", name.lower()))


def _name_ratio(a: str, b: str) -> float:
    """1.0 for names equal once normalised (case, ``_v2``, punctuation), else difflib's ratio."""
    na, nb = _normalised_name(a), _normalised_name(b)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, na, nb)
    if matcher.real_quick_ratio() < SIMILAR_RATIO or matcher.quick_ratio() < SIMILAR_RATIO:
        return 0.0
    return matcher.ratio()


def _closest(name: str, candidates, skip=()) -> str | None:
    best, best_ratio = None, SIMILAR_RATIO
    for candidate in candidates:
        if candidate in skip:
            continue
        ratio = _name_ratio(name, candidate)
        if ratio >= best_ratio and (best is None or ratio > best_ratio):
            best, best_ratio = candidate, ratio
    return best


def _owned(thing: dict) -> str:
    return f"owner {thing['owner']}" if thing.get("owner") else "no owner recorded"


def _item(what: str, message: str, **more) -> dict:
    return {"what": what, "message": message, **more}


@dataclass
class _Project:
    """The existing catalog, indexed for the checks."""

    label: str  # "project rides"
    views: dict[str, dict]
    entities: dict[str, dict]
    services: dict[str, dict]
    sources: dict[str, dict]
    view_prints: dict[str, list[str]] = field(default_factory=dict)
    feature_prints: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, catalog: dict) -> _Project:
        project = cls(
            label=f"project {catalog['project']}" if catalog.get("project") else "this project",
            views={v["name"]: v for v in catalog.get("feature_views") or []},
            entities={e["name"]: e for e in catalog.get("entities") or []},
            services={s["name"]: s for s in catalog.get("feature_services") or []},
            sources={s["name"]: s for s in catalog.get("sources") or [] if s},
        )
        for name, view in project.views.items():
            path, _ = _source_of(view, None)
            if not path:
                continue
            project.view_prints.setdefault(fingerprint(view), []).append(name)
            for feature, print_ in feature_fingerprints(view).items():
                project.feature_prints.setdefault(print_, []).append((name, feature))
        return project

    def join_keys(self, entity: str) -> list[str]:
        known = self.entities.get(entity)
        return list(known.get("join_keys") or [entity]) if known else []

    def feature_refs(self):
        for name, view in self.views.items():
            for feature in view.get("features") or []:
                yield f"{name}:{feature['name']}"


def _proposed_views(definition: dict, project: _Project) -> list[dict]:
    """The proposed views, their features without the join keys of existing entities they use
    (Feast keeps entity columns apart from features, and so does the catalog)."""
    views = []
    for view in definition.get("feature_views", []):
        keys = {k for e in view.get("entities", []) for k in project.join_keys(e)}
        views.append({**view, "features": [f for f in view["features"] if f["name"] not in keys]})
    return views


def _reused_entity(entity: dict, project: _Project) -> bool:
    """A proposed entity that is the project's existing one: same name, same join keys."""
    known = project.entities.get(entity["name"])
    return bool(known) and project.join_keys(entity["name"]) == list(entity["join_keys"])


def _missing_view(view: dict, proposed_entities: set[str], project: _Project) -> list[dict]:
    name, out = view["name"], []

    def missing(field_: str, message: str, what: str = name) -> None:
        out.append(_item(what, message, field=field_))

    if not view.get("owner"):
        missing(
            "owner",
            f'{name}: no owner; set owner="you@example.com" (who answers questions about it)',
        )
    if not view.get("description"):
        missing(
            "description",
            f'{name}: no description; set description="..." '
            "(what it measures and how it is computed)",
        )
    if view.get("ttl_s") is None:
        missing(
            "ttl",
            f"{name}: no ttl; set ttl=timedelta(days=...) "
            "(how long a value stays valid for serving)",
        )
    if not view.get("tags"):
        missing(
            "tags",
            f'{name}: no tags; set tags={{"team": "..."}} (at least one, so people can find it)',
        )
    if not view.get("source"):
        missing(
            "source",
            f"{name}: no source; set "
            'source=FileSource(name="...", path="...", timestamp_field="...")',
        )
    elif not view.get("timestamp_field"):
        missing(
            "timestamp_field",
            f"{name}: its source {view['source']} has no timestamp field; set "
            'timestamp_field="event_timestamp" (the column with each row\'s event time) '
            "on its FileSource",
        )
    if not view.get("features"):
        missing(
            "schema",
            f"{name}: no features; list them in "
            'schema=[Field(name="...", dtype=..., description="...")]',
        )
    for feature in view.get("features", []):
        if not feature.get("description"):
            missing(
                "description",
                f'{name}:{feature["name"]}: no description; add description="..." to '
                f'Field(name="{feature["name"]}", ...) (what the value means, its unit)',
                what=f"{name}:{feature['name']}",
            )
    for entity in view.get("entities", []):
        if entity not in proposed_entities and entity not in project.entities:
            existing = ", ".join(sorted(project.entities)) or "none yet"
            missing(
                "entities",
                f"{name}: the entity {entity!r} does not exist in {project.label}; "
                "define it with Entity(name=..., join_keys=[...]) "
                f"or use an existing one ({existing})",
            )
    return out


def _missing(definition: dict, project: _Project) -> list[dict]:
    out = []
    proposed_entities = {e["name"] for e in definition.get("entities", [])}
    for view in _proposed_views(definition, project):
        out.extend(_missing_view(view, proposed_entities, project))
    for entity in definition.get("entities", []):
        if _reused_entity(entity, project):
            continue
        name = entity["name"]
        if not entity.get("description"):
            out.append(
                _item(
                    name,
                    f'{name}: new entity with no description; set description="..." '
                    f"(what one {name} is, and its id)",
                    field="description",
                )
            )
        if not entity.get("owner"):
            out.append(
                _item(
                    name,
                    f'{name}: new entity with no owner; set owner="you@example.com" '
                    "(who answers questions about it)",
                    field="owner",
                )
            )
    proposed_views = {v["name"] for v in definition.get("feature_views", [])}
    for service in definition.get("feature_services", []):
        for view in service.get("features", []):
            if view not in proposed_views and view not in project.views:
                out.append(
                    _item(
                        service["name"],
                        f"{service['name']}: the feature view {view!r} does not exist in "
                        f"{project.label}; propose it too, or name an existing one",
                        field="features",
                    )
                )
    return out


def _name_collision(
    kind: str, name: str, existing: dict[str, dict], project: _Project
) -> dict | None:
    if name in existing:
        other = existing[name]
        return _item(
            name,
            f"{name}: a {kind} with this name already exists in {project.label} "
            f"({_owned(other)}); choose another name, or ask its owner about changing theirs",
            existing=name,
        )
    for other_name, other in existing.items():
        if other_name.lower() == name.lower():
            return _item(
                name,
                f"{name}: the existing {kind} {other_name} ({_owned(other)}) differs only in "
                "letter case; choose a clearly different name",
                existing=other_name,
            )
    return None


def _entity_collision(entity: dict, project: _Project) -> dict | None:
    name = entity["name"]
    if name not in project.entities:
        return _name_collision("entity", name, project.entities, project)
    if _reused_entity(entity, project):
        return None
    known = project.entities[name]
    return _item(
        name,
        f"{name}: the entity {name} already exists in {project.label} with join keys "
        f"{project.join_keys(name)} ({_owned(known)}), and this one has {entity['join_keys']}; "
        f'use the existing entity (entities=["{name}"]) or choose another name',
        existing=name,
    )


def _source_collision(source: dict, project: _Project) -> dict | None:
    known = project.sources.get(source["name"])
    if not known or normalise_path(known.get("path")) == normalise_path(source["path"]):
        return None
    return _item(
        source["name"],
        f"{source['name']}: a data source with this name already exists in "
        f"{project.label} and reads {known.get('path')}, not {source['path']}; give this "
        "FileSource another name",
        existing=source["name"],
    )


def _collisions(definition: dict, project: _Project) -> list[dict]:
    found = [
        _name_collision("feature view", v["name"], project.views, project)
        for v in definition.get("feature_views", [])
    ]
    found += [_entity_collision(e, project) for e in definition.get("entities", [])]
    found += [
        _name_collision("feature service", s["name"], project.services, project)
        for s in definition.get("feature_services", [])
    ]
    found += [_source_collision(s, project) for s in definition.get("sources", [])]
    return [item for item in found if item]


def _refs_snippet(refs: list[str]) -> str:
    return "features=[" + ", ".join(json.dumps(r) for r in refs) + "]"


def _view_reuse(name: str, project: _Project) -> str:
    """How to use an existing view: its feature service when one serves exactly it."""
    for service_name, service in sorted(project.services.items()):
        if list(service.get("features") or []) == [name]:
            return f'store.get_feature_service("{service_name}")'
    return _refs_snippet([f"{name}:{f['name']}" for f in project.views[name].get("features") or []])


def _view_duplicate(view: dict, project: _Project) -> dict | None:
    path, timestamp = _source_of(view, None)
    if not path or not view.get("features"):
        return None
    same = [n for n in project.view_prints.get(fingerprint(view), []) if n != view["name"]]
    if not same:
        return None
    existing = same[0]
    reuse = _view_reuse(existing, project)
    names = ", ".join(f["name"] for f in view["features"])
    return _item(
        view["name"],
        f"{view['name']} is the same as the existing feature view {existing} "
        f"({_owned(project.views[existing])}): same source {path}, timestamp {timestamp or '-'} "
        f"and features {names}; reuse it instead of adding a copy: {reuse}",
        existing=existing,
        reuse=reuse,
    )


def _feature_duplicates(view: dict, project: _Project) -> list[dict]:
    path, _ = _source_of(view, None)
    if not path:
        return []
    out = []
    for feature, print_ in feature_fingerprints(view).items():
        same = [(v, f) for v, f in project.feature_prints.get(print_, []) if v != view["name"]]
        if not same:
            continue
        existing = f"{same[0][0]}:{same[0][1]}"
        reuse = _refs_snippet([existing])
        out.append(
            _item(
                f"{view['name']}:{feature}",
                f"{view['name']}:{feature} reads the same column of {path} as the existing "
                f"feature {existing}; reuse it ({reuse}) instead of defining it again, and "
                f"drop it from {view['name']}",
                existing=existing,
                reuse=reuse,
            )
        )
    return out


def _service_duplicate(service: dict, same_as: dict[str, str], project: _Project) -> dict | None:
    """A proposed service serving the same views as an existing one (a proposed view that
    duplicates an existing view counts as that view)."""
    views = sorted({same_as.get(v, v) for v in service.get("features", [])})
    for name, existing in sorted(project.services.items()):
        if (
            name != service["name"]
            and views
            and views == sorted(set(existing.get("features") or []))
        ):
            reuse = f'store.get_feature_service("{name}")'
            return _item(
                service["name"],
                f"{service['name']} serves the same feature views as the existing feature "
                f"service {name} ({', '.join(views)}); reuse it: {reuse}",
                existing=name,
                reuse=reuse,
            )
    return None


def _duplicates(views: list[dict], definition: dict, project: _Project) -> tuple[list[dict], dict]:
    out, same_as = [], {}
    for view in views:
        whole = _view_duplicate(view, project)
        if whole:
            same_as[view["name"]] = whole["existing"]
            out.append(whole)
        else:
            out.extend(_feature_duplicates(view, project))
    for service in definition.get("feature_services", []):
        item = _service_duplicate(service, same_as, project)
        if item:
            out.append(item)
    return out, same_as


def _similar_item(what: str, kind: str, existing: str, reuse: str) -> dict:
    return _item(
        what,
        f"{what} looks like the existing {kind} {existing}; if it is the same, reuse it "
        f"({reuse}); if it is different, rename it so the two are not confused",
        existing=existing,
        reuse=reuse,
    )


def _similar(views: list[dict], definition: dict, project: _Project, done: set[str]) -> list[dict]:
    """Near-identical names of views, features and services not already reported."""
    out = []
    view_names = list(project.views)
    refs = list(project.feature_refs())
    for view in views:
        if view["name"] in done:
            continue
        skip = {n for n in view_names if n.lower() == view["name"].lower()}  # collisions
        match = _closest(view["name"], view_names, skip)
        if match:
            out.append(
                _similar_item(view["name"], "feature view", match, _view_reuse(match, project))
            )
        for feature in view["features"]:
            what = f"{view['name']}:{feature['name']}"
            if what in done:
                continue
            best = _closest(feature["name"], (r.split(":", 1)[1] for r in refs))
            if best is not None:
                ref = next(r for r in refs if r.split(":", 1)[1] == best)
                out.append(_similar_item(what, "feature", ref, _refs_snippet([ref])))
    for service in definition.get("feature_services", []):
        if service["name"] in done:
            continue
        skip = {n for n in project.services if n.lower() == service["name"].lower()}
        match = _closest(service["name"], project.services, skip)
        if match:
            reuse = f'store.get_feature_service("{match}")'
            out.append(_similar_item(service["name"], "feature service", match, reuse))
    return out


def check(definition: dict, catalog: dict) -> dict:
    """A proposal (:func:`read_definition`) against its project's catalog (``project``,
    ``feature_views``, ``entities``, ``feature_services`` and optionally ``sources``, as
    :func:`.catalog.project_catalog` produces): ``missing`` (what a complete definition needs),
    ``collisions`` (names taken), ``duplicates`` (the same data as an existing view or feature)
    and ``similar`` (near-identical names: a warning). ``ok`` when the first three are empty."""
    project = _Project.of(catalog)
    views = _proposed_views(definition, project)
    missing = _missing(definition, project)
    collisions = _collisions(definition, project)
    duplicates, _ = _duplicates(views, definition, project)
    done = {d["what"] for d in duplicates}
    similar = _similar(views, definition, project, done)
    return {
        "ok": not (missing or collisions or duplicates),
        "missing": missing,
        "collisions": collisions,
        "duplicates": duplicates,
        "similar": similar,
    }
