"""The ``features`` service's writes: saved feature services (a training set), proposals and
their review (read without running them, checked, decided once by another owner, applied), and
the audit trail every change leaves.
"""

from __future__ import annotations

import logging
import re

from hubml.extensions.common.errors import APIError

from . import reviews
from .base import FeaturesBase

log = logging.getLogger("hubml.features")

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


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


class MaterializeHandler(FeaturesBase):
    """``POST api/projects/<p>/materialize``: an owner brings the online store up to now."""

    async def post(self, project):
        await self.project(project)
        if not await self.owns(project):
            raise APIError(403, f"only the owners of {project} materialize it")
        try:
            views = await self.ctx.blocking(self.ctx.materialize, project, self.user_name)
        except Exception as e:
            log.exception("features: materializing %s failed", project)
            raise APIError(409, f"Feast could not materialize {project}: {e}") from None
        cat = await self.ctx.catalog(project, fresh=True)
        self.send(
            {
                "project": project,
                "materialized": views,
                "freshness": {v["name"]: v["freshness"] for v in cat["feature_views"]},
            }
        )


class AuditHandler(FeaturesBase):
    async def get(self, project):
        await self.project(project)
        self.send({"project": project, "audit": reviews.trail(self.ctx.engine, project)})
