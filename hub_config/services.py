"""hubml's hub services as JupyterHub configures them: each service's command, environment,
account and OAuth scopes, and the roles that give them (and users) what they may do.

Split from :mod:`.configurer` (settings → ``c``), which calls :func:`update_services` last.
"""

from __future__ import annotations

import json
import os
import secrets
import sys

from . import accounts
from .settings import Settings
from .topology import Topology, gates_in_cluster, in_cluster


def isolated(settings: Settings) -> bool:
    """Each user has a Unix account of their own (root hub on one machine)."""
    return not in_cluster(settings) and accounts.isolated(settings.hub.isolation)


def _kube_env(settings, wanted: bool) -> dict:
    """What a service that submits Kubernetes Jobs needs to find its cluster (a service gets no
    other env): the jobs service with the kubernetes executor, mlflow with gates in the cluster."""
    if not wanted:
        return {}
    keys = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOME")
    return {k: os.environ[k] for k in keys if k in os.environ}


def service_environment(settings: Settings, topo: Topology) -> dict:
    """What every hubml service is told: the settings as resolved here (without the hub's own
    secrets), where the hub and the other services are."""
    resolved = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"admin_token": "", "shared_password": ""})}
    )
    return {
        "HUBML_DATA_DIR": str(settings.data_dir),
        # the hub process itself (this runs in it): a service stops once its parent is not this
        "HUBML_HUB_PID": str(os.getpid()),
        "HUBML_SETTINGS_JSON": resolved.model_dump_json(),
        "HUBML_PUBLIC_URL": topo.public_url,
        "HUBML_PROXY_URL": topo.proxy_url,
        "HUBML_SERVICES": json.dumps({name: topo.service_base(name) for name in topo.service_urls}),
        **(
            {"HUBML_SERVICE_BIND": ""} if in_cluster(settings) else {}
        ),  # all interfaces of the hub pod
    }


def cost_stop_hook(base: str, token: str):
    """``Spawner.post_stop_hook``: tell the cost service a server stopped, so its charge ends
    now rather than at the service's next reading (a failure is a log line, never the stop's)."""

    async def hook(spawner) -> None:
        from tornado import httpclient

        try:
            await httpclient.AsyncHTTPClient().fetch(
                base + "api/reconcile",
                method="POST",
                body=b"",
                headers={"Authorization": f"token {token}"},
                request_timeout=5,
            )
        except Exception as e:
            spawner.log.info(
                "the cost service did not hear of %s's stop now (%s)", spawner._log_name, e
            )

    return hook


