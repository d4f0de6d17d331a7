"""hubml settings: schema, layering and validation.

Layers, later wins: ``defaults.yaml`` + ``catalog.yaml`` shipped here < the YAML file named by
``HUBML_SETTINGS`` < environment variables (the contract table in DESIGN.md). Mappings merge key
by key; lists (``profiles``, ``admin_users``, ...) replace. The merged result is validated as a
whole and every problem is reported as one line: ``<file>:<line>: <key path>: <what is wrong>;
<what is allowed>``.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .yamlsource import SettingsError, Source, load_yaml

HERE = Path(__file__).parent
DEFAULTS_FILE = HERE / "defaults.yaml"
CATALOG_FILE = HERE / "catalog.yaml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])$")
_MEMORY_FACTOR = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(value: Any) -> int:
    """Seconds from ``3600``, ``"90m"``, ``"8h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 3600, 90m, 8h or 1d")
    if isinstance(value, int | float):
        seconds = value
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"must be a duration such as 3600, 90m, 8h or 1d (got {value!r})")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds < 0:
        raise ValueError(f"must be ≥ 0 seconds (got {value!r})")
    return int(seconds)


def parse_memory(value: str) -> int:
    """Bytes from ``"512M"``, ``"16G"`` (binary units, as JupyterHub's ByteSpecification)."""
    m = _MEMORY.match(str(value))
    if not m:
        raise ValueError(f"must be a size such as 512M, 8G or 1T (got {value!r})")
    return int(float(m.group(1)) * _MEMORY_FACTOR[m.group(2)])


def _check_memory(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"must be a size with a unit such as 512M, 8G or 1T (got {value!r})")
    parse_memory(value)
    return str(value)


