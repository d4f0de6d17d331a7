"""Read YAML while remembering where every value came from.

Settings errors must name the file and line of the offending key, so loading keeps a map from
a key path (``("profiles", 2, "gpu", "count")``) to the line it was written on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


class SettingsError(ValueError):
    """A settings problem a person can fix: ``str()`` is one line naming where and what."""


@dataclass
class Source:
    """One layer of settings: its data plus where each key path was written."""

    name: str
    data: dict
    lines: dict[tuple, int] = field(default_factory=dict)

    def where(self, path: tuple) -> str:
        """``file:line`` of the closest written ancestor of ``path``."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                return f"{self.name}:{line}"
        return self.name


def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_map(item, path + (i,), out)
    return out


def load_yaml(path: str | Path, *, label: str | None = None) -> Source:
    """Load a YAML mapping from ``path``; syntax errors become one-line SettingsErrors."""
    path = Path(path)
    name = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{name}: settings file not found") from None
    except OSError as e:
        raise SettingsError(f"{name}: cannot read settings file ({e.strerror})") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> Source:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = (e.problem or e.context or "invalid YAML").strip()
        raise SettingsError(f"{name}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{name}: YAML syntax error: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"{name}:1: the top level must be a mapping of sections (hub, auth, gpus, "
            f"kubernetes, profiles), not a {type(data).__name__}"
        )
    return Source(name=name, data=data, lines=_line_map(node) if node is not None else {})