def update_services(c, settings: Settings, topo: Topology) -> None:
    from .policy import SCOPES

    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    env = service_environment(settings, topo)
    # as root, hubml's services run as the platform's own account, never as root or a user
    run_as = {"user": accounts.PLATFORM_ACCOUNT} if isolated(settings) else {}

    def service(name: str, module: str, **extra) -> dict:
        return {
            "name": name,
            "command": [sys.executable, "-m", module],
            "environment": dict(env),
            **run_as,
            **extra,
        }

    def user_facing(name: str, description: str) -> dict:
        return {
            "url": topo.service_urls[name],
            "oauth_no_confirm": True,
            "display": True,
            "info": {"description": description},
        }

    services.append(service("hubml-policy", "hubml.hub_config.policy"))
    roles.append({"name": "hubml-policy", "scopes": SCOPES, "services": ["hubml-policy"]})

    # Services every user (and their servers' kernels) may reach, decided by RBAC scopes.
    user_services = []
    # registry gates run candidate models as their publishers' accounts, which only the root
    # runner service can become (not isolated: in a child of the mlflow service, as its user)
    # (in a cluster: a Kubernetes Job per probe, submitted by the service itself)
    gates_in_jobs = settings.tracking.enabled and gates_in_cluster(settings)
    gates_via_runners = settings.tracking.enabled and isolated(settings) and not gates_in_jobs
    if settings.tracking.enabled:
        mlflow = service(
            "mlflow",
            "hubml.extensions.tracking.service",
            **user_facing("mlflow", "Experiment tracking and model registry (MLflow)"),
        )
        if gates_via_runners:
            from hubml.extensions.jobs.runnerd import socket_path
            from hubml.extensions.tracking.gatesandbox import GATE_RUNNER_ENV

            mlflow["environment"][GATE_RUNNER_ENV] = str(socket_path(settings.data_dir))
        mlflow["environment"].update(_kube_env(settings, gates_in_jobs))
        services.append(mlflow)
        user_services.append("mlflow")
        # approvals depend on group membership, which the service asks the hub about
        roles.append(
            {"name": "hubml-mlflow", "scopes": ["read:users:groups"], "services": ["mlflow"]}
        )
    if settings.jobs.enabled:
        jobs = service(
            "jobs",
            "hubml.extensions.jobs.service",
            **user_facing("jobs", "Notebook jobs and schedules (papermill)"),
        )
        jobs["environment"].update(_kube_env(settings, settings.jobs.executor == "kubernetes"))
        services.append(jobs)
        user_services.append("jobs")
        # runs execute as their user: the service mints short-lived tokens for them (MLflow, and
        # reading the notebook from the user's own server), and reads group membership
        roles.append(
            {
                "name": "hubml-jobs",
                "services": ["jobs"],
                "scopes": [
                    "tokens",
                    "read:users:groups",
                    "list:users",
                    "read:servers",
                    *(["access:services!service=mlflow"] if settings.tracking.enabled else []),
                    # runs' notebooks read features as their owners
                    *(["access:services!service=features"] if settings.features.enabled else []),
                    # each run's budget check, before it starts
                    *(["access:services!service=cost"] if settings.cost.enabled else []),
                ],
            }
        )
    if (settings.jobs.enabled and settings.jobs.executor == "local") or gates_via_runners:
        # the one root process of hubml's own: starts each job run, and each registry gate's
        # probe, as its owner's account
        runners = service("hubml-runners", "hubml.extensions.jobs.runnerd")
        runners.pop("user", None)
        services.append(runners)
    if settings.apps.enabled:
        services.append(
            service(
                "apps",
                "hubml.extensions.apps.service",
                **user_facing("apps", "Gradio apps published from notebooks, shared as links"),
            )
        )
        user_services.append("apps")
        # apps are the owners' named servers: the service starts/stops them and shares them, and
        # reads an app.py from its owner's server with a token it mints for the owner
        roles.append(
            {
                "name": "hubml-apps",
                "services": ["apps"],
                "scopes": [
                    "servers",
                    "shares",
                    "read:users",
                    "read:users:shares",
                    "read:groups",
                    "read:groups:shares",
                    "list:users",
                    "list:groups",
                    "tokens",
                    *(["access:services!service=mlflow"] if settings.tracking.enabled else []),
                ],
            }
        )
        c.JupyterHub.allow_named_servers = True
    if settings.cost.enabled:
        # the ledger of what servers, apps and job runs cost: it reads the hub's running servers
        # (and their users' groups); the hub tells it at once when a server stops, with the
        # service's own token (a scope on itself), so ends are charged to the moment
        cost_token = secrets.token_hex(32)
        services.append(
            service(
                "cost",
                "hubml.extensions.cost.service",
                api_token=cost_token,
                **user_facing("cost", "What your servers, apps and job runs cost, month to date"),
            )
        )
        user_services.append("cost")
        roles.append(
            {
                "name": "hubml-cost",
                "services": ["cost"],
                "scopes": [
                    "list:users",
                    "read:users:name",
                    "read:users:groups",
                    "read:servers",
                    # cost.when_exhausted: stop (what runs on a spent budget)
                    *(["delete:servers"] if settings.cost.when_exhausted == "stop" else []),
                    "access:services!service=cost",
                    # job runs' starts and ends, from the jobs service (api/ledger)
                    *(["access:services!service=jobs"] if settings.jobs.enabled else []),
                ],
            }
        )
        c.Spawner.post_stop_hook = cost_stop_hook(topo.service_base("cost"), cost_token)
        # every start is checked against the budgets first (spawners/base.py check_budget)
        for spawner in ("HubmlLocalSpawner", "HubmlKubeSpawner"):
            c[spawner].cost_service_url = topo.service_base("cost")
            c[spawner].cost_service_token = cost_token
    if settings.features.enabled:
        # the feature catalog: Feast projects read (and, after review, written) by the service
        # alone; it reads people's groups (who may read a project, who approves proposals)
        services.append(
            service(
                "features",
                "hubml.extensions.features.service",
                **user_facing("features", "Feature catalog: find, understand and reuse features"),
                # its page's lineage asks MLflow as the person
                oauth_client_allowed_scopes=[
                    "access:services!service=features",
                    *(["access:services!service=mlflow"] if settings.tracking.enabled else []),
                ],
            )
        )
        user_services.append("features")
        roles.append(
            {"name": "hubml-features", "scopes": ["read:users:groups"], "services": ["features"]}
        )
    access = [f"access:services!service={name}" for name in user_services]
    # the home page: everything a person runs, asked of the hub and the services above with the
    # person's own OAuth token, which may do no more than read their servers and use those
    # services (oauth_client_allowed_scopes); the service itself holds no scopes at all
    services.append(
        service(
            "home",
            "hubml.extensions.home.service",
            **user_facing("home", "Your servers, schedules, runs, apps and approvals, in one page"),
            oauth_client_allowed_scopes=["read:servers!user", *access],
        )
    )
    roles.append({"name": "user", "scopes": ["self", *access, "access:services!service=home"]})
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", *access]
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
