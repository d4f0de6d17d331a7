"""What a proposal may say, and the plain data it becomes.

The vocabulary :mod:`.proposalread` accepts: the Feast kinds (``KINDS``) and the keyword
arguments of each (``ARGUMENTS``), Feast types and ``ValueType`` members, ``timedelta`` units and
what may be imported. What each argument must be is checked as the reader meets it
(``_checked``), then what a definition of each kind cannot go without and what Feast itself
would refuse (``_complete``). The checked definitions become JSON-ready dicts (``_definition``:
``entities``, ``sources``, ``feature_views``, ``feature_services``), never live objects.
Nothing here looks at the syntax tree; :class:`DefinitionError` is raised here and by the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("Entity", "FileSource", "FeatureView", "Field", "FeatureService")
ALLOWED = (
    "only Feast definitions (Entity, FileSource, FeatureView, Field, FeatureService) "
    "with literal arguments may appear"
)
IMPORTABLE = "only feast, feast.* and datetime may be imported"
PRIMITIVE_TYPES = (
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "String",
    "Bool",
    "UnixTimestamp",
    "Bytes",
)
# Feast's ValueType members an Entity may declare (value_type=ValueType.INT64)
VALUE_TYPES = (
    "UNKNOWN",
    "BYTES",
    "STRING",
    "INT32",
    "INT64",
    "DOUBLE",
    "FLOAT",
    "BOOL",
    "UNIX_TIMESTAMP",
)
DURATION_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
ARGUMENTS = {
    "Entity": ("name", "join_keys", "value_type", "description", "owner", "tags"),
    "FileSource": (
        "name",
        "path",
        "timestamp_field",
        "created_timestamp_column",
        "description",
        "owner",
    ),
    "FeatureView": (
        "name",
        "entities",
        "schema",
        "source",
        "ttl",
        "owner",
        "description",
        "tags",
    ),
    "Field": ("name", "dtype", "description"),
    "FeatureService": ("name", "features", "owner", "description", "tags"),
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
NAMES = "a name (letters, digits, _ . -; no spaces or ':')"


class DefinitionError(ValueError):
    """A proposal that is not a plain Feast definition. ``str()`` reads
    ``"line 4: <what was wrong>; <what is allowed>"``; ``line`` is None when no line is to blame
    (e.g. a proposal that defines no feature view)."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(eq=False)
class _Call:
    """One Feast definition as written: its kind, its checked arguments and where it is."""

    kind: str
    args: dict
    line: int
    var: str | None = None


@dataclass(frozen=True)
class _Type:
    name: str  # "Float32", "Array(String)"


@dataclass(frozen=True)
class _ValueType:
    name: str  # "INT64"


@dataclass(frozen=True)
class _Duration:
    seconds: int


def _found(value) -> str:
    """A checked value, in words, for "must be ..., found ..." messages."""
    if isinstance(value, _Call):
        return f"a {value.kind}"
    if isinstance(value, _Type):
        return f"the Feast type {value.name}"
    if isinstance(value, _ValueType):
        return f"ValueType.{value.name}"
    if isinstance(value, _Duration):
        return "a timedelta"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a dict"
    return type(value).__name__


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


def _list_of(test):
    return lambda value: isinstance(value, list) and all(test(item) for item in value)


def _call_of(kind):
    return lambda value: isinstance(value, _Call) and value.kind == kind


_EXPECTED = {
    "name": (_is_name, NAMES),
    "description": (lambda v: isinstance(v, str), "a string"),
    "owner": (lambda v: isinstance(v, str), 'a string (an email: owner="you@example.com")'),
    "path": (lambda v: isinstance(v, str) and v.strip() != "", "a path or URL string"),
    "timestamp_field": (_is_name, "a column name"),
    "created_timestamp_column": (_is_name, "a column name"),
    "join_keys": (_list_of(_is_name), 'a list of column names (join_keys=["driver_id"])'),
    "tags": (lambda v: isinstance(v, dict), 'a dict of strings (tags={"team": "rides"})'),
    "value_type": (lambda v: isinstance(v, _ValueType), "ValueType.INT64, ValueType.STRING, ..."),
    "dtype": (
        lambda v: isinstance(v, _Type),
        f"a Feast type ({', '.join(PRIMITIVE_TYPES)}, Array(...))",
    ),
    "ttl": (lambda v: isinstance(v, _Duration), "timedelta(days=...)"),
    "source": (_call_of("FileSource"), "a FileSource (a name assigned above, or FileSource(...))"),
    "schema": (_list_of(_call_of("Field")), "a list of Field(name=..., dtype=...)"),
    "entities": (
        _list_of(lambda v: _call_of("Entity")(v) or _is_name(v)),
        'a list of Entity definitions or names of existing entities (entities=[driver, "rider"])',
    ),
    "features": (
        _list_of(lambda v: _call_of("FeatureView")(v) or _is_name(v)),
        'a list of FeatureView definitions or names of existing ones (features=[stats, "other"])',
    ),
}


def _checked(kind: str, arg: str, value, line: int | None):
    test, expected = _EXPECTED[arg]
    if not test(value):
        raise DefinitionError(f"{kind} {arg}= is {_found(value)}; it must be {expected}", line)
    return value


