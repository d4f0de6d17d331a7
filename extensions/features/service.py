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
| GET | ``""`` | anyone | a page: their projects and feature views |

Every project is closed to those outside its ``readers`` groups: its catalog, its data and its
proposals answer 404 to them, as if it did not exist. Feast is blocking: its calls run on a small
thread pool, never on the service's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import io
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hubml.extensions.common.app import (
    ServiceContext,
    StoreUnavailable,
    load_service_settings,
    make_app,
    open_store,
    serve,
    serve_unavailable,
    setup_logging,
)
from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler, page_html

from . import reviews

log = logging.getLogger("hubml.features")

CATALOG_CHECK_S = 5.0
GROUPS_TTL_S = 5.0
MAX_ENTITY_BYTES = 64 * 1024 * 1024
MAX_ENTITY_ROWS = 1_000_000
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


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
        """When the registry last changed ``project`` (Feast moves it on each apply and
        materialization): one small query, so the catalog is rebuilt only when it changed."""
        try:
            registry = self.stores.get(project).registry
            return registry.get_project(project, allow_cache=False).last_updated_timestamp
        except Exception:  # a project without anything applied yet
            return None

    def build(self, project: str) -> dict:
        """(Blocking.) The project's catalog, read from the registry now."""
        from .catalog import project_catalog

        stamp = self._stamp(project)
        cat = project_catalog(self.stores.get(project), project, self.now())
        self._catalogs[project] = {"checked": time.monotonic(), "stamp": stamp, "cat": cat}
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
            if stamp != entry["stamp"] and project not in self._rebuilding:
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


class FeatureServicesHandler(FeaturesBase):
    """Save a feature service (a training set) made of features that exist in the project."""

    async def post(self, project):
        await self.project(project)
        body = self.json_body()
        name = body.get("name", "")
        refs = body.get("features")
        if not isinstance(name, str) or not NAME.match(name):
            raise APIError(
                400, f"name: letters, digits and _, starting with a letter (got {name!r})"
            )
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise APIError(400, "features: a list of view:feature names, at least one")
        cat = await self.ctx.catalog(project)
        views = {v["name"]: v for v in cat["feature_views"]}
        taken = {s["name"].lower(): s for s in cat["feature_services"]}
        if name.lower() in taken:
            raise APIError(
                409,
                f"a feature service {taken[name.lower()]['name']!r} already exists in {project} "
                f"(owner {taken[name.lower()]['owner'] or 'unknown'}); choose another name or use it",
            )
        picked: dict[str, list[str]] = {}
        for ref in refs:
            view, _, feature = ref.partition(":")
            if view not in views or feature not in {f["name"] for f in views[view]["features"]}:
                raise APIError(400, f"features: no feature {ref} in project {project}")
            picked.setdefault(view, []).append(feature)
        description = str(body.get("description", ""))[:1000]
        store = self.ctx.stores.get(project)
        user = self.user_name

        def save():
            from feast import FeatureService

            service = FeatureService(
                name=name,
                features=[store.get_feature_view(v)[fs] for v, fs in picked.items()],
                owner=user,
                description=description or f"Training set saved by {user}",
                tags={"saved_by": user},
            )
            store.apply([service])

        await self.ctx.blocking(save)
        await self.ctx.changed(project)
        reviews.record(
            self.ctx.engine,
            project,
            user,
            "feature_service_saved",
            name,
            self.ctx.now(),
            features=refs,
        )
        cat = await self.ctx.catalog(project)
        [saved] = [s for s in cat["feature_services"] if s["name"] == name]
        self.send(saved, status=201)


