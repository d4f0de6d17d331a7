"""Feast objects from a checked proposal.

:func:`to_feast` builds the real Feast objects from a proposal's data
(:func:`.proposalread.read_definition`), for ``FeatureStore.apply``, once a project owner
approved it. Only this module uses Feast, and it imports it inside its functions: importing the
module imports neither Feast nor pandas.
"""

from __future__ import annotations

import datetime
import re

from .proposaldata import PRIMITIVE_TYPES

_ARRAY = re.compile(r"Array\((\w+)\)")


def _feast_type(dtype: str):
    from feast import types

    match = _ARRAY.fullmatch(dtype)
    inner = match.group(1) if match else dtype
    if inner not in PRIMITIVE_TYPES:
        raise ValueError(
            f"unknown Feast type {dtype!r}; allowed: {', '.join(PRIMITIVE_TYPES)}, Array(...)"
        )
    base = getattr(types, inner)
    return types.Array(base) if match else base


def _entity_value_type(entity: dict, definition: dict):
    """The entity's declared value type, else the dtype its join key has in a proposed view's
    schema, else UNKNOWN (said explicitly: Feast warns when it is left out)."""
    from feast import ValueType

    if entity.get("value_type"):
        return ValueType[entity["value_type"]]
    key = entity["join_keys"][0]
    for view in definition.get("feature_views", []):
        for column in view.get("entity_columns", []):
            if column["name"] == key and not column["dtype"].startswith("Array("):
                return _feast_type(column["dtype"]).to_value_type()
    return ValueType.UNKNOWN


def _existing_join_key(entity) -> list[str]:
    key = getattr(entity, "join_key", None)
    return [key] if key else []


def to_feast(
    definition: dict,
    existing_entities: dict[str, object],
    *,
    existing_views: dict[str, object] | None = None,
) -> list:
    """The Feast objects of a checked proposal, in dependency order (entities, sources, feature
    views, feature services), for ``FeatureStore.apply``.

    Views refer to entities of the proposal or, by name, to ``existing_entities`` (Feast
    ``Entity`` objects of the project); services to views of the proposal or ``existing_views``.
    A proposed entity with the name and join keys of an existing one *is* that one: it is not
    in the list, so applying does not overwrite its description or owner.
    """
    import feast

    existing_views = existing_views or {}
    out: list = []
    entities: dict[str, object] = {}
    for entity in definition.get("entities", []):
        known = existing_entities.get(entity["name"])
        if known is not None and _existing_join_key(known) == list(entity["join_keys"]):
            entities[entity["name"]] = known
            continue
        entities[entity["name"]] = feast.Entity(
            name=entity["name"],
            join_keys=list(entity["join_keys"]),
            value_type=_entity_value_type(entity, definition),
            description=entity.get("description", ""),
            owner=entity.get("owner", ""),
            tags=dict(entity.get("tags", {})),
        )
        out.append(entities[entity["name"]])
    sources: dict[str, object] = {}
    for source in definition.get("sources", []):
        sources[source["name"]] = feast.FileSource(
            name=source["name"],
            path=source["path"],
            timestamp_field=source.get("timestamp_field") or "",
            created_timestamp_column=source.get("created_timestamp_column") or "",
            description=source.get("description", ""),
            owner=source.get("owner", ""),
        )
        out.append(sources[source["name"]])

    def entity_named(name: str):
        found = entities[name] if name in entities else existing_entities.get(name)
        if found is None:
            raise ValueError(f"entity {name!r} is neither in the proposal nor in the project")
        return found

    views: dict[str, object] = {}
    for view in definition.get("feature_views", []):
        fields = [*view.get("entity_columns", []), *view.get("features", [])]
        views[view["name"]] = feast.FeatureView(
            name=view["name"],
            entities=[entity_named(e) for e in view.get("entities", [])],
            schema=[
                feast.Field(
                    name=f["name"],
                    dtype=_feast_type(f["dtype"]),
                    description=f.get("description", ""),
                )
                for f in fields
            ],
            source=sources[view["source"]] if view.get("source") else None,
            ttl=datetime.timedelta(seconds=view["ttl_s"] or 0),
            owner=view.get("owner", ""),
            description=view.get("description", ""),
            tags=dict(view.get("tags", {})),
        )
        out.append(views[view["name"]])

    def view_named(name: str):
        found = views[name] if name in views else existing_views.get(name)
        if found is None:
            raise ValueError(f"feature view {name!r} is neither in the proposal nor in the project")
        return found

    for service in definition.get("feature_services", []):
        out.append(
            feast.FeatureService(
                name=service["name"],
                features=[view_named(v) for v in service.get("features", [])],
                owner=service.get("owner", ""),
                description=service.get("description", ""),
                tags=dict(service.get("tags", {})),
            )
        )
    return out