Duration = Annotated[int, BeforeValidator(parse_duration)]
Memory = Annotated[str, BeforeValidator(_check_memory)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CPU(_Model):
    guarantee: float = Field(gt=0, description="CPU cores reserved for the server")
    limit: float = Field(gt=0, description="CPU cores the server may burst to")


class MemorySpec(_Model):
    guarantee: Memory
    limit: Memory


class GPU(_Model):
    model: str = Field(min_length=1, description="GPU model token, e.g. A100, H100, T4")
    count: int = Field(ge=0, description="number of GPUs; 0 means none")


class Toleration(_Model):
    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""


class Profile(_Model):
    """One entry of the compute catalog."""

    slug: Slug
    display_name: str = Field(min_length=1)
    description: str = ""
    cpu: CPU
    memory: MemorySpec
    gpu: GPU | None = None
    price_per_hour: float = Field(ge=0, description="USD per hour")
    image: str = Field(min_length=1)
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    allowed_groups: list[str] = []
    idle_timeout: Duration = 3600
    max_runtime: Duration = 0
    default: bool = False

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0

    @property
    def gpu_model(self) -> str | None:
        return self.gpu.model if self.gpu and self.gpu.count else None

    def allows(self, groups: set[str] | frozenset[str]) -> bool:
        """Whether a member of ``groups`` may use this profile."""
        return not self.allowed_groups or bool(set(self.allowed_groups) & set(groups))


Port = Annotated[int, Field(ge=0, le=65535)]


class InternalPorts(_Model):
    """Loopback ports of the hub's own parts on one machine; 0: picked once, then kept."""

    hub_api: Port = 0
    proxy_api: Port = 0
    mlflow: Port = 0
    jobs: Port = 0
    apps: Port = 0

    @model_validator(mode="after")
    def _distinct(self):
        given = [(k, v) for k, v in self.model_dump().items() if v]
        seen: dict[int, str] = {}
        for key, port in given:
            if port in seen:
                raise ValueError(
                    f"{key} and {seen[port]} are both {port}: each needs a port of its own"
                )
            seen[port] = key
        return self


class HubSection(_Model):
    port: int = Field(ge=1, le=65535)
    ip: str = "127.0.0.1"
    # the URL people open; users and services get their own origins below it (subdomains)
    public_url: str = ""
    data_dir: str = ""
    db_url: str = ""
    spawner: Literal["local", "kubernetes"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    policy_interval: Duration = 60
    # auto: a Unix account per user when the hub runs as root; shared: one for everybody
    isolation: Literal["auto", "shared"] = "auto"
    unix_user_prefix: str = Field("hubml-", pattern=r"^[a-z][a-z0-9]{0,11}-$")
    internal_ports: InternalPorts = InternalPorts()
    # a hub that stops (or restarts) leaves users' servers, apps and job runs running, and the
    # next start adopts them; true: every server and app stops with the hub
    stop_servers_on_exit: bool = False

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[a-z0-9.-]+(:\d{1,5})?/?", value):
            raise ValueError(
                f"must be the hub's origin such as https://hub.example.org or http://localhost:8000 "
                f"(scheme, lower-case host, optional port, no path), not {value!r}"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _public_port_apart(self):
        for key, port in self.internal_ports.model_dump().items():
            if port and port == self.port:
                raise ValueError(
                    f"internal_ports.{key} is {port}, the hub's public port: choose another"
                )
        return self


class AuthSection(_Model):
    # native: own passwords, admin approval. shared-password: a labelled demo with no identity.
    # Anything else: a JupyterHub authenticator (entry point name or import path).
    authenticator: str = Field("native", min_length=1)
    # traits of that authenticator, by class name, as in a jupyterhub_config.py
    authenticator_config: dict[str, dict[str, Any]] = {}
    shared_password: str = ""
    admin_token: str = ""
    admin_users: list[str] = []
    allowed_users: list[str] = []
    groups: dict[str, list[str]] = {}

    @field_validator("shared_password")
    @classmethod
    def _password_length(cls, v: str) -> str:
        if v and len(v) < 8:
            raise ValueError("must be at least 8 characters (or empty to generate one)")
        return v

    @field_validator("admin_token")
    @classmethod
    def _token_length(cls, v: str) -> str:
        if v and len(v) < 16:
            raise ValueError("must be at least 16 characters (or empty for none)")
        return v


class GPUDevice(_Model):
    index: int = Field(ge=0)
    model: str = Field(min_length=1)


class GPUSection(_Model):
    inventory: Literal["auto", "none"] | list[GPUDevice] = "auto"


class KubernetesSection(_Model):
    namespace: str = "hubml"
    storage_capacity: str = "10Gi"
    storage_class: str = ""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str = ""
    # how pods in the cluster (users' servers, job runs) reach the hub's services: through the
    # chart's proxy Service ("proxy-public" in z2jh)
    proxy_url: str = "http://proxy-public"
    # the hub's Service; the proxy reaches hubml's services on it (ports in deploy/values.yaml)
    hub_service: str = "hub"

    @field_validator("proxy_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"must be an http(s) URL such as http://proxy-public, not {value!r}")
        return value.rstrip("/")


class TrackingSection(_Model):
    enabled: bool = True
    # Empty: SQLite under <data_dir>/mlflow. Production: postgresql://user:pass@host/db
    backend_store_uri: str = ""
    # Empty: <data_dir>/mlflow/artifacts. Production: s3://bucket/prefix, gs://..., etc.
    artifacts_destination: str = ""
    # Registry audit log (SQLAlchemy URL). Empty: SQLite under <data_dir>/mlflow.
    audit_db_url: str = ""
    workers: int = Field(1, ge=1, le=16)
    # registry gates: seconds a candidate model gets to start, load and predict (its child is
    # killed after that), and the cap on its address space in MiB (RLIMIT_AS)
    gate_timeout_s: float = Field(120, gt=0, le=3600)
    gate_memory_mb: int = Field(4096, ge=256, le=1048576)
    # where candidates are probed: local (a child process, as the publisher's account through
    # the runner service when the hub is root), kubernetes (a batch/v1 Job per probe on the
    # candidate's profile), auto (kubernetes when the spawner or the jobs executor is)
    gate_executor: Literal["auto", "local", "kubernetes"] = "auto"
    # kubernetes: seconds a gate's pod may take to be scheduled and pull its image
    gate_start_timeout_s: float = Field(300, gt=0, le=3600)


class JobsSection(_Model):
    enabled: bool = True
    # Empty: SQLite (WAL) under <data_dir>/jobs. Production: postgresql+psycopg://...
    db_url: str = ""
    # runs executing at once on this machine, and per user; more wait in the queue
    max_concurrent_runs: int = Field(2, ge=1, le=256)
    max_concurrent_runs_per_user: int = Field(2, ge=1, le=256)
    # runs missed while the service was down: run once, skip them, or run each
    catch_up: Literal["once", "none", "all"] = "once"
    # history kept per job: the newest keep_runs finished runs, none finished more than
    # keep_days ago (0: no limit); outputs go with their runs. A job may set its own.
    keep_runs: int = Field(200, ge=0, le=1_000_000)
    keep_days: int = Field(90, ge=0, le=36500)
    # local: papermill processes on this host. kubernetes: a batch/v1 Job per run, in
    # kubernetes.namespace, from the same catalog translation as the spawner
    executor: Literal["local", "kubernetes"] = "local"
    # runner processes kept warm (papermill imported) so a run starts without ~2.5 s of imports
    warm_runners: int = Field(1, ge=0, le=16)
    # hosts webhooks may reach although they are not public (host names or *.suffix patterns)
    webhook_allowed_hosts: list[str] = []


class AppsSection(_Model):
    enabled: bool = True
    # Empty: SQLite under <data_dir>/apps. Production: postgresql+psycopg://...
    db_url: str = ""
    # Gradio's share=True (a public, unauthenticated tunnel) for published apps: off by policy
    allow_public_share: bool = False


class Settings(_Model):
    hub: HubSection
    auth: AuthSection
    gpus: GPUSection
    kubernetes: KubernetesSection
    tracking: TrackingSection = TrackingSection()
    jobs: JobsSection = JobsSection()
    apps: AppsSection = AppsSection()
    profiles: list[Profile] = Field(min_length=1)

    def profile(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    @property
    def default_profile(self) -> Profile:
        return next((p for p in self.profiles if p.default), self.profiles[0])

    @property
    def data_dir(self) -> Path:
        return Path(self.hub.data_dir)


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
