"""Notebooks as job definitions: where they are, what parameters they take, their snapshot.

Nothing here imports papermill or nbformat: a notebook is JSON, and the parameters cell (the
cell tagged ``parameters``, papermill's convention) is read with :mod:`ast`, so the API can
check a job definition in milliseconds. Notebooks come with the request or from the user's own
server (:mod:`hubml.extensions.common.userfiles`); nothing here opens a user's home.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

MAX_NOTEBOOK_BYTES = 50 * 1024**2


class NotebookError(ValueError):
    """A job definition names a notebook or parameters that cannot run; says what is allowed."""


def parse_notebook(raw: bytes, shown: str) -> dict:
    """The notebook ``raw`` holds, checked; ``shown`` is the name used in errors."""
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(
            f"notebook: {shown!r} is {len(raw) // 1024**2} MiB; at most {MAX_NOTEBOOK_BYTES // 1024**2} MiB"
        )
    try:
        nb = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotebookError(f"notebook: {shown!r} is not valid notebook JSON ({e})") from None
    if (
        not isinstance(nb, dict)
        or not isinstance(nb.get("cells"), list)
        or nb.get("nbformat", 0) < 4
    ):
        raise NotebookError(f"notebook: {shown!r} is not an nbformat 4 notebook")
    return nb


def notebook_bytes(content, shown: str) -> bytes:
    """The file a notebook ``content`` stands for: its text as saved, or a notebook object
    (written the way Jupyter saves notebooks)."""
    if isinstance(content, str):
        return content.encode()
    if isinstance(content, dict):
        return (json.dumps(content, indent=1, ensure_ascii=False) + "\n").encode()
    raise NotebookError(
        f"content: the notebook {shown!r} as saved (its JSON text, or the notebook object)"
    )


def read_notebook(path: Path, shown: str) -> tuple[dict, bytes]:
    """A notebook file of the service's own (a snapshot): parsed, with its bytes."""
    raw = path.read_bytes()
    return parse_notebook(raw, shown), raw


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _type_name(value) -> str:
    if value is None:
        return "any"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(
        type(value), "any"
    )


_ANNOTATIONS = {"int", "float", "str", "bool", "list", "dict"}


def declared_parameters(nb: dict) -> dict[str, dict]:
    """Name -> {"type", "default"} from the cell tagged ``parameters`` (empty when none).

    Only plain assignments of literals count (``lr = 0.01``, ``epochs: int = 3``); papermill
    injects values after this cell, so anything else there is ordinary code.
    """
    cell = next(
        (
            c
            for c in nb.get("cells", [])
            if "parameters" in (c.get("metadata", {}).get("tags") or [])
        ),
        None,
    )
    if cell is None:
        return {}
    try:
        tree = ast.parse(_source(cell))
    except SyntaxError:
        return {}
    params: dict[str, dict] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name, value_node, annotation = node.targets[0].id, node.value, None
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            name, value_node = node.target.id, node.value
            annotation = node.annotation.id if isinstance(node.annotation, ast.Name) else None
        else:
            continue
        try:
            default = ast.literal_eval(value_node)
        except (ValueError, SyntaxError):
            default = None
        kind = annotation if annotation in _ANNOTATIONS else _type_name(default)
        params[name] = {"type": kind, "default": default}
    return params


def _matches(kind: str, value) -> bool:
    if kind == "any":
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def check_parameters(given, declared: dict[str, dict]) -> dict:
    """``given`` if every name is declared and every value has the declared type."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise NotebookError("parameters: must be an object of name -> value")
    if given and not declared:
        raise NotebookError(
            "parameters: the notebook has no cell tagged 'parameters'; tag one (cell → property "
            "inspector → add tag 'parameters') to make its variables job parameters"
        )
    allowed = ", ".join(f"{n} ({d['type']})" for n, d in declared.items())
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise NotebookError(
            f"parameters: unknown parameter(s) {', '.join(unknown)}; the notebook declares {allowed}"
        )
    for name, value in given.items():
        kind = declared[name]["type"]
        if not _matches(kind, value):
            raise NotebookError(
                f"parameters: {name} must be {kind} (the notebook's default is "
                f"{declared[name]['default']!r}), got {type(value).__name__} {value!r:.60}"
            )
    return given


def write_snapshot(raw: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, dest)