class ProposalsHandler(FeaturesBase):
    async def post(self, project):
        await self.project(project)
        body = self.json_body(max_bytes=256 * 1024, hint="a proposal is a feature repo file")
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            raise APIError(400, "source: the proposed definitions as Python (a Feast repo file)")
        from .proposals import DefinitionError, check, read_definition

        try:
            definition = read_definition(source)
        except DefinitionError as e:
            raise APIError(400, f"the proposal cannot be read: {e}") from None
        self.place_sources(project, definition)
        cat = await self.ctx.catalog(project)
        review = check(definition, cat)
        names = [v["name"] for v in definition["feature_views"]] + [
            s["name"] for s in definition["feature_services"]
        ]
        title = str(body.get("title") or ", ".join(names))[:255]
        if not review["ok"]:
            # not kept: nothing to review until it is complete and new
            self.send(
                {
                    "state": "refused",
                    "message": _refusal(review),
                    "review": review,
                    "definition": definition,
                },
                status=422,
            )
            return
        pid = reviews.add(
            self.ctx.engine,
            project,
            title,
            source,
            definition,
            review,
            self.user_name,
            self.ctx.now(),
        )
        reviews.record(
            self.ctx.engine,
            project,
            self.user_name,
            "proposed",
            title,
            self.ctx.now(),
            proposal=pid,
        )
        self.send(reviews.as_json(reviews.get(self.ctx.engine, pid)), status=201)

    def place_sources(self, project: str, definition: dict) -> None:
        """A proposal's sources are files of its own project's data folder (a relative path is
        read from there): never another project's data, nor anything else on the machine."""
        from .store import data_dir

        folder = data_dir(self.ctx.settings, project).resolve()
        for item, key in [(s, "path") for s in definition["sources"]] + [
            (v, "source_path") for v in definition["feature_views"]
        ]:
            path = item.get(key)
            if not path:
                continue
            if "://" in path:
                raise APIError(400, f"source {path}: a file in the project's data folder {folder}")
            placed = (folder / path).resolve()
            if placed != folder and folder not in placed.parents:
                raise APIError(
                    400,
                    f"source {path}: outside the project's data folder; a proposal reads files of "
                    f"{folder} only (give the path relative to it)",
                )
            if not placed.exists():
                raise APIError(
                    400,
                    f"source {path}: there is no {placed}; the data must be in the project's "
                    "data folder before its features are proposed",
                )
            item[key] = str(placed)

    async def get(self, project=None):
        projects = await self.readable()
        wanted = self.get_argument("project", "") or project
        if wanted:
            await self.project(wanted)
            projects = [wanted]
        state = self.get_argument("state", "")
        if state and state not in reviews.STATES:
            raise APIError(400, f"state: one of {', '.join(reviews.STATES)} (got {state!r})")
        rows = reviews.listed(self.ctx.engine, projects, state)
        out = []
        for row in rows:
            item = reviews.as_json(row)
            item["you_may_review"] = (
                row.state == "pending"
                and row.proposed_by != self.user_name
                and await self.owns(row.project)
            )
            out.append(item)
        self.send({"proposals": out})


def _refusal(review: dict) -> str:
    parts = [f["message"] for key in ("duplicates", "collisions", "missing") for f in review[key]]
    return "Not proposed: " + " ".join(parts)


class ProposalHandler(FeaturesBase):
    async def row(self, pid: str):
        row = reviews.get(self.ctx.engine, int(pid))
        if row is None or row.project not in await self.readable():
            raise APIError(404, f"no proposal {pid} that you may read")
        return row

    async def get(self, pid):
        row = await self.row(pid)
        self.send(reviews.as_json(row))


class ReviewHandler(ProposalHandler):
    async def post(self, pid):
        row = await self.row(pid)
        body = self.json_body()
        decision = body.get("decision")
        comment = str(body.get("comment") or "").strip()[:2000]
        if decision not in ("approve", "reject"):
            raise APIError(400, f"decision: approve or reject (got {decision!r})")
        project = row.project
        if not await self.owns(project):
            owners = self.ctx.settings.features.projects[project].owners
            raise APIError(
                403,
                f"only the owners of {project} review its proposals: members of "
                + (", ".join(owners) if owners else "the hub's admins"),
            )
        if row.proposed_by == self.user_name:
            raise APIError(403, "you proposed this; another owner of the project reviews it")
        if decision == "reject" and not comment:
            raise APIError(400, "comment: say why it is rejected, so the proposer can fix it")
        if row.state != "pending":
            raise APIError(409, f"proposal {row.id} is already {row.state}")
        await self.ready()
        now = self.ctx.now()
        state = "approved" if decision == "approve" else "rejected"
        if not reviews.decide(self.ctx.engine, row.id, state, self.user_name, comment, now):
            raise APIError(409, f"proposal {row.id} was decided meanwhile")
        reviews.record(
            self.ctx.engine,
            project,
            self.user_name,
            state,
            row.title,
            now,
            proposal=row.id,
            comment=comment,
        )
        if state == "approved":
            error = await self.apply(row)
            reviews.set_outcome(self.ctx.engine, row.id, "failed" if error else "applied", error)
            reviews.record(
                self.ctx.engine,
                project,
                self.user_name,
                "apply_failed" if error else "applied",
                row.title,
                self.ctx.now(),
                proposal=row.id,
                **({"error": error} if error else {}),
            )
        self.send(reviews.as_json(reviews.get(self.ctx.engine, row.id)))

    async def apply(self, row) -> str:
        """Apply the approved definitions (``feast apply``); '' or what Feast said."""
        from .proposals import check, to_feast

        project = row.project
        cat = await self.ctx.catalog(project, fresh=True)
        again = check(row.definition, cat)  # the project may have changed since it was proposed
        if not again["ok"]:
            return _refusal(again)
        store = self.ctx.stores.get(project)

        def do():
            entities = {e.name: e for e in store.list_entities()}
            views = {v.name: v for v in store.list_feature_views()}
            objects = to_feast(row.definition, entities, existing_views=views)
            store.apply(objects)

        try:
            await self.ctx.blocking(do)
        except Exception as e:
            log.exception("features: applying proposal %s failed", row.id)
            return f"Feast refused to apply it: {e}"
        finally:
            await self.ctx.changed(project)
        return ""


class AuditHandler(FeaturesBase):
    async def get(self, project):
        await self.project(project)
        self.send({"project": project, "audit": reviews.trail(self.ctx.engine, project)})


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

    serve(app, "features", on_start=start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