def _complete(call: _Call) -> None:
    """What a definition of each kind cannot go without, and what Feast itself would refuse."""
    args, kind = call.args, call.kind
    if kind == "FileSource" and "name" not in args and call.var:
        args["name"] = call.var  # an assigned source without name= is known by its variable
    required = {"Field": ("name", "dtype"), "FileSource": ("name", "path")}.get(kind, ("name",))
    for arg in required:
        if arg not in args:
            example = 'name="..."' if arg == "name" else f"{arg}=..."
            raise DefinitionError(f"{kind}(...) has no {arg}=; set {example}", call.line)
    if kind == "Entity" and len(args.get("join_keys", [])) > 1:
        raise DefinitionError(
            'an Entity may have one join key in Feast; set join_keys=["<column>"]', call.line
        )
    if kind == "FeatureView":
        _unique([f.args["name"] for f in args.get("schema", [])], "fields", call)
        keys = [_join_keys(e)[0] for e in args.get("entities", []) if isinstance(e, _Call)]
        if len(set(keys)) < len(keys):
            raise DefinitionError(
                f"two entities of {args['name']} share a join key; each needs its own", call.line
            )


def _unique(names: list[str], what: str, call: _Call) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise DefinitionError(
                f"two {what} of {call.args['name']} are named {name!r}; give each its own name",
                call.line,
            )
        seen.add(name)


def _join_keys(entity: _Call) -> list[str]:
    return list(entity.args.get("join_keys") or [entity.args["name"]])


def _name(thing) -> str:
    return thing.args["name"] if isinstance(thing, _Call) else thing


def _definition(calls: list[_Call]) -> dict:
    by_kind: dict[str, list[_Call]] = {kind: [] for kind in KINDS}
    for call in calls:
        by_kind[call.kind].append(call)
    for kind in ("Entity", "FileSource", "FeatureView", "FeatureService"):
        _unique_names(by_kind[kind], kind)
    if not by_kind["FeatureView"] and not by_kind["FeatureService"]:
        raise DefinitionError(
            "the proposal defines no FeatureView or FeatureService; propose at least one "
            "(my_view = FeatureView(name=..., entities=[...], schema=[...], source=...))"
        )
    return {
        "entities": [_entity_json(c) for c in by_kind["Entity"]],
        "sources": [_source_json(c) for c in by_kind["FileSource"]],
        "feature_views": [_view_json(c) for c in by_kind["FeatureView"]],
        "feature_services": [_service_json(c) for c in by_kind["FeatureService"]],
    }


def _unique_names(calls: list[_Call], kind: str) -> None:
    first: dict[str, _Call] = {}
    for call in calls:
        name = call.args["name"]
        if name in first:
            raise DefinitionError(
                f"two {kind} definitions are named {name!r} (lines {first[name].line} and "
                f"{call.line}); give each its own name",
                call.line,
            )
        first[name] = call


def _entity_json(call: _Call) -> dict:
    value_type = call.args.get("value_type")
    return {
        "name": call.args["name"],
        "join_keys": _join_keys(call),
        "value_type": value_type.name if value_type else None,
        "description": call.args.get("description", ""),
        "owner": call.args.get("owner", ""),
        "tags": dict(call.args.get("tags", {})),
    }


def _source_json(call: _Call) -> dict:
    return {
        "name": call.args["name"],
        "path": call.args["path"],
        "timestamp_field": call.args.get("timestamp_field"),
        "created_timestamp_column": call.args.get("created_timestamp_column"),
        "description": call.args.get("description", ""),
        "owner": call.args.get("owner", ""),
    }


def _field_json(call: _Call) -> dict:
    return {
        "name": call.args["name"],
        "dtype": call.args["dtype"].name,
        "description": call.args.get("description", ""),
    }


def _view_json(call: _Call) -> dict:
    entities = call.args.get("entities", [])
    keys = {k for e in entities if isinstance(e, _Call) for k in _join_keys(e)}
    fields = [_field_json(f) for f in call.args.get("schema", [])]
    source = call.args.get("source")
    ttl = call.args.get("ttl")
    return {
        "name": call.args["name"],
        "entities": [_name(e) for e in entities],
        "features": [f for f in fields if f["name"] not in keys],
        # schema fields that are the join keys of the view's entities: Feast keeps them apart
        "entity_columns": [f for f in fields if f["name"] in keys],
        "source": source.args["name"] if source else None,
        "source_path": source.args["path"] if source else None,
        "timestamp_field": source.args.get("timestamp_field") if source else None,
        "ttl_s": ttl.seconds if ttl else None,
        "owner": call.args.get("owner", ""),
        "description": call.args.get("description", ""),
        "tags": dict(call.args.get("tags", {})),
    }


def _service_json(call: _Call) -> dict:
    return {
        "name": call.args["name"],
        "features": [_name(v) for v in call.args.get("features", [])],
        "owner": call.args.get("owner", ""),
        "description": call.args.get("description", ""),
        "tags": dict(call.args.get("tags", {})),
    }
