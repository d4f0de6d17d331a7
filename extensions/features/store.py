"""Where the platform's Feast projects live, and the configuration the service opens them with.

One machine: a SQL registry in SQLite (``<data_dir>/features/registry.db``), Parquet sources under
``<data_dir>/features/data/<project>/``, and a SQLite online store per project. Production:
``features.registry_url`` (PostgreSQL), ``features.offline_dir`` and ``features.online_store``
(Feast's own online-store configuration: Redis, PostgreSQL, ...). Only the ``features`` service
(the platform's account) reads these; kernels go through the service (:mod:`.client`).
"""

from __future__ import annotations

import threading
from pathlib import Path


def features_dir(settings) -> Path:
    return Path(settings.data_dir) / "features"


def registry_url(settings) -> str:
    from hubml.extensions.common.app import store_url

    return store_url(settings.features.registry_url, settings.data_dir, "features", "registry.db")


def data_dir(settings, project: str) -> Path:
    base = Path(settings.features.offline_dir) if settings.features.offline_dir else None
    return (base or features_dir(settings) / "data") / project


def repo_config(settings, project: str):
    """The Feast ``RepoConfig`` of ``project``: local provider, file offline store, SQLite
    online store, the platform's SQL registry (read fresh each time: no registry cache)."""
    from feast.repo_config import RepoConfig

    root = features_dir(settings)
    (root / "online").mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=project,
        provider="local",
        registry={"registry_type": "sql", "path": registry_url(settings), "cache_ttl_seconds": 0},
        offline_store={"type": "file"},
        online_store=dict(settings.features.online_store)
        or {"type": "sqlite", "path": str(root / "online" / f"{project}.db")},
        entity_key_serialization_version=3,
        repo_path=str(root),
    )


class Stores:
    """One ``FeatureStore`` per project, opened on first use (Feast's import takes seconds)."""

    def __init__(self, settings):
        self.settings = settings
        self._stores: dict = {}
        self._lock = threading.Lock()

    def get(self, project: str):
        with self._lock:
            if project not in self._stores:
                from feast import FeatureStore

                self._stores[project] = FeatureStore(config=repo_config(self.settings, project))
            return self._stores[project]
