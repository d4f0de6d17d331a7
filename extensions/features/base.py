"""What the ``features`` service's handlers share: the context (Feast stores, the catalog and
its rebuilding, statistics, people's groups) and the base handler (who may read and own what).

Every project is closed to those outside its ``readers`` groups: :meth:`FeaturesBase.project`
answers 404 to them, as if it did not exist. Feast is blocking: its calls run on a small thread
pool (:meth:`FeaturesContext.blocking`), never on the service's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from hubml.extensions.common.app import ServiceContext
from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

log = logging.getLogger("hubml.features")

CATALOG_CHECK_S = 5.0
GROUPS_TTL_S = 5.0


class FeaturesContext(ServiceContext):
    def __init__(self, settings, engine, **kw):
        super().__init__("features", settings, **kw)
        from .stats import StatsCache
        from .store import Stores

        self.engine = engine
        self.stores = Stores(settings)
        self.stats = StatsCache(settings)
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="feast")
        self._catalogs: dict[str, dict] = {}
        self._rebuilding: set[str] = set()
        self._index = None
        self._groups: dict[str, tuple[float, set[str]]] = {}
        self.ready = asyncio.Event()

    @staticmethod
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- the registry, as JSON -----------------------------------------------------------------

    def _stamp(self, project: str):
        """When the registry last changed ``project``: one small query, so the catalog is
        rebuilt only when it changed. Feast's SQL registry moves the project's metadata stamp
        (whole seconds) on every apply and materialization; the project object's own stamp
        moves only when the project itself changes, so both are read."""
        try:
            registry = self.stores.get(project).registry
            meta = registry.get_project_metadata(project, "last_updated_timestamp")
            own = registry.get_project(project, allow_cache=False).last_updated_timestamp
            return (meta, own)
        except Exception:  # a project without anything applied yet
            return None

    def build(self, project: str) -> dict:
        """(Blocking.) The project's catalog, read from the registry now."""
        from .catalog import project_catalog

        stamp = self._stamp(project)
        cat = project_catalog(self.stores.get(project), project, self.now())
        # a change in the same second as the stamp read would not move it: read once more
        settled = stamp is None or not stamp[0] or time.time() - int(stamp[0]) >= 2
        self._catalogs[project] = {
            "checked": time.monotonic(),
            "stamp": stamp,
            "settled": settled,
            "cat": cat,
        }
        self._index = None
        return cat

    async def catalog(self, project: str, fresh: bool = False) -> dict:
        """The catalog as last built; every CATALOG_CHECK_S the registry's stamp is read, and a
        change is rebuilt in the background while this one answers (with up-to-date ages)."""
        from .catalog import refresh_freshness

        entry = self._catalogs.get(project)
        if entry is None or fresh:
            return await self.blocking(self.build, project)
        if time.monotonic() - entry["checked"] > CATALOG_CHECK_S:
            entry["checked"] = time.monotonic()
            stamp = await self.blocking(self._stamp, project)
            moved = stamp != entry["stamp"] or not entry["settled"]
            if moved and project not in self._rebuilding:
                self._rebuilding.add(project)
                asyncio.ensure_future(self._rebuild(project))
        refresh_freshness(entry["cat"], self.now())
        return entry["cat"]

    async def _rebuild(self, project: str) -> None:
        try:
            await self.blocking(self.build, project)
        except Exception:
            log.exception("features: rebuilding the catalog of %s failed", project)
        finally:
            self._rebuilding.discard(project)

    async def changed(self, project: str) -> None:
        """The service changed ``project`` itself: read it anew now (the one who changed it
        sees the change in the answer; others are answered from the previous catalog meanwhile)."""
        await self.catalog(project, fresh=True)

    async def index(self, projects: list[str]):
        from .catalog import Index

        cats = [await self.catalog(p) for p in projects]
        key = tuple(id(c) for c in cats)
        if self._index is None or self._index[0] != key:
            self._index = (key, Index(cats))
        return self._index[1]

    def materialize(self, project: str, by: str) -> list[str]:
        """(Blocking.) Materialize ``project``'s views up to now (Feast's incremental
        materialization, each view from where it stopped); the views' names."""
        from . import reviews

        store = self.stores.get(project)
        views = [v.name for v in store.list_feature_views() if v.online]
        if views:
            store.materialize_incremental(end_date=self.now(), feature_views=views)
            reviews.record(
                self.engine, project, by, "materialized", project, self.now(), feature_views=views
            )
        return views

    # -- who may read and own what ---------------------------------------------------------------

    async def groups_of(self, user: str) -> set[str]:
        cached = self._groups.get(user)
        if cached and time.monotonic() - cached[0] < GROUPS_TTL_S:
            return cached[1]
        groups = await self.hub.groups_of(user)
        self._groups[user] = (time.monotonic(), groups)
        return groups


class FeaturesBase(ServiceHandler):
    async def person(self) -> tuple[str, set[str], bool]:
        model = self.current_user
        if model.get("kind", "user") != "user":
            raise APIError(
                403, f"service {model.get('name')} may not read feature projects; people do"
            )
        return self.user_name, await self.ctx.groups_of(self.user_name), self.is_admin

    async def readable(self) -> list[str]:
        _name, groups, admin = await self.person()
        return [
            p
            for p, spec in self.ctx.settings.features.projects.items()
            if admin or "*" in spec.readers or groups & set(spec.readers)
        ]

    async def owns(self, project: str) -> bool:
        _name, groups, admin = await self.person()
        owners = set(self.ctx.settings.features.projects[project].owners)
        return bool(groups & owners) if owners else admin

    async def project(self, project: str) -> str:
        """``project`` when this person may read it; 404 otherwise, saying which they may."""
        mine = await self.readable()
        if project not in mine:
            raise APIError(
                404,
                f"no feature project {project!r} that you may read; yours: "
                + (", ".join(mine) or "none (ask an admin to add one of your groups as readers)"),
            )
        await self.ready()
        return project

    async def ready(self) -> None:
        if not self.ctx.ready.is_set():
            raise APIError(
                503,
                "the feature catalog is starting (writing the example project); try again in "
                "a few seconds",
                headers={"Retry-After": "5"},
            )

    async def view(self, project: str, name: str) -> dict:
        await self.project(project)
        cat = await self.ctx.catalog(project)
        for view in cat["feature_views"]:
            if view["name"] == name:
                return view
        raise APIError(
            404,
            f"no feature view {name!r} in project {project}; it has: "
            + ", ".join(v["name"] for v in cat["feature_views"]),
        )
