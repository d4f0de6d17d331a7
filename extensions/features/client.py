"""Plain Feast in a kernel, against the platform's projects, as the person the kernel runs for.

:func:`store` returns a real ``feast.FeatureStore``. Its configuration points two of Feast's
extension points at the ``features`` hub service, with the kernel's own hub token
(``JUPYTERHUB_API_TOKEN``), so the service decides what this person may read:

- the registry (:class:`ServiceRegistryStore`): the project's registry, read over
  ``api/projects/<p>/registry``; read-only (changes are proposed and reviewed:
  ``hubml.widgets.propose_features``);
- the offline store (:class:`ServiceOfflineStore`): ``get_historical_features`` sends the entity
  rows to ``api/projects/<p>/historical`` and gets the point-in-time joined rows back (Parquet).
  Nothing in the kernel reads the platform's files.

Lineage by ordinary work: each retrieval tags the active MLflow run with the feature views,
features and feature service it used (``hubml.features.*``); one made before a run starts is
added to the next run this process starts (the platform's run-context provider asks
:func:`pending_tags`).
"""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path
from typing import Literal

from feast.infra.offline_stores.offline_store import OfflineStore, RetrievalJob
from feast.infra.registry.registry_store import RegistryStore
from feast.repo_config import FeastConfigBaseModel

ENV_URL = "HUBML_FEATURES_URL"
VIEWS_TAG = "hubml.features.views"
REFS_TAG = "hubml.features.refs"
SERVICE_TAG = "hubml.features.service"
PROJECT_TAG = "hubml.features.project"
MAX_TAG = 5000


class FeaturesUnavailable(RuntimeError):
    """The features service refused or did not answer; the message says which and why."""


def _base() -> str:
    base = os.environ.get(ENV_URL, "").rstrip("/")
    if not base:
        raise FeaturesUnavailable(
            f"no features service is configured for this server ({ENV_URL} is not set)"
        )
    return base


def _token() -> str:
    # a job run's own token (the jobs service mints it), else the server's (a kernel's)
    token = os.environ.get("HUBML_FEATURES_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise FeaturesUnavailable(
            "this process has no hub token (HUBML_FEATURES_TOKEN or JUPYTERHUB_API_TOKEN)"
        )
    return token


def request(method: str, path: str, *, data=None, json=None, params=None, timeout=120):
    """The service's answer to ``method path``; FeaturesUnavailable with its message on 4xx/5xx."""
    import requests

    try:
        resp = requests.request(
            method,
            f"{_base()}/{path}",
            headers={"Authorization": f"token {_token()}"},
            data=data,
            json=json,
            params=params,
            timeout=timeout,
        )
    except requests.RequestException as e:
        raise FeaturesUnavailable(f"the features service did not answer ({e})") from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message", resp.reason)
        except ValueError:
            message = resp.reason
        raise FeaturesUnavailable(f"features service: {message} (HTTP {resp.status_code})")
    return resp


# -- the registry --------------------------------------------------------------------------------


def project_registry_proto(store, project: str) -> bytes:
    """(Service side.) ``project``'s objects as one Feast ``RegistryProto``, serialized."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    proto = RegistryProto()
    registry = store.registry
    proto.projects.extend([registry.get_project(project).to_proto()])
    for items, field in [
        (store.list_entities(), proto.entities),
        (store.list_data_sources(), proto.data_sources),
        (store.list_feature_views(), proto.feature_views),
        (store.list_on_demand_feature_views(), proto.on_demand_feature_views),
        (store.list_feature_services(), proto.feature_services),
    ]:
        for item in items:
            message = item.to_proto()
            spec = message.spec if "spec" in message.DESCRIPTOR.fields_by_name else message
            spec.project = project
            field.append(message)
    return proto.SerializeToString()


class ServiceRegistryStore(RegistryStore):
    """A read-only Feast registry store: ``path`` is the service's ``api/projects/<p>/registry``."""

    def __init__(self, registry_config, repo_path):
        self.path = registry_config.path

    def get_registry_proto(self):
        from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

        proto = RegistryProto()
        proto.ParseFromString(request("GET", self.path).content)
        return proto

    def update_registry_proto(self, registry_proto):
        raise PermissionError(
            "the platform's feature registry is changed by review, not from a kernel: propose "
            "the definitions with hubml.widgets.propose_features(source) (or the FeatureBrowser), and a "
            "project owner applies them"
        )

    def teardown(self):
        self.update_registry_proto(None)


# -- the offline store -----------------------------------------------------------------------------


class ServiceOfflineStoreConfig(FeastConfigBaseModel):
    type: Literal["hubml.extensions.features.client.ServiceOfflineStore"] = (
        "hubml.extensions.features.client.ServiceOfflineStore"
    )


