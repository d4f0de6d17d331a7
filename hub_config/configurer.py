"""Apply validated settings to a JupyterHub ``Config``.

Small ``update_<section>(c, settings, ...)`` functions that only set values, so the whole hub
configuration can be built and checked in a unit test without running anything. What must
happen on the machine before the hub starts (Unix accounts, the data dir's modes) is
:func:`prepare_host`, called by :func:`hubml.hub_config.configure` only.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path

from . import accounts
from .services import isolated, update_services
from .settings import Settings
from .topology import (
    ADMIN_SERVICE,
    SERVER_EXTENSION_ARG,
    Topology,
    catalog_trait,
    in_cluster,
    make_topology,
)

HERE = Path(__file__).resolve().parent
log = logging.getLogger("hubml.configure")

# re-exported for callers that knew them here
__all__ = ["ADMIN_SERVICE", "SERVER_EXTENSION_ARG", "apply_settings", "isolated", "prepare_host"]


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
    """The demo login password: from settings/env, else generated once and kept in the data dir."""
    return settings.auth.shared_password or _secret_file(settings.data_dir / "shared-password", 12)


def admin_password(settings: Settings) -> str:
    """First password of the users in ``auth.admin_users`` (JupyterHub wants 32+ characters)."""
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


def notices(settings: Settings) -> list[str]:
    """What every hub page must say about identity and isolation (empty when all is well)."""
    out = []
    if settings.auth.authenticator == "shared-password":
        out.append(
            "Demo mode, no identity: everybody signs in with one shared password under any name, so "
            "the hub cannot tell people apart. Set auth.authenticator to native (or your identity "
            "provider) before real work."
        )
    if not in_cluster(settings):
        notice = accounts.trust_domain_notice(settings.hub.isolation)
        if notice:
            out.append(notice)
    return out


def running_hub(settings: Settings) -> int | None:
    """The pid of a hub running on this data dir (its pid file names a live ``jupyterhub``
    other than this process), else None: a hub killed with SIGKILL leaves a stale file."""
    try:
        pid = int((settings.data_dir / "jupyterhub.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and b"jupyterhub" in cmdline else None


def leave_nothing_if_start_fails(settings: Settings) -> None:
    """A hub that exits before it finished starting (a managed service that would not start,
    a port taken) skips JupyterHub's cleanup and would leave the proxy it started running: end
    that proxy (by its pid file) at exit. The services stop themselves (their parent is gone)."""
    import atexit

    pid_file = settings.data_dir / "proxy.pid"

    def end_proxy() -> None:
        from jupyterhub.app import JupyterHub

        if not JupyterHub.initialized():
            return
        started = getattr(JupyterHub.instance(), "_start_future", None)
        if started is None or started.done():
            return  # it started: stopping is JupyterHub's (and keeping servers is deliberate)
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"configurable-http-proxy" in cmdline:
            print(f"hubml: the hub did not start; stopping its proxy (pid {pid})", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                pid_file.unlink()

    atexit.register(end_proxy)


def update_hub(c, settings: Settings, topo: Topology) -> None:
    data = settings.data_dir
    c.JupyterHub.bind_url = f"http://{settings.hub.ip}:{settings.hub.port}/"
    # users' servers and apps, and each service, on origins of their own (see docs "Trust model")
    c.JupyterHub.subdomain_host = topo.public_url
    c.JupyterHub.public_url = topo.public_url + "/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{topo.ports['hub_api']}"
    c.JupyterHub.db_url = settings.hub.db_url or f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.JupyterHub.log_level = settings.hub.log_level
    c.JupyterHub.default_url = "/hub/spawn"
    # a restart (SIGTERM, crash, upgrade) keeps users' servers and apps, and the proxy that
    # routes to them, running: the next start finds them by their saved state and adopts them
    c.JupyterHub.cleanup_servers = settings.hub.stop_servers_on_exit
    c.JupyterHub.cleanup_proxy = settings.hub.stop_servers_on_exit
    c.JupyterHub.template_paths = [str(HERE / "templates")]
    from hubml.extensions.apps.refusal import refusal_for_hub_message
    from hubml.extensions.common.urls import service_public_url

    # the page of an app someone may not open, in the hub's error template (templates/error.html)
    # (JupyterHub calls a callable template variable with the user, so this hands it the function)
    c.JupyterHub.template_vars = {
        "hubml_app_refusal": lambda _user: refusal_for_hub_message,
        # the home service's page, linked from the hub's home page
        "hubml_home_url": service_public_url("home", topo.public_url),
    }
    said = notices(settings)
    if said:
        c.JupyterHub.template_vars["announcement"] = "<br>".join(
            f"<b>{html.escape(n)}</b>" for n in said
        )
    # Spawns answer within the request when quick, else the page follows progress.
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 10}


def update_proxy(c, settings: Settings, topo: Topology) -> None:
    c.ConfigurableHTTPProxy.command = proxy_command()
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{topo.ports['proxy_api']}"
    c.ConfigurableHTTPProxy.pid_file = str(settings.data_dir / "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True


def update_auth(c, settings: Settings) -> None:
    auth = settings.auth
    if auth.authenticator == "native":
        c.JupyterHub.authenticator_class = "hubml.hub_config.auth.HubmlNativeAuthenticator"
        admin_password(settings)
        c.HubmlNativeAuthenticator.admin_password_file = str(settings.data_dir / "admin-password")
        c.NativeAuthenticator.minimum_password_length = 8
        c.NativeAuthenticator.check_common_password = True
        c.NativeAuthenticator.allowed_failed_logins = 10
        c.NativeAuthenticator.seconds_before_next_try = 60
        # an admin's approval (NativeAuthenticator's own check) decides who may sign in
        c.Authenticator.allow_all = True
    elif auth.authenticator == "shared-password":
        c.JupyterHub.authenticator_class = "shared-password"
        c.SharedPasswordAuthenticator.user_password = shared_password(settings)
        c.SharedPasswordAuthenticator.admin_password = admin_password(settings)
        if not auth.allowed_users:
            c.Authenticator.allow_all = True
    else:
        c.JupyterHub.authenticator_class = auth.authenticator
        for cls, traits in auth.authenticator_config.items():
            for key, value in traits.items():
                c[cls][key] = value
    c.Authenticator.admin_users = set(auth.admin_users)
    if auth.allowed_users:
        c.Authenticator.allowed_users = set(auth.allowed_users)
    # groups an identity provider manages (OAuthenticator's manage_groups) come from it, by name
    if not any(traits.get("manage_groups") for traits in auth.authenticator_config.values()):
        c.JupyterHub.load_groups = {
            name: {"users": list(users)} for name, users in auth.groups.items()
        }
    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    if auth.admin_token:
        services.append({"name": ADMIN_SERVICE, "api_token": auth.admin_token})
        roles.append({"name": "admin", "services": [ADMIN_SERVICE]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def spawner_environment(settings: Settings, topo: Topology) -> dict:
    """What every user's server (and its kernels) is told: where the hub and the services are."""
    env = {"HUBML_PUBLIC_URL": topo.public_url}
    if settings.tracking.enabled:
        # plain `mlflow` calls in kernels go to the mlflow service's front door
        env["MLFLOW_TRACKING_URI"] = topo.service_base("mlflow").rstrip("/")
    if settings.jobs.enabled:
        env["HUBML_JOBS_URL"] = topo.service_base("jobs").rstrip("/")
    if settings.apps.enabled:
        env["HUBML_APPS_URL"] = topo.service_base("apps").rstrip("/")
        env["HUBML_APPS_ALLOW_PUBLIC_SHARE"] = "1" if settings.apps.allow_public_share else "0"
    if settings.cost.enabled:
        env["HUBML_COST_URL"] = topo.service_base("cost").rstrip("/")
    if settings.features.enabled:
        env["HUBML_FEATURES_URL"] = topo.service_base("features").rstrip("/")
    return env


