"""Apply validated settings to a JupyterHub ``Config``.

Small ``update_<section>(c, settings)`` functions that only set values, so the whole hub
configuration can be built and checked in a unit test without running anything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from pathlib import Path

from .settings import Settings

HERE = Path(__file__).resolve().parent
ADMIN_SERVICE = "hubml-admin"
# every single-user server loads hubml's server extension (the kernel <-> server bridge)
SERVER_EXTENSION_ARG = "--ServerApp.jpserver_extensions=hubml.extensions.bridge=True"



# hubml's services on Kubernetes: fixed ports on the hub's Service, where the proxy (its own pod)
# reaches them; deploy/values.yaml opens the same ports (hub.service.extraPorts)
SERVICE_PORTS = {"mlflow": 8091, "jobs": 8092, "apps": 8093}


def _in_cluster(settings) -> bool:
    return settings.hub.spawner == "kubernetes"


def service_url(settings, name: str) -> str:
    """Where the proxy reaches a hubml service."""
    if _in_cluster(settings):
        return f"http://{settings.kubernetes.hub_service}:{SERVICE_PORTS[name]}"
    return f"http://127.0.0.1:{free_port()}"


def pods_hub_url(settings) -> str:
    """The hub's public URL as users' servers and jobs see it."""
    if _in_cluster(settings):
        return settings.kubernetes.proxy_url
    return f"http://{settings.hub.ip}:{settings.hub.port}"

def _kube_env(settings) -> dict:
    """What the kubernetes job executor needs to find its cluster (a service gets no other env)."""
    if settings.jobs.executor != "kubernetes":
        return {}
    keys = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOME")
    return {k: os.environ[k] for k in keys if k in os.environ}

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _secret_file(path: Path, nbytes: int) -> str:
    """Read a secret kept in the data dir, creating it (mode 0600) on first use."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def shared_password(settings: Settings) -> str:
    """The login password: from settings/env, else generated once and kept in the data dir."""
    return settings.auth.shared_password or _secret_file(settings.data_dir / "shared-password", 12)


def admin_password(settings: Settings) -> str:
    """Password of the users in ``auth.admin_users`` (JupyterHub wants 32+ characters)."""
    return _secret_file(settings.data_dir / "admin-password", 32)


def proxy_command() -> list[str]:
    """configurable-http-proxy installed into the project by npm, else the one on PATH."""
    candidates = [Path.cwd() / "node_modules/.bin/configurable-http-proxy"]
    candidates.append(HERE.parent / "node_modules/.bin/configurable-http-proxy")
    for path in candidates:
        if path.exists():
            return [str(path)]
    found = shutil.which("configurable-http-proxy")
    return [found or "configurable-http-proxy"]


def update_hub(c, settings: Settings) -> None:
    data = settings.data_dir
    c.JupyterHub.bind_url = f"http://{settings.hub.ip}:{settings.hub.port}/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{free_port()}"
    c.JupyterHub.db_url = settings.hub.db_url or f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.JupyterHub.log_level = settings.hub.log_level
    c.JupyterHub.default_url = "/hub/spawn"
    # Spawns answer within the request when quick, else the page follows progress.
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 10}