_context = threading.local()


class ServiceRetrievalJob(RetrievalJob):
    def __init__(self, project: str, refs: list[str], entity_df, full_feature_names: bool):
        self.project = project
        self.refs = list(refs)
        self.entity_df = entity_df
        self._full = full_feature_names
        self.service = getattr(_context, "service", None)

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self):
        return []

    @property
    def metadata(self):
        return None

    def _to_arrow_internal(self, timeout=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        body = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(self.entity_df, preserve_index=False), body)
        resp = request(
            "POST",
            f"api/projects/{self.project}/historical",
            data=body.getvalue(),
            params={"feature": self.refs, "full_feature_names": int(self._full)},
            timeout=timeout or 600,
        )
        table = pq.read_table(io.BytesIO(resp.content))
        note_features(self.project, self.refs, self.service)
        return table

    def _to_df_internal(self, timeout=None):
        return self._to_arrow_internal(timeout).to_pandas()

    def persist(self, storage, allow_overwrite=False, timeout=None):
        raise NotImplementedError(
            "saved datasets are not kept by the platform; keep the DataFrame (to_df()) instead"
        )


class ServiceOfflineStore(OfflineStore):
    @staticmethod
    def get_historical_features(
        config,
        feature_views,
        feature_refs,
        entity_df,
        registry,
        project,
        full_feature_names=False,
    ):
        if entity_df is None or isinstance(entity_df, str):
            raise ValueError(
                "entity_df: a pandas DataFrame of entity keys and event_timestamp (SQL queries "
                "are not run against the platform's sources)"
            )
        return ServiceRetrievalJob(project, feature_refs, entity_df, full_feature_names)

    @staticmethod
    def _elsewhere(*args, **kwargs):
        raise NotImplementedError(
            "materialization and source reads run on the features service, not in a kernel"
        )

    pull_latest_from_table_or_query = _elsewhere
    pull_all_from_table_or_query = _elsewhere
    write_logged_features = _elsewhere
    offline_write_batch = _elsewhere


# -- the store a notebook uses ---------------------------------------------------------------------


def config(project: str):
    """The ``RepoConfig`` of ``project`` for this kernel (nothing on disk but an empty online
    store in the person's cache)."""
    from feast.repo_config import RepoConfig

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hubml" / "feast"
    cache.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=project,
        provider="local",
        registry={
            "registry_type": "file",
            "registry_store_type": "hubml.extensions.features.client.ServiceRegistryStore",
            "path": f"api/projects/{project}/registry",
            "cache_ttl_seconds": 10,
        },
        offline_store={"type": "hubml.extensions.features.client.ServiceOfflineStore"},
        online_store={"type": "sqlite", "path": str(cache / f"{project}-online.db")},
        entity_key_serialization_version=3,
        repo_path=str(cache),
    )


def store(project: str = "rides"):
    """A ``feast.FeatureStore`` of the platform's ``project``, as this kernel's user."""
    from feast import FeatureService, FeatureStore

    class PlatformFeatureStore(FeatureStore):
        """Feast's own store; it only remembers which feature service a retrieval used."""

        def get_historical_features(self, entity_df=None, features=None, *args, **kwargs):
            _context.service = features.name if isinstance(features, FeatureService) else None
            try:
                return super().get_historical_features(entity_df, features, *args, **kwargs)
            finally:
                _context.service = None

    return PlatformFeatureStore(config=config(project))


# -- lineage -------------------------------------------------------------------------------------

_pending: dict[str, str] = {}
_per_run: dict[str, dict[str, set]] = {}


def _tags(project: str, views: set, refs: set, service: str | None) -> dict[str, str]:
    tags = {
        PROJECT_TAG: project,
        VIEWS_TAG: "," + ",".join(sorted(views)) + ",",
        REFS_TAG: ",".join(sorted(refs))[:MAX_TAG],
    }
    if service:
        tags[SERVICE_TAG] = service
    return tags


def note_features(project: str, refs: list[str], service: str | None) -> None:
    """Tag the active MLflow run (if any) with what was fetched; else keep it for the next."""
    views = {f"{project}:{r.split(':', 1)[0]}" for r in refs}
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        _pending.clear()
        _pending.update(_tags(project, views, set(refs), service))
        return
    seen = _per_run.setdefault(run.info.run_id, {"views": set(), "refs": set()})
    seen["views"] |= views
    seen["refs"] |= set(refs)
    mlflow.set_tags(_tags(project, seen["views"], seen["refs"], service))


def pending_tags() -> dict[str, str]:
    """The last retrieval made outside a run, for the next run to start (once)."""
    tags = dict(_pending)
    _pending.clear()
    return tags
