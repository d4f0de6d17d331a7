"""Reading a proposed feature view's Python without running it.

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
and runs nothing) and accepts only a small, fixed vocabulary (:mod:`.proposaldata`): imports of
``feast`` and ``datetime``, and ``name = Entity(...)`` / ``FileSource(...)`` /
``FeatureView(...)`` / ``Field(...)`` / ``FeatureService(...)`` with keyword arguments that are
literals, Feast types, ``timedelta(...)`` or names defined above. Anything else (a call to
another function, attribute access, a loop, a ``def``, a lambda, an f-string ...) is refused
with a :class:`DefinitionError` that names the line. What comes out is plain data (JSON-ready
dicts), never a live object.
"""

from __future__ import annotations

import ast
import datetime

from .proposaldata import (
    ALLOWED,
    ARGUMENTS,
    DURATION_UNITS,
    IMPORTABLE,
    KINDS,
    PRIMITIVE_TYPES,
    VALUE_TYPES,
    DefinitionError,
    _Call,
    _checked,
    _complete,
    _definition,
    _Duration,
    _found,
    _Type,
    _ValueType,
)

MAX_SOURCE_CHARS = 200_000


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
