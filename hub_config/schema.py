"""hubml settings' schema: the sections and profiles of ``settings.yaml`` as pydantic models,
with the parsers of durations and memory sizes they use. Layering, cross-field rules and the
one-line messages live in :mod:`hubml.hub_config.settings`, which re-exports these names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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
    home: Port = 0
    cost: Port = 0
    features: Port = 0

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
    # keep a pre-imported next `mlflow server` waiting (~240 MB): a crashed server is replaced
    # sooner than by a cold start (docs/RELIABILITY.md)
    warm_spare: bool = True
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
    # where promotion requests and approvals are announced (a chat relay, an incoming webhook):
    # a JSON POST per event with a `text` line (extensions/tracking/registry/notify.py); empty: none
    approvals_webhook_url: str = ""
    # signs each event (header X-Hubml-Signature-256: sha256=<HMAC-SHA256 of the body>)
    approvals_webhook_secret: str = ""

    @field_validator("approvals_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{value!r} is not an http(s) URL; give the receiver's full URL, such as "
                    "https://chat.example.org/hooks/approvals, or leave it empty"
                )
        return value


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
    # apps on a GPU profile stop at the profile's max_runtime like any server; these run on
    # ("owner/name" or patterns such as "alice/*")
    runtime_exempt: list[str] = []


class Budgets(_Model):
    """Monthly budgets in USD, per user and per group (a person is held to each that applies)."""

    users: dict[str, Annotated[float, Field(ge=0)]] = {}
    groups: dict[str, Annotated[float, Field(ge=0)]] = {}


class CostSection(_Model):
    enabled: bool = True
    budgets: Budgets = Budgets()
    # share of a budget spent from which people are warned (selector, home page, api/me)
    warn_at: float = Field(0.8, gt=0, lt=1)
    # what a start is projected to cost: price x the profile's max_runtime, or x this many
    # hours for a profile without one
    unlimited_hours: float = Field(24, gt=0, le=744)
    # what runs when a budget is spent: warn (the selector, home page and cost page say so), or
    # stop its servers and apps exhausted_grace_s after the budget ran out
    when_exhausted: Literal["warn", "stop"] = "warn"
    exhausted_grace_s: Duration = 3600
    # Empty: SQLite (WAL) under <data_dir>/cost. Production: postgresql+psycopg://...
    db_url: str = ""
    # seconds between readings of the hub's running servers (a stop is also reported at once)
    poll_interval_s: float = Field(2.0, ge=0.2, le=300)


FeatureProjectName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class FeatureProject(_Model):
    """Who may read a feature project, and who approves proposals to it (hub group names)."""

    description: str = ""
    # hub groups whose members see the project's catalog and data; "*": every signed-in user.
    # None by default: a project nobody was given is the admins' alone
    readers: list[str] = []
    # hub groups whose members approve or reject proposals (admins do when there are none)
    owners: list[str] = []


class FeaturesSection(_Model):
    enabled: bool = True
    # the Feast registry (a SQL registry). Empty: SQLite under <data_dir>/features. Production:
    # postgresql+psycopg://...
    registry_url: str = ""
    # proposals and the audit trail. Empty: SQLite under <data_dir>/features. Production:
    # postgresql+psycopg://...
    db_url: str = ""
    # Feast's own online_store configuration (e.g. {type: redis, connection_string: ...}).
    # Empty: a SQLite online store per project under <data_dir>/features/online
    online_store: dict[str, Any] = {}
    # where the projects' Parquet sources live. Empty: <data_dir>/features/data
    offline_dir: str = ""
    projects: dict[FeatureProjectName, FeatureProject] = {
        "rides": FeatureProject(
            description="The example project: drivers, riders and trips", readers=["*"]
        )
    }
    # a first start with an empty registry writes the example project "rides" (generated data)
    seed_example: bool = True
    # how often the service materializes each project's feature views up to now (Feast's
    # materialize_incremental) into the online store; 0: only when an owner asks
    materialize_every: Duration = 3600
    # statistics read at most this many rows of a source (the newest), for at most this long
    stats_max_rows: int = Field(1_000_000, ge=1000)
    stats_max_seconds: float = Field(10, gt=0, le=300)
    sample_rows: int = Field(10, ge=1, le=100)


class Settings(_Model):
    hub: HubSection
    auth: AuthSection
    gpus: GPUSection
    kubernetes: KubernetesSection
    tracking: TrackingSection = TrackingSection()
    jobs: JobsSection = JobsSection()
    apps: AppsSection = AppsSection()
    cost: CostSection = CostSection()
    features: FeaturesSection = FeaturesSection()
    profiles: list[Profile] = Field(min_length=1)

    def profile(self, slug: str) -> Profile | None:
        return next((p for p in self.profiles if p.slug == slug), None)

    @property
    def default_profile(self) -> Profile:
        return next((p for p in self.profiles if p.default), self.profiles[0])

    @property
    def data_dir(self) -> Path:
        return Path(self.hub.data_dir)
