"""A proposed feature view, read without running it, and the checks a review starts from.

People propose new Feast definitions from a notebook as Python source, written like a file of a
Feast repository::

    from datetime import timedelta
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float32

    driver = Entity(name="driver", join_keys=["driver_id"], description="...", owner="...")
    trips = FileSource(name="trips", path="data/trips.parquet", timestamp_field="event_timestamp")
    trip_stats = FeatureView(name="trip_stats", entities=[driver], source=trips, ...)

The ``features`` service checks a proposal before anything reaches the Feast registry, and it
runs as the platform's account: so the proposed code is never executed, imported or compiled to
bytecode. :func:`read_definition` parses it with :func:`ast.parse` (which builds a syntax tree
and runs nothing) and accepts only a small, fixed vocabulary: imports of ``feast`` and
``datetime``, and ``name = Entity(...)`` / ``FileSource(...)`` / ``FeatureView(...)`` /
``Field(...)`` / ``FeatureService(...)`` with keyword arguments that are literals, Feast types,
``timedelta(...)`` or names defined above. Anything else (a call to another function, attribute
access, a loop, a ``def``, a lambda, an f-string ...) is refused with a :class:`DefinitionError`
that names the line. What comes out is plain data (JSON-ready dicts), never a live object.

- :func:`check` compares that data with the project's catalog (:mod:`.catalog`): what is missing
  for a complete definition, names that collide, duplicates of existing views and features (by a
  normalised :func:`fingerprint` of source, timestamp and features) and near-identical names.
- :func:`to_feast` builds the real Feast objects from the data, for ``FeatureStore.apply``, once a
  project owner approved it. Only it imports Feast.
"""

from __future__ import annotations

import ast
import datetime
import difflib
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field

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
MAX_SOURCE_CHARS = 200_000
SIMILAR_RATIO = 0.85
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)", re.DOTALL)
_VERSION_SUFFIX = re.compile(r"_v\d+(?![a-z0-9])")
_ARRAY = re.compile(r"Array\((\w+)\)")


