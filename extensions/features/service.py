"""The ``features`` hub service: the platform's Feast projects, as each person may see them.

| method | path | who | what |
|---|---|---|---|
| GET | ``api/projects`` | anyone | the projects they may read (and whether they own them) |
| GET | ``api/search?q=&tag=k[=v]&owner=&entity=&project=&limit=`` | anyone | feature views of their projects |
| GET | ``api/projects/<p>`` | readers | the project's catalog: views, entities, sources, services |
| GET | ``api/projects/<p>/feature-views/<v>`` | readers | one view: schema, owner, source, ttl, freshness |
| GET | ``api/projects/<p>/feature-views/<v>/stats`` | readers | statistics and sample rows (capped, cached) |
| GET | ``api/projects/<p>/feature-views/<v>/lineage`` | readers | source → view → services → MLflow runs → models |
| GET | ``api/projects/<p>/registry`` | readers | the project's registry (protobuf), for kernels' Feast |
| POST | ``api/projects/<p>/historical`` | readers | ``get_historical_features`` (entity rows as Parquet in, Parquet out) |
| POST | ``api/projects/<p>/feature-services`` | readers | save a feature service of existing features (a training set) |
| POST | ``api/projects/<p>/proposals`` | readers | propose feature views (Python); checked, then waits for review |
| GET | ``api/proposals?project=&state=`` | readers | proposals to their projects |
| GET | ``api/proposals/<id>`` | readers | one proposal and its review |
| POST | ``api/proposals/<id>/review`` | the project's owners | ``{"decision": "approve"|"reject", "comment"}`` |
| GET | ``api/projects/<p>/audit`` | readers | who changed what in the project |
| POST | ``api/projects/<p>/materialize`` | the project's owners | the online store up to now (also every ``features.materialize_every``) |
| GET | ``""`` | anyone | a page: their projects and feature views |

Every project is closed to those outside its ``readers`` groups: its catalog, its data and its
proposals answer 404 to them, as if it did not exist. Feast is blocking: its calls run on a small
thread pool, never on the service's loop. Here: the reads, the page, the routes and the process;
the context and the access rule in :mod:`.base`; the writes (feature services, proposals,
reviews, the audit trail) in :mod:`.writes`.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import sys

from hubml.extensions.common.app import (
    StoreUnavailable,
    load_service_settings,
    make_app,
    open_store,
    serve,
    serve_unavailable,
    setup_logging,
)
from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import page_html

from . import reviews
from .base import CATALOG_CHECK_S, FeaturesBase, FeaturesContext
from .writes import (
    AuditHandler,
    FeatureServicesHandler,
    MaterializeHandler,
    ProposalHandler,
    ProposalsHandler,
    ReviewHandler,
)

__all__ = ["CATALOG_CHECK_S", "ROUTES", "main"]

log = logging.getLogger("hubml.features")

MAX_ENTITY_BYTES = 64 * 1024 * 1024
MAX_ENTITY_ROWS = 1_000_000


class ProjectsHandler(FeaturesBase):
    async def get(self):
        out = []
        for p in await self.readable():
            spec = self.ctx.settings.features.projects[p]
            entry = {"name": p, "description": spec.description, "owner": await self.owns(p)}
            if self.ctx.ready.is_set():
                cat = await self.ctx.catalog(p)
                entry["feature_views"] = len(cat["feature_views"])
                entry["feature_services"] = len(cat["feature_services"])
                entry["entities"] = [e["name"] for e in cat["entities"]]
            out.append(entry)
        self.send({"projects": out, "ready": self.ctx.ready.is_set()})


class SearchHandler(FeaturesBase):
    async def get(self):
        await self.ready()
        projects = await self.readable()
        limit = self.get_argument("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise APIError(400, f"limit: a number from 1 to 1000 (got {limit!r})")
        project = self.get_argument("project", "")
        if project:
            await self.project(project)
        index = await self.ctx.index(projects)
        total, results = index.search(
            self.get_argument("q", ""),
            tag=self.get_argument("tag", ""),
            owner=self.get_argument("owner", ""),
            entity=self.get_argument("entity", ""),
            project=project,
            limit=int(limit),
        )
        self.send({"total": total, "results": results})


class ProjectHandler(FeaturesBase):
    async def get(self, project):
        await self.project(project)
        cat = await self.ctx.catalog(project)
        shown = {k: v for k, v in cat.items() if not k.startswith("_")}
        self.send({**shown, "owner": await self.owns(project)})


class ViewHandler(FeaturesBase):
    async def get(self, project, name):
        self.send(await self.view(project, name))


class StatsHandler(FeaturesBase):
    async def get(self, project, name):
        view = await self.view(project, name)
        try:
            stats = await self.ctx.blocking(self.ctx.stats.get, view)
        except KeyError as e:
            raise APIError(409, str(e.args[0])) from None
        self.send(stats)


class LineageHandler(FeaturesBase):
    async def get(self, project, name):
        view = await self.view(project, name)
        from .lineage import runs_and_models

        token = self.hub_auth.get_token(self)
        answer = await runs_and_models(self.ctx.settings, project, name, token)
        self.send(
            {
                "source": view["source"],
                "feature_view": {"project": project, "name": name},
                "feature_services": view["feature_services"],
                **answer,
            }
        )


class RegistryHandler(FeaturesBase):
    async def get(self, project):
        await self.project(project)
        from .client import project_registry_proto

        store = self.ctx.stores.get(project)
        data = await self.ctx.blocking(project_registry_proto, store, project)
        self.set_header("Content-Type", "application/x-protobuf")
        self.finish(data)


class HistoricalHandler(FeaturesBase):
    """``POST api/projects/<p>/historical?feature=v:f&...&full_feature_names=0`` with the entity
    rows as a Parquet body; the answer is Parquet (Feast's point-in-time join, on the service)."""

    async def post(self, project):
        await self.project(project)
        refs = self.get_arguments("feature")
        if not refs:
            raise APIError(400, "feature: give at least one feature as view:feature")
        cat = await self.ctx.catalog(project)
        known = {f"{v['name']}:{f['name']}" for v in cat["feature_views"] for f in v["features"]}
        unknown = [r for r in refs if r not in known]
        if unknown:
            raise APIError(
                400,
                f"no feature {', '.join(unknown)} in project {project} (features are view:feature, "
                "as the FeatureBrowser shows them)",
            )
        body = self.request.body or b""
        if len(body) > MAX_ENTITY_BYTES:
            raise APIError(
                413, f"the entity rows are {len(body)} bytes; at most {MAX_ENTITY_BYTES}"
            )
        full = self.get_argument("full_feature_names", "0") in ("1", "true")
        store = self.ctx.stores.get(project)

        def fetch():
            import pyarrow.parquet as pq

            try:
                entity_df = pq.read_table(io.BytesIO(body)).to_pandas()
            except Exception as e:
                raise APIError(
                    400, f"the request body must be the entity rows as Parquet ({e})"
                ) from None
            if len(entity_df) > MAX_ENTITY_ROWS:
                raise APIError(
                    413, f"{len(entity_df)} entity rows; at most {MAX_ENTITY_ROWS} per request"
                )
            try:
                table = store.get_historical_features(
                    entity_df=entity_df, features=refs, full_feature_names=full
                ).to_arrow()
            except Exception as e:  # Feast says what is wrong with the rows (missing keys, ...)
                raise APIError(400, f"Feast could not join these entity rows: {e}") from None
            out = io.BytesIO()
            pq.write_table(table, out)
            return out.getvalue(), len(table)

        data, rows = await self.ctx.blocking(fetch)
        views = sorted({r.split(":", 1)[0] for r in refs})
        log.info("features: %s fetched %s rows of %s from %s", self.user_name, rows, views, project)
        self.set_header("Content-Type", "application/vnd.apache.parquet")
        self.finish(data)


class FeaturesPage(FeaturesBase):
    page = True

    async def get(self):
        e = html.escape
        projects = await self.readable()
        if not self.ctx.ready.is_set():
            body = "<p>The feature catalog is starting; reload in a few seconds.</p>"
        elif not projects:
            body = "<p>You may read no feature project yet: ask an admin to add one of your groups.</p>"
        else:
            parts = []
            for p in projects:
                cat = await self.ctx.catalog(p)
                rows = "".join(
                    f"<li><b>{e(v['name'])}</b> ({e(v['freshness']['state'])}): {e(v['description'])}"
                    f"<br><small>{e(', '.join(f['name'] for f in v['features']))} · owner "
                    f"{e(v['owner'] or 'unknown')}</small></li>"
                    for v in cat["feature_views"]
                )
                parts.append(f"<h2 style='font-size:1.1rem'>{e(p)}</h2><ul>{rows}</ul>")
            body = "".join(parts)
        body += (
            "<p><small>Browse, search and reuse these from a notebook: "
            "<code>from hubml.widgets import FeatureBrowser; FeatureBrowser()</code>. As JSON: "
            "<a href='api/projects'>api/projects</a></small></p>"
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page_html("Features", body))


P = r"([a-z][a-z0-9_]{0,62})"
V = r"([A-Za-z_][A-Za-z0-9_]{0,127})"
ROUTES = [
    ("", FeaturesPage),
    ("api/projects", ProjectsHandler),
    ("api/search", SearchHandler),
    (f"api/projects/{P}", ProjectHandler),
    (f"api/projects/{P}/feature-views/{V}", ViewHandler),
    (f"api/projects/{P}/feature-views/{V}/stats", StatsHandler),
    (f"api/projects/{P}/feature-views/{V}/lineage", LineageHandler),
    (f"api/projects/{P}/registry", RegistryHandler),
    (f"api/projects/{P}/historical", HistoricalHandler),
    (f"api/projects/{P}/feature-services", FeatureServicesHandler),
    (f"api/projects/{P}/proposals", ProposalsHandler),
    (f"api/projects/{P}/audit", AuditHandler),
    (f"api/projects/{P}/materialize", MaterializeHandler),
    ("api/proposals", ProposalsHandler),
    (r"api/proposals/(\d+)", ProposalHandler),
    (r"api/proposals/(\d+)/review", ReviewHandler),
]


def prepare(ctx: FeaturesContext) -> None:
    """Open the registry (Feast's import takes seconds) and, on a first start with an empty
    registry, write the example project; then the catalog answers."""
    settings = ctx.settings
    from .store import data_dir

    if settings.features.seed_example and "rides" in settings.features.projects:
        store = ctx.stores.get("rides")
        if not store.list_feature_views():
            from .seed import seed

            seed(store, data_dir(settings, "rides").resolve())
            reviews.record(ctx.engine, "rides", "hubml", "seeded", "rides", ctx.now())
    for project in settings.features.projects:
        ctx.build(project)


def main() -> int:
    setup_logging()
    # Feast logs each registry refresh at INFO; the service says what matters itself
    logging.getLogger("feast").setLevel(logging.WARNING)
    settings = load_service_settings()
    try:
        engine = open_store("features", reviews.db_url(settings), reviews.open_reviews_at)
    except StoreUnavailable as problem:
        return serve_unavailable("features", problem)
    ctx = FeaturesContext(settings, engine)
    app = make_app(ctx, ROUTES)

    async def start():
        try:
            await ctx.blocking(prepare, ctx)
        except Exception:
            log.exception("features: opening the registry failed; the catalog answers 503")
            return
        ctx.ready.set()
        log.info("features: the catalog is ready (%s)", ", ".join(settings.features.projects))
        every = settings.features.materialize_every
        while every:
            await asyncio.sleep(every)
            for project in settings.features.projects:
                try:
                    views = await ctx.blocking(ctx.materialize, project, "hubml")
                    await ctx.changed(project)
                    log.info("features: materialized %s (%s)", project, ", ".join(views))
                except Exception:
                    log.exception("features: materializing %s failed; next in %ss", project, every)

    serve(app, "features", on_start=start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