def update_proxy(c, settings: Settings) -> None:
    c.ConfigurableHTTPProxy.command = proxy_command()
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{free_port()}"
    c.ConfigurableHTTPProxy.pid_file = str(settings.data_dir / "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True


def update_auth(c, settings: Settings) -> None:
    auth = settings.auth
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = shared_password(settings)
    c.SharedPasswordAuthenticator.admin_password = admin_password(settings)
    c.Authenticator.admin_users = set(auth.admin_users)
    if auth.allowed_users:
        c.Authenticator.allowed_users = set(auth.allowed_users)
    else:
        c.Authenticator.allow_all = True
    c.JupyterHub.load_groups = {name: {"users": list(users)} for name, users in auth.groups.items()}
    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    if auth.admin_token:
        services.append({"name": ADMIN_SERVICE, "api_token": auth.admin_token})
        roles.append({"name": "admin", "services": [ADMIN_SERVICE]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def _catalog(settings: Settings) -> list[dict]:
    return [p.model_dump(mode="json") for p in settings.profiles]


def update_spawner(c, settings: Settings) -> None:
    if settings.hub.spawner == "kubernetes":
        from .spawners.kube import configure_kubespawner

        configure_kubespawner(c, settings)
        return
    from .gpus import inventory_from_settings

    data = settings.data_dir
    c.JupyterHub.spawner_class = "hubml.hub_config.spawners.local.HubmlLocalSpawner"
    c.HubmlLocalSpawner.catalog = _catalog(settings)
    c.HubmlLocalSpawner.gpu_inventory = [
        {"index": d.index, "model": d.model} for d in inventory_from_settings(settings.gpus.inventory)
    ]
    c.HubmlLocalSpawner.gpu_ledger_path = str(data / "gpu-ledger.json")
    c.HubmlLocalSpawner.home_dir_template = str(data / "homes" / "{username}")
    c.HubmlLocalSpawner.apps_dir = str(data / "apps")
    if settings.apps.bundle_delivery == "http":
        c.HubmlLocalSpawner.apps_runtime_url = f"{pods_hub_url(settings)}/services/apps/"
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.default_url = "/lab"
    args = [SERVER_EXTENSION_ARG]
    if os.geteuid() == 0:
        args.append("--allow-root")
    c.Spawner.args = args
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 60


def update_services(c, settings: Settings) -> None:
    from .policy import SCOPES

    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    env = {"HUBML_DATA_DIR": str(settings.data_dir)}
    if _in_cluster(settings):
        env["HUBML_SERVICE_BIND"] = ""  # all interfaces: the proxy is another pod
    if os.environ.get("HUBML_SETTINGS"):
        env["HUBML_SETTINGS"] = os.environ["HUBML_SETTINGS"]
    services.append(
        {
            "name": "hubml-policy",
            "command": [sys.executable, "-m", "hubml.hub_config.policy"],
            "environment": env,
        }
    )
    roles.append({"name": "hubml-policy", "scopes": SCOPES, "services": ["hubml-policy"]})

    # Services every user (and their servers' kernels) may reach, decided by RBAC scopes.
    user_services = []
    if settings.tracking.enabled:
        services.append(
            {
                "name": "mlflow",
                "url": service_url(settings, "mlflow"),
                "command": [sys.executable, "-m", "hubml.extensions.tracking.service"],
                "environment": env,
                "oauth_no_confirm": True,
                "display": True,
                "info": {"description": "Experiment tracking and model registry (MLflow)"},
            }
        )
        user_services.append("mlflow")
        # approvals depend on group membership, which the service asks the hub about
        roles.append({"name": "hubml-mlflow", "scopes": ["read:users:groups"], "services": ["mlflow"]})
        public = pods_hub_url(settings)
        c.Spawner.environment = {
            **(c.Spawner.environment if "environment" in c.Spawner else {}),
            "MLFLOW_TRACKING_URI": f"{public}/services/mlflow",
        }
    if settings.jobs.enabled:
        services.append(
            {
                "name": "jobs",
                "url": service_url(settings, "jobs"),
                "command": [sys.executable, "-m", "hubml.extensions.jobs.service"],
                "environment": {**env, "HUBML_PUBLIC_URL": pods_hub_url(settings),
                                **_kube_env(settings)},
                "oauth_no_confirm": True,
                "display": True,
                "info": {"description": "Notebook jobs and schedules (papermill)"},
            }
        )
        user_services.append("jobs")
        c.Spawner.environment = {
            **(c.Spawner.environment if "environment" in c.Spawner else {}),
            "HUBML_JOBS_URL": f"{pods_hub_url(settings)}/services/jobs",
        }
        # runs execute as their user: the service mints short-lived tokens for them (MLflow)
        # and reads group membership for profile access
        roles.append(
            {"name": "hubml-jobs", "scopes": ["tokens", "read:users:groups", "list:users", *(
                ["access:services!service=mlflow"] if settings.tracking.enabled else [])], "services": ["jobs"]}
        )
    if settings.apps.enabled:
        public = pods_hub_url(settings)
        apps_env = {**env}
        if settings.tracking.enabled:
            apps_env["HUBML_MLFLOW_URL"] = f"{public}/services/mlflow"
        services.append(
            {
                "name": "apps",
                "url": service_url(settings, "apps"),
                "command": [sys.executable, "-m", "hubml.extensions.apps.service"],
                "environment": apps_env,
                "oauth_no_confirm": True,
                "display": True,
                "info": {"description": "Gradio apps published from notebooks, shared as links"},
            }
        )
        user_services.append("apps")
        # apps are the owners' named servers: the service starts/stops them and shares them
        roles.append({"name": "hubml-apps", "services": ["apps"], "scopes": [
            "servers", "shares", "read:users", "read:users:shares", "read:groups", "read:groups:shares",
            "list:users", "list:groups",
            *(["access:services!service=mlflow"] if settings.tracking.enabled else []),
        ]})
        c.JupyterHub.allow_named_servers = True
        c.Spawner.environment = {
            **(c.Spawner.environment if "environment" in c.Spawner else {}),
            "HUBML_APPS_URL": f"{public}/services/apps",
            "HUBML_APPS_ALLOW_PUBLIC_SHARE": "1" if settings.apps.allow_public_share else "0",
        }
    access = [f"access:services!service={name}" for name in user_services]
    roles.append({"name": "user", "scopes": ["self", *access]})
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", *access]
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def apply_settings(c, settings: Settings) -> None:
    """Everything hubml configures on the hub, section by section."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    update_hub(c, settings)
    update_proxy(c, settings)
    update_auth(c, settings)
    update_spawner(c, settings)
    update_services(c, settings)