class DefinitionError(ValueError):
    """A proposal that is not a plain Feast definition. ``str()`` reads
    ``"line 4: <what was wrong>; <what is allowed>"``; ``line`` is None when no line is to blame
    (e.g. a proposal that defines no feature view)."""

    def __init__(self, message: str, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


# --- reading -------------------------------------------------------------------------------------


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


_STATEMENTS = {
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
    ast.If: "an if statement",
    ast.With: "a with statement",
    ast.AsyncWith: "a with statement",
    ast.Try: "a try statement",
    ast.Delete: "a del statement",
    ast.Global: "a global statement",
    ast.Nonlocal: "a nonlocal statement",
    ast.Return: "a return statement",
    ast.Raise: "a raise statement",
    ast.Assert: "an assert statement",
    ast.AugAssign: "an augmented assignment",
    ast.AnnAssign: "an annotated assignment",
    ast.Match: "a match statement",
    ast.TryStar: "a try statement",
    ast.Pass: "a pass statement",
    ast.Lambda: "a lambda",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.BinOp: "an operator expression",
    ast.BoolOp: "an operator expression",
    ast.Compare: "a comparison",
    ast.UnaryOp: "an operator expression",
    ast.IfExp: "a conditional expression",
    ast.NamedExpr: "an assignment expression",
    ast.Starred: "unpacking",
    ast.Await: "an await",
    ast.Yield: "a yield",
    ast.YieldFrom: "a yield",
    ast.Set: "a set",
}


def _snippet(node: ast.AST, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except (RecursionError, ValueError):
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None (iterative: no deep recursion)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _describe(node: ast.AST) -> str:
    """What a person wrote, in words: "a call to os.system()", "a lambda", "an f-string"."""
    if isinstance(node, ast.Call):
        callee = _dotted(node.func)
        return f"a call to {callee}()" if callee else f"a call ({_snippet(node)})"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return f"{_STATEMENTS[type(node)]} ({node.name})"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Constant):
        return f"the constant {_snippet(node)}"
    what = _STATEMENTS.get(type(node), type(node).__name__)
    if isinstance(node, ast.expr) and not isinstance(node, ast.JoinedStr | ast.Lambda):
        snippet = _snippet(node)
        return f"{what} ({snippet})" if snippet else what
    return what


def _refused(node: ast.AST, what: str | None = None) -> DefinitionError:
    found = what or _describe(node)
    return DefinitionError(f"found {found}, which is not allowed; {ALLOWED}", _line(node))


def _line(node: ast.AST) -> int | None:
    return getattr(node, "lineno", None)


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


def _allowed_module(module: str | None, node: ast.AST) -> None:
    if module is None:
        raise DefinitionError(
            f"found a relative import, which is not allowed; {IMPORTABLE}", _line(node)
        )
    if module in ("feast", "datetime", "__future__") or module.startswith("feast."):
        return
    raise DefinitionError(
        f"found an import of {module!r}, which is not allowed; {IMPORTABLE}", _line(node)
    )


class _Reader:
    """Walks the syntax tree of a proposal: each statement, each argument, nothing evaluated."""

    def __init__(self):
        # local name -> what it names ("td" -> "datetime.timedelta", "feast" -> "feast")
        self.aliases: dict[str, str] = {}
        self.names: dict[str, _Call] = {}  # variables assigned above
        self.calls: list[_Call] = []  # every definition, inner ones before the outer

    # statements

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            self.imports(node)
        elif isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant):
                return  # a docstring or a comment-like string
            if isinstance(node.value, ast.Call) and self.meaning(node.value.func)[0] == "kind":
                kind = self.meaning(node.value.func)[1]
                raise DefinitionError(
                    f"found a {kind}(...) that is not assigned to a name; write "
                    f"my_name = {kind}(...) so it can be referred to",
                    node.lineno,
                )
            raise _refused(node.value)
        elif isinstance(node, ast.Assign):
            self.assign(node)
        else:
            raise _refused(node)

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                _allowed_module(alias.name, node)
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    self.aliases[root] = root
            return
        module = node.module if node.level == 0 else None
        _allowed_module(module, node)
        for alias in node.names:
            if alias.name != "*":
                self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def assign(self, node: ast.Assign) -> None:
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            targets = " = ".join(_snippet(t) for t in node.targets)
            raise DefinitionError(
                f"found an assignment to {targets}, which is not allowed; assign each definition "
                f"to one plain name (driver = Entity(...)): {ALLOWED}",
                node.lineno,
            )
        target = node.targets[0].id
        self.check_target(target, node)
        value = node.value
        if not (isinstance(value, ast.Call) and self.meaning(value.func)[0] == "kind"):
            raise DefinitionError(
                f"found {target} = {_describe(value)}, which is not allowed; {ALLOWED}",
                _line(value),
            )
        self.names[target] = self.definition(value, self.meaning(value.func)[1], var=target)

    def check_target(self, target: str, node: ast.AST) -> None:
        if target in self.names:
            raise DefinitionError(
                f"{target!r} is assigned twice (first on line {self.names[target].line}); "
                "give each definition its own name",
                node.lineno,
            )
        if target.startswith("__") or target in self.aliases or self.resolve(target)[0]:
            raise DefinitionError(
                f"{target!r} is the name of an import, a Feast class or a type; "
                "choose another name for the definition",
                node.lineno,
            )

    # what a name means

    def resolve(self, dotted: str) -> tuple[str | None, str]:
        """("kind", "Entity"), ("type", "Float32"), ("array", ...), ("timedelta", ...),
        ("value_type", "INT64") or (None, dotted): what a (dotted) name written in the proposal
        stands for, following its imports. Unimported bare names mean what Feast means by them;
        nothing runs, so a name is only a label."""
        parts = dotted.split(".")
        full = ".".join([self.aliases.get(parts[0], parts[0]), *parts[1:]])
        pieces = full.split(".")
        if any(p.startswith("__") for p in pieces):
            return None, full
        if full in ("timedelta", "datetime.timedelta"):
            return "timedelta", full
        if "." in full and pieces[0] != "feast":
            return None, full
        last = pieces[-1]
        if len(pieces) >= 2 and pieces[-2] == "ValueType" and last in VALUE_TYPES:
            return "value_type", last
        if last in KINDS:
            return "kind", last
        if last in PRIMITIVE_TYPES:
            return "type", last
        if last == "Array":
            return "array", last
        return None, full

    def meaning(self, node: ast.AST) -> tuple[str | None, str]:
        if isinstance(node, ast.Name) and node.id in self.names:
            return None, node.id
        dotted = _dotted(node)
        return self.resolve(dotted) if dotted else (None, "")

    # values

    def value(self, node: ast.expr):
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            if isinstance(node.operand, ast.Constant) and _is_number(node.operand.value):
                number = node.operand.value
                return -number if isinstance(node.op, ast.USub) else number
            raise _refused(node)
        if isinstance(node, ast.List | ast.Tuple):
            return [self.value(item) for item in node.elts]
        if isinstance(node, ast.Dict):
            return self.strings(node)
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.names[node.id]
        if isinstance(node, ast.Name | ast.Attribute):
            return self.named(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise _refused(node)

    def constant(self, node: ast.Constant):
        if node.value is None or isinstance(node.value, str | bool) or _is_number(node.value):
            return node.value
        raise _refused(node)

    def strings(self, node: ast.Dict) -> dict[str, str]:
        out = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise _refused(value, "unpacking (**) in a dict")
            for part in (key, value):
                if not isinstance(part, ast.Constant):
                    raise _refused(part)
            if not (isinstance(key.value, str) and isinstance(value.value, str)):
                raise DefinitionError(
                    'a dict may hold only string keys and values here, like tags={"team": "rides"}',
                    _line(key),
                )
            out[key.value] = value.value
        return out

    def named(self, node: ast.Name | ast.Attribute):
        kind, what = self.meaning(node)
        if kind == "type":
            return _Type(what)
        if kind == "value_type":
            return _ValueType(what)
        if isinstance(node, ast.Name) and kind is None:
            raise DefinitionError(
                f"{node.id!r} is not defined above; refer only to definitions assigned earlier "
                f"in this source, Feast types ({', '.join(PRIMITIVE_TYPES)}) or literals",
                node.lineno,
            )
        raise _refused(node)

    def call(self, node: ast.Call):
        kind, what = self.meaning(node.func)
        if kind == "kind":
            return self.definition(node, what)
        if kind == "timedelta":
            return self.duration(node)
        if kind == "array":
            return self.array(node)
        raise _refused(node)

    def duration(self, node: ast.Call) -> _Duration:
        usage = "write timedelta(days=..., hours=..., minutes=..., seconds=...) with numbers"
        if node.args or any(k.arg not in DURATION_UNITS for k in node.keywords):
            raise DefinitionError(f"found {_snippet(node)}; {usage}", node.lineno)
        units = {}
        for kw in node.keywords:
            number = self.value(kw.value)
            if not _is_number(number) or number < 0:
                raise DefinitionError(
                    f"timedelta {kw.arg}= is {_found(number)}; {usage} (not negative)", node.lineno
                )
            units[kw.arg] = number
        try:
            span = datetime.timedelta(**units)
        except OverflowError:
            raise DefinitionError(f"{_snippet(node)} is too long; {usage}", node.lineno) from None
        return _Duration(span.days * 86400 + span.seconds)

    def array(self, node: ast.Call) -> _Type:
        inner = self.value(node.args[0]) if len(node.args) == 1 and not node.keywords else None
        if not (isinstance(inner, _Type) and inner.name in PRIMITIVE_TYPES):
            raise DefinitionError(
                f"found {_snippet(node)}; Array takes one Feast type: "
                f"Array({'|'.join(PRIMITIVE_TYPES)})",
                node.lineno,
            )
        return _Type(f"Array({inner.name})")

    def definition(self, node: ast.Call, kind: str, var: str | None = None) -> _Call:
        if node.args:
            raise DefinitionError(
                f"found a positional argument to {kind}(...); write keyword arguments only: "
                f"{kind}({', '.join(a + '=...' for a in ARGUMENTS[kind][:2])}, ...)",
                node.lineno,
            )
        args = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise _refused(kw.value, f"unpacking (**) in {kind}(...)")
            if kw.arg not in ARGUMENTS[kind]:
                raise DefinitionError(
                    f"{kind} has no argument {kw.arg!r} here; "
                    f"allowed: {', '.join(ARGUMENTS[kind])}",
                    _line(kw.value),
                )
            value = self.value(kw.value)
            if value is not None:  # None means "not given", as Feast's defaults do
                args[kw.arg] = _checked(kind, kw.arg, value, _line(kw.value))
        call = _Call(kind, args, node.lineno, var)
        _complete(call)
        self.calls.append(call)
        return call


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


def _list_of(test):
    return lambda value: isinstance(value, list) and all(test(item) for item in value)


def _call_of(kind):
    return lambda value: isinstance(value, _Call) and value.kind == kind


NAMES = "a name (letters, digits, _ . -; no spaces or ':')"
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


def _parse(source: str) -> ast.Module:
    if not isinstance(source, str):
        raise DefinitionError("a proposal is Python source text; " + ALLOWED)
    if len(source) > MAX_SOURCE_CHARS:
        raise DefinitionError(
            f"the source is {len(source)} characters; at most {MAX_SOURCE_CHARS} are read"
        )
    try:
        return ast.parse(source, filename="<proposal>")
    except SyntaxError as e:
        raise DefinitionError(f"not valid Python ({e.msg}); {ALLOWED}", e.lineno) from None
    except ValueError as e:  # e.g. a NUL byte
        raise DefinitionError(f"not readable as Python ({e}); {ALLOWED}") from None
    except (RecursionError, MemoryError):
        raise DefinitionError(f"the source nests too deeply to be read; {ALLOWED}") from None


def read_definition(source: str) -> dict:
    """The Feast definitions ``source`` proposes, as plain data (see the module's docstring).

    Raises :class:`DefinitionError` for anything but imports of feast/datetime, constants and
    ``name = <Feast definition>(<literal keyword arguments>)``; the source is never run.
    """
    reader = _Reader()
    try:
        for node in _parse(source).body:
            reader.statement(node)
    except RecursionError:
        raise DefinitionError(f"the source nests too deeply to be read; {ALLOWED}") from None
    return _definition(reader.calls)


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


# --- fingerprints --------------------------------------------------------------------------------


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


# --- checks --------------------------------------------------------------------------------------


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


# --- Feast objects -------------------------------------------------------------------------------


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
