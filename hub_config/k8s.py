"""Kubernetes objects exactly as hubml would create them, built offline for review.

``pod_manifest`` runs the real :class:`~hubml.hub_config.spawners.kube.HubmlKubeSpawner` (so the
real KubeSpawner code) through the same profile path a spawn takes and returns the pod from
KubeSpawner's own ``get_pod_manifest()``. Nothing talks to a cluster: the kubernetes client is
pointed at a throwaway kubeconfig whose server (https://127.0.0.1:1) is never contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from .settings import Settings

OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""
# stands in for the per-spawn token JupyterHub generates, so previews never carry secrets
TOKEN_PLACEHOLDER = "<generated-by-jupyterhub-at-spawn>"


class ManifestError(Exception):
    """The object cannot be built as asked; the message says why and what is allowed."""


@contextlib.contextmanager
def offline_kubeconfig():
    with tempfile.TemporaryDirectory(prefix="hubml-kube-") as tmp:
        path = os.path.join(tmp, "config")
        with open(path, "w") as f:
            f.write(OFFLINE_KUBECONFIG)
        old = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = path
        # kubernetes_asyncio reads $KUBECONFIG once, when its config module is first imported
        import sys

        kube_config = sys.modules.get("kubernetes_asyncio.config.kube_config")
        old_default = getattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", None)
        if kube_config is not None:
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
        try:
            yield path
        finally:
            if old is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = old
            if kube_config is not None:
                kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old_default


def _run(coro):
    """asyncio.run, also from code that already runs an event loop (notebooks, tests)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def offline_user(settings: Settings, username: str):
    """What the spawner reads of a hub user, with groups as declared in settings."""
    groups = [
        SimpleNamespace(name=g)
        for g, members in settings.auth.groups.items()
        if username in members
    ]
    return SimpleNamespace(
        name=username,
        id=0,
        url=f"/user/{username}/",
        escaped_name=username,
        groups=groups,
        server=None,
        settings={},
        orm_user=None,
    )


async def _close_clients():
    from kubespawner.clients import _client_cache

    for client in list(_client_cache.values()):
        with contextlib.suppress(Exception):
            await client.api_client.close()


def _valid(settings: Settings, slug: str):
    profile = settings.profile(slug)
    if profile is None:
        valid = ", ".join(p.slug for p in settings.profiles)
        raise ManifestError(f"unknown profile {slug!r}; valid profiles: {valid}")
    return profile


async def make_spawner(
    settings: Settings, profile_slug: str, username: str, app: str | None = None
):
    """A throwaway HubmlKubeSpawner with ``profile_slug`` applied the way a spawn applies it."""
    from jupyterhub.objects import Hub
    from tornado import web
    from traitlets.config import Config

    from .configurer import spawner_environment
    from .spawners.kube import HubmlKubeSpawner, configure_kubespawner
    from .topology import make_topology

    c = Config()
    topo = make_topology(settings, cluster=True)
    c.Spawner.environment = spawner_environment(settings, topo)
    configure_kubespawner(c, settings, topo)
    # an app is a named server: the spawner reads its name from the hub's record of it
    named = (
        {"orm_spawner": SimpleNamespace(name=f"app-{app}", user=None, server=None, state=None)}
        if app
        else {}
    )
    spawner = HubmlKubeSpawner(
        config=c,
        user=offline_user(settings, username),
        hub=Hub(ip="hub", port=8081, base_url="/hub/"),
        **named,
    )
    spawner.api_token = TOKEN_PLACEHOLDER
    try:
        await spawner._run_apply_user_options(
            {"profile": profile_slug, **({"app": app} if app else {})}
        )
    except web.HTTPError as e:
        raise ManifestError(getattr(e, "jupyterhub_message", None) or e.log_message) from None
    return spawner


def pod_manifest(
    settings: Settings, profile_slug: str, username: str, app: str | None = None
) -> dict:
    """The pod KubeSpawner would create for ``username`` on ``profile_slug`` (or for their
    published app ``app``), as a plain dict."""
    _valid(settings, profile_slug)

    async def build():
        from kubernetes_asyncio.client import ApiClient

        try:
            spawner = await make_spawner(settings, profile_slug, username, app)
            pod = await spawner.get_pod_manifest()
            async with ApiClient() as api:
                return api.sanitize_for_serialization(pod)
        finally:
            await _close_clients()

    with offline_kubeconfig():
        return _run(build())


def pvc_manifest(settings: Settings, profile_slug: str, username: str) -> dict:
    """The user's home volume claim KubeSpawner would ensure."""
    _valid(settings, profile_slug)

    async def build():
        from kubernetes_asyncio.client import ApiClient

        try:
            spawner = await make_spawner(settings, profile_slug, username)
            async with ApiClient() as api:
                return api.sanitize_for_serialization(spawner.get_pvc_manifest())
        finally:
            await _close_clients()

    with offline_kubeconfig():
        return _run(build())
