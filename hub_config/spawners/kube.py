"""The Kubernetes spawner: the same catalog, compiled into KubeSpawner profiles.

Pure builders (:func:`make_kubespawner_override`, :func:`make_profile_list`) turn a validated
:class:`~hubml.hub_config.settings.Profile` into KubeSpawner trait values; the stateful spawner
only applies them. Importing this module imports KubeSpawner (and the kubernetes client), so the
hub imports it only when ``hub.spawner: kubernetes``.
"""

from __future__ import annotations

import copy

from kubespawner import KubeSpawner

from ..settings import Profile, Settings, parse_memory
from ..topology import SERVER_EXTENSION_ARG, Topology, catalog_trait
from .base import Availability, ProfileSpawnerMixin

GPU_RESOURCE = "nvidia.com/gpu"
HOME = "/home/jovyan"


def make_kubespawner_override(profile: Profile) -> dict:
    """KubeSpawner trait values for ``profile``: complete values, never partial dicts.

    Dict-valued traits are always given whole (``{}`` for a CPU profile) so applying them with
    replace semantics leaves nothing of a previous profile behind.
    """
    gpus = profile.gpu_count if profile.gpu_model else 0
    gpu = {GPU_RESOURCE: str(gpus)} if gpus else {}
    return {
        "image": profile.image,
        "cpu_guarantee": profile.cpu.guarantee,
        "cpu_limit": profile.cpu.limit,
        "mem_guarantee": parse_memory(profile.memory.guarantee),
        "mem_limit": parse_memory(profile.memory.limit),
        "extra_resource_guarantees": dict(gpu),
        "extra_resource_limits": dict(gpu),
        "node_selector": dict(profile.node_selector),
        "tolerations": [t.model_dump(exclude_defaults=True) for t in profile.tolerations],
        "environment": {
            "HUBML_PROFILE": profile.slug,
            "HUBML_PROFILE_NAME": profile.display_name,
            "HUBML_PRICE_PER_HOUR": f"{profile.price_per_hour:g}",
            "HUBML_GPU": f"{gpus} x {profile.gpu_model}" if gpus else "none",
        },
    }


def make_profile_list(settings: Settings) -> list[dict]:
    """The catalog as a KubeSpawner ``profile_list`` (what operators know from z2jh)."""
    return [
        {
            "display_name": p.display_name,
            "slug": p.slug,
            "description": p.description,
            "default": p is settings.default_profile,
            "kubespawner_override": make_kubespawner_override(p),
        }
        for p in settings.profiles
    ]


class HubmlKubeSpawner(ProfileSpawnerMixin, KubeSpawner):
    """KubeSpawner whose profile comes from the hubml catalog, validated like the local one."""

    def profile_availability(self, profile: Profile) -> Availability:
        if profile.gpu_model:
            return Availability(
                True, f"Scheduled on the cluster's {profile.gpu_model} nodes", "info"
            )
        return Availability(True, "Scheduled on the cluster", "info")

    async def apply_profile(self, profile: Profile) -> None:
        base_env = getattr(self, "_hubml_base_environment", None)
        if base_env is None:
            # the configured environment, before any profile touched it
            base_env = self._hubml_base_environment = dict(self.environment)
        override = make_kubespawner_override(profile)
        for key, value in override.items():
            if key == "environment":
                value = {**base_env, **value}
            # replace, never merge: KubeSpawner's own overrides merge dicts in place, which
            # would carry a GPU limit from an earlier profile into a CPU one
            setattr(self, key, copy.deepcopy(value))
        self.emit(
            f"Requesting {profile.gpu_count} × {profile.gpu_model} from the cluster"
            if profile.gpu_model
            else "Requesting a CPU node from the cluster",
            15,
        )

    def apply_app(self, app) -> None:
        super().apply_app(app)
        # an app needs no home volume (its bundle comes from the apps service): no PVC per app
        self.storage_pvc_ensure = False
        self.volumes = []
        self.volume_mounts = []

    async def load_user_options(self):
        # The profile was validated and applied by our apply_user_options hook (it runs before
        # start for form and REST spawns alike); KubeSpawner's own profile_list handling would
        # apply it a second time, with merge semantics, so it is skipped.
        return None

    async def start(self):
        try:
            self.emit("Starting your server", 30)
            return await super().start()
        finally:
            self._spawn_finished = True


def configure_kubespawner(c, settings: Settings, topo: Topology) -> None:
    k8s = settings.kubernetes
    c.JupyterHub.spawner_class = "hubml.hub_config.spawners.kube.HubmlKubeSpawner"
    c.HubmlKubeSpawner.catalog = catalog_trait(settings)
    c.KubeSpawner.namespace = k8s.namespace
    c.KubeSpawner.image_pull_policy = k8s.image_pull_policy
    if k8s.service_account:
        c.KubeSpawner.service_account = k8s.service_account
    # KubeSpawner ignores `args` unless `cmd` is set
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.args = [SERVER_EXTENSION_ARG]
    c.KubeSpawner.default_url = "/lab"
    c.KubeSpawner.start_timeout = 600  # pulling GPU images and scaling node pools takes minutes
    # each user's home on a persistent volume of their own
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.pvc_name_template = "home-{user_server}"
    c.KubeSpawner.storage_capacity = k8s.storage_capacity
    c.KubeSpawner.storage_access_modes = ["ReadWriteOnce"]
    if k8s.storage_class:
        c.KubeSpawner.storage_class = k8s.storage_class
    c.KubeSpawner.volumes = [
        {"name": "home", "persistentVolumeClaim": {"claimName": "home-{user_server}"}}
    ]
    c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": HOME}]
    c.KubeSpawner.working_dir = HOME
    # published apps: the app's pod fetches its bundle from the apps service
    c.HubmlKubeSpawner.apps_runtime_url = topo.service_base("apps")
    c.HubmlKubeSpawner.app_python = "python"
