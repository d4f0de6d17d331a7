"""hubml settings: layering and validation (the schema itself is in :mod:`.schema`).

Layers, later wins: ``defaults.yaml`` + ``catalog.yaml`` shipped here < the YAML file named by
``HUBML_SETTINGS`` < environment variables (the contract table in DESIGN.md). Mappings merge key
by key; lists (``profiles``, ``admin_users``, ...) replace. The merged result is validated as a
whole and every problem is reported as one line: ``<file>:<line>: <key path>: <what is wrong>;
<what is allowed>``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from .schema import (  # noqa: F401  (re-exported: the schema is part of the settings API)
    CPU,
    GPU,
    AppsSection,
    AuthSection,
    GPUDevice,
    GPUSection,
    HubSection,
    InternalPorts,
    JobsSection,
    KubernetesSection,
    MemorySpec,
    Profile,
    Settings,
    Toleration,
    TrackingSection,
    parse_duration,
    parse_memory,
)
from .yamlsource import SettingsError, Source, load_yaml

HERE = Path(__file__).parent
DEFAULTS_FILE = HERE / "defaults.yaml"
CATALOG_FILE = HERE / "catalog.yaml"

# Environment variables of the public contract, and the key each one sets.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "HUBML_PORT": ("hub", "port"),
    "HUBML_DATA_DIR": ("hub", "data_dir"),
    "HUBML_ADMIN_TOKEN": ("auth", "admin_token"),
    "HUBML_SHARED_PASSWORD": ("auth", "shared_password"),
}


def _merge(base: dict, over: dict, path: tuple, origin: dict[tuple, Source], src: Source):
    for key, value in over.items():
        here = path + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, here, origin, src)
        else:
            base[key] = copy.deepcopy(value)
            origin[here] = src


def _origin_of(path: tuple, origin: dict[tuple, Source], fallback: Source) -> Source:
    path = tuple(path)
    if path not in origin:
        # a mapping merged key by key (a check of the whole mapping): the file that set its keys
        for key, src in origin.items():
            if key[: len(path)] == path and src is not fallback:
                return src
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in origin:
            return origin[tuple(path[:n])]
    return fallback


def _format_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(path: tuple):
    """The pydantic model class found at ``path`` in the Settings tree (for listing fields)."""
    import typing

    model: Any = Settings
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        # unwrap Optional[...] / list[...] / unions down to a model class
        candidates = [ann]
        model = None
        while candidates:
            t = candidates.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
            candidates.extend(typing.get_args(t))
    return model


def _describe(err: dict) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    loc = tuple(err["loc"])
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else ""
        return f"unknown field {loc[-1]!r}" + (f"; allowed: {allowed}" if allowed else "")
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']} (got {got!r})"
    if kind == "greater_than":
        return f"must be > {ctx['gt']} (got {got!r})"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']} (got {got!r})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {got!r})"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "slug":
        return (
            f"must be lower-case letters, digits and dashes, starting and ending with a "
            f"letter or digit, at most 63 characters (got {got!r})"
        )
    if kind == "too_short" and loc == ("profiles",):
        return "the catalog needs at least one profile"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = err["msg"][0].lower() + err["msg"][1:]
    return f"{msg} (got {got!r})" if got is not None and not isinstance(got, dict | list) else msg


def _semantic_problems(data: dict) -> list[tuple[tuple, str]]:
    """Cross-field rules pydantic cannot express per field."""
    problems: list[tuple[tuple, str]] = []
    groups = set((data.get("auth") or {}).get("groups") or {})
    seen: dict[str, int] = {}
    defaults = []
    for i, p in enumerate(data.get("profiles") or []):
        slug = p.get("slug")
        if slug in seen:
            problems.append(
                (
                    ("profiles", i, "slug"),
                    f"duplicate slug {slug!r} (also profiles[{seen[slug]}]); slugs must be unique",
                )
            )
        else:
            seen[slug] = i
        for j, group in enumerate(p.get("allowed_groups") or []):
            if group not in groups:
                known = ", ".join(sorted(groups)) or "none declared"
                problems.append(
                    (
                        ("profiles", i, "allowed_groups", j),
                        f"unknown group {group!r}; declare it under auth.groups (known: {known})",
                    )
                )
        if p.get("default"):
            defaults.append(i)
    if len(defaults) > 1:
        problems.append(
            (
                ("profiles", defaults[1], "default"),
                f"only one profile may be the default (profiles{defaults})",
            )
        )
    hub = data.get("hub") or {}
    if hub.get("spawner") == "kubernetes" and not hub.get("public_url"):
        problems.append(
            (
                ("hub", "public_url"),
                "required with hub.spawner kubernetes: the URL people open, e.g. https://hub.example.org, "
                "with wildcard DNS and TLS for *.hub.example.org (users' and services' own origins)",
            )
        )
    inventory = (data.get("gpus") or {}).get("inventory")
    if isinstance(inventory, list):
        indices = [d.get("index") for d in inventory if isinstance(d, dict)]
        for k, idx in enumerate(indices):
            if idx in indices[:k]:
                problems.append((("gpus", "inventory", k, "index"), f"duplicate GPU index {idx}"))
    return problems


def load_settings(
    settings_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
) -> Settings:
    """Build validated Settings from defaults < ``settings_file`` < ``environ``.

    ``settings_file`` defaults to ``$HUBML_SETTINGS``. Raises :class:`SettingsError` whose
    message is one line.
    """
    environ = dict(os.environ if environ is None else environ)
    if environ.get("HUBML_SETTINGS_JSON") and settings_file is None:
        # a hubml service: the hub resolved and validated the settings, and handed them over
        return Settings.model_validate_json(environ["HUBML_SETTINGS_JSON"])
    defaults = load_yaml(DEFAULTS_FILE)
    catalog = load_yaml(CATALOG_FILE)
    data: dict = copy.deepcopy(defaults.data)
    origin: dict[tuple, Source] = {}
    _merge(data, {"profiles": catalog.data.get("profiles")}, (), origin, catalog)

    if settings_file is None:
        settings_file = environ.get("HUBML_SETTINGS") or None
    if settings_file:
        user = load_yaml(settings_file)
        _merge(data, user.data, (), origin, user)

    for var, path in ENV_KEYS.items():
        if var in environ and environ[var] != "":
            value: Any = environ[var]
            if path == ("hub", "port"):
                try:
                    value = int(value)
                except ValueError:
                    raise SettingsError(
                        f"environment variable {var}: must be a port number 1-65535 (got {value!r})"
                    ) from None
            data.setdefault(path[0], {})[path[1]] = value
            origin[path] = Source(name=f"environment variable {var}", data={})

    def where(path: tuple) -> str:
        src = _origin_of(path, origin, defaults)
        return src.where(path)

    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        path = tuple(err["loc"])
        raise SettingsError(f"{where(path)}: {_format_path(path)}: {_describe(err)}") from None

    problems = _semantic_problems(data)
    if problems:
        path, message = problems[0]
        raise SettingsError(f"{where(path)}: {_format_path(path)}: {message}")

    data_dir = Path(settings.hub.data_dir or Path(cwd or Path.cwd()) / ".hubml").absolute()
    hub = settings.hub.model_copy(update={"data_dir": str(data_dir)})
    return settings.model_copy(update={"hub": hub})