def update_spawner(c, settings: Settings, topo: Topology) -> None:
    c.Spawner.environment = spawner_environment(settings, topo)
    if in_cluster(settings):
        from .spawners.kube import configure_kubespawner

        configure_kubespawner(c, settings, topo)
        return
    from .gpus import inventory_from_settings, ledger_path

    data = settings.data_dir
    c.JupyterHub.spawner_class = "hubml.hub_config.spawners.local.HubmlLocalSpawner"
    c.HubmlLocalSpawner.catalog = catalog_trait(settings)
    c.HubmlLocalSpawner.gpu_inventory = [
        {"index": d.index, "model": d.model}
        for d in inventory_from_settings(settings.gpus.inventory)
    ]
    c.HubmlLocalSpawner.gpu_ledger_path = str(ledger_path(data))
    c.HubmlLocalSpawner.home_dir_template = str(data / "homes" / "{username}")
    c.HubmlLocalSpawner.isolation = settings.hub.isolation
    c.HubmlLocalSpawner.unix_user_prefix = settings.hub.unix_user_prefix
    c.HubmlLocalSpawner.accounts_lock_dir = str(data / accounts.RUN_DIR)
    c.HubmlLocalSpawner.apps_runtime_url = topo.service_base("apps")
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.default_url = "/lab"
    args = [SERVER_EXTENSION_ARG]
    if os.geteuid() == 0 and not isolated(settings):
        args.append("--allow-root")
    c.Spawner.args = args
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 60


def apply_settings(c, settings: Settings, topo: Topology | None = None) -> Topology:
    """Everything hubml configures on the hub, section by section."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    topo = topo or make_topology(settings)
    update_hub(c, settings, topo)
    update_proxy(c, settings, topo)
    update_auth(c, settings)
    update_spawner(c, settings, topo)
    update_services(c, settings, topo)
    return topo


def prepare_host(settings: Settings) -> None:
    """Make this machine ready for the hub (side effects; the hub calls it once at start).

    Isolated (root, one machine): the platform account exists, the data dir has its modes, the
    platform's Python and the data dir are reachable by users' accounts, and everything the hub
    creates is private by default (umask 077). Shared: say so, loudly.
    """
    for notice in notices(settings):
        print(f"hubml: WARNING: {notice}", file=sys.stderr, flush=True)
    if not isolated(settings):
        return
    os.umask(0o077)
    run_dir = settings.data_dir / accounts.RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    platform = accounts.ensure_account(
        accounts.PLATFORM_ACCOUNT, run_dir, system=True, home=accounts.PLATFORM_HOME
    )
    accounts.harden_data_dir(settings.data_dir, platform)
    reach = {*accounts.platform_python(), settings.data_dir.resolve()}
    for path in sorted(reach):
        for changed in accounts.make_traversable(path):
            print(
                f"hubml: made {changed} traversable (o+x) so users' servers can reach {path}",
                file=sys.stderr,
                flush=True,
            )
