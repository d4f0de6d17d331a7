"""Find, understand and reuse features from the notebook: the ``FeatureBrowser`` and plain Feast.

>>> from hubml.widgets import FeatureBrowser, feature_store, propose_features
>>> FeatureBrowser()                         # search, a view's schema, freshness, stats, lineage
>>> store = feature_store("rides")           # a real feast.FeatureStore, as you
>>> store.get_historical_features(entity_df=df, features=["driver_hourly_stats:conv_rate"]).to_df()
>>> propose_features(open("driver_extra.py").read())   # checked, then reviewed by an owner

Everything is asked of the ``features`` hub service with this server's own token
(``HUBML_FEATURES_URL``): the service decides which projects you see. Feast is imported only by
``feature_store`` (and the cell "Insert code" writes); the browser itself needs only ipywidgets.
"""

from __future__ import annotations

import html
import os

import ipywidgets as w

from .featureshtml import PROPOSAL_TEMPLATE, findings_html, history_code, lineage_html, view_html

e = html.escape


class FeaturesError(RuntimeError):
    pass


class FeaturesClient:
    def __init__(self, base_url: str | None = None, token: str | None = None):
        self.base = (base_url or os.environ.get("HUBML_FEATURES_URL", "")).rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def __call__(self, method: str, path: str, body=None, params=None) -> dict:
        import requests

        from ._http import call

        if not self.base.startswith("http"):
            raise FeaturesError(
                "no features service is configured for this server (HUBML_FEATURES_URL is not set)"
            )
        try:
            status, data, reason = call(
                method, f"{self.base}/{path}", self.token, body=body, params=params, timeout=120
            )
        except requests.RequestException as ex:
            raise FeaturesError(
                f"the features service did not answer ({type(ex).__name__})"
            ) from None
        if status >= 400:
            err = FeaturesError(data.get("message", reason))
            err.status, err.data = status, data
            raise err
        return data


def feature_store(project: str = "rides"):
    """A ``feast.FeatureStore`` of the platform's ``project``, reading as you (through the
    features service); ``get_historical_features`` in an MLflow run tags the run."""
    from hubml.extensions.features.client import store

    return store(project)


def propose_features(source: str, project: str = "rides", title: str = "", client=None) -> dict:
    """Propose feature views (a Feast repo file's Python) to ``project``. The service reads it
    without running it and checks it; a complete, new proposal waits for a project owner. The
    answer says what is missing, what already exists and how to reuse it."""
    client = client or FeaturesClient()
    try:
        return client(
            "POST", f"api/projects/{project}/proposals", body={"source": source, "title": title}
        )
    except FeaturesError as err:
        if getattr(err, "status", 0) == 422:
            return err.data
        raise


def insert_cell(code: str, on_done=None) -> bool:
    """Ask JupyterLab (the hubml extension) to put ``code`` in a new cell below the active one.
    False when there is no frontend to ask (then show the code to copy)."""
    try:
        from comm import create_comm
    except ImportError:
        return False
    channel = create_comm(target_name="hubml.insert", data={"code": code})

    def answered(msg):
        if on_done is not None:
            on_done(bool(msg["content"]["data"].get("inserted")))

    channel.on_msg(answered)
    return True


class FeatureBrowser(w.VBox):
    """Search the feature views of your projects, open one, and reuse its features."""

    def __init__(self, project: str = "", query: str = "", client: FeaturesClient | None = None):
        self.client = client or FeaturesClient()
        self.q = w.Text(
            value=query, description="Search", placeholder="name, description, tag, owner"
        )
        self.q.continuous_update = False
        self.owner = w.Text(description="Owner", placeholder="e.g. driver-ops")
        self.owner.continuous_update = False
        self.tag = w.Text(description="Tag", placeholder="key or key=value")
        self.tag.continuous_update = False
        self.project = w.Dropdown(description="Project", options=[("all", "")], value="")
        self.entity = w.Dropdown(description="Entity", options=[("any", "")], value="")
        self.search_button = w.Button(description="Search", icon="search")
        self.count = w.HTML("")
        self.results = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.detail = w.HTML("")
        self.lineage = w.HTML("")
        self.features = w.SelectMultiple(options=[], rows=5, description="Features")
        self.add_button = w.Button(description="Add to training set", icon="plus")
        self.insert_button = w.Button(
            description="Insert code", icon="code", button_style="primary"
        )
        self.cart = []
        self.cart_box = w.HTML("")
        self.service_name = w.Text(description="Save as", placeholder="feature service name")
        self.save_button = w.Button(description="Save feature service", icon="save")
        self.clear_button = w.Button(description="Empty", icon="trash")
        self.code = w.Textarea(layout=w.Layout(width="100%", height="14em", display="none"))
        self.status = w.HTML("")
        # proposing a feature view, and the proposals waiting for this person's review
        self.proposal = w.Textarea(
            value=PROPOSAL_TEMPLATE, layout=w.Layout(width="100%", height="16em")
        )
        self.propose_button = w.Button(description="Check and propose", icon="paper-plane")
        self.proposal_answer = w.HTML("")
        self.reviews = w.VBox([])
        self.reviews.add_class("hubml-feature-reviews")
        self.propose_box = w.VBox(
            [
                w.HTML(
                    "<b>Propose a feature view</b> (a Feast repo file's Python; it is read, "
                    "never run, checked, then reviewed by an owner of the project)"
                ),
                self.proposal,
                self.propose_button,
                self.proposal_answer,
            ]
        )
        self.propose_box.add_class("hubml-propose")
        self.view = None
        self.stats = None
        for box in (self.q, self.owner, self.tag, self.project, self.entity):
            box.observe(lambda _c: self.search(), names="value")
        self.search_button.on_click(lambda _b: self.search())
        self.results.observe(self._picked, names="value")
        self.add_button.on_click(lambda _b: self.add())
        self.insert_button.on_click(lambda _b: self.insert())
        self.save_button.on_click(lambda _b: self.save())
        self.clear_button.on_click(lambda _b: self.empty())
        self.propose_button.on_click(lambda _b: self.propose())
        super().__init__(
            [
                w.HBox([self.q, self.search_button]),
                w.HBox([self.project, self.entity]),
                w.HBox([self.owner, self.tag]),
                self.count,
                self.results,
                self.detail,
                self.lineage,
                w.HBox([self.features, w.VBox([self.add_button, self.insert_button])]),
                self.cart_box,
                w.HBox([self.service_name, self.save_button, self.clear_button]),
                self.status,
                self.code,
                self.reviews,
                w.Accordion(children=[self.propose_box], titles=("Propose a feature view",)),
            ]
        )
        self.add_class("hubml-feature-browser")
        self.results.add_class("hubml-feature-results")
        self.features.add_class("hubml-feature-pick")
        self._load_projects(project)
        self.search()
        self.load_reviews()

    # -- talking to the service --------------------------------------------------------------

    def _say(self, message: str, error: bool = False) -> None:
        color = "#cf222e" if error else "#1f2328"
        self.status.value = f"<span style='color:{color}'>{e(message)}</span>"

    def _load_projects(self, wanted: str) -> None:
        try:
            projects = self.client("GET", "api/projects")["projects"]
        except FeaturesError as err:
            self._say(str(err), error=True)
            return
        names = [p["name"] for p in projects]
        self.project.options = [("all", "")] + [(p, p) for p in names]
        if wanted in names:
            self.project.value = wanted
        elif wanted:
            self._say(
                f"You may read no project {wanted!r}; yours: {', '.join(names) or 'none'}", True
            )
        entities = {name for p in projects for name in p.get("entities", [])}
        self.entity.options = [("any", "")] + [(x, x) for x in sorted(entities)]

    def search(self) -> list[dict]:
        params = {
            "q": self.q.value,
            "owner": self.owner.value,
            "tag": self.tag.value,
            "entity": self.entity.value,
            "project": self.project.value,
        }
        try:
            found = self.client("GET", "api/search", params={k: v for k, v in params.items() if v})
        except FeaturesError as err:
            self._say(str(err), error=True)
            return []
        self.count.value = f"<small>{found['total']} feature view(s)</small>"
        self.results.options = [
            (
                f"{r['project']} / {r['name']} [{r['freshness']}]: {r['description'][:70]}",
                (r["project"], r["name"]),
            )
            for r in found["results"]
        ]
        return found["results"]

    def _picked(self, change) -> None:
        if change["new"]:
            self.show_view(*change["new"])

    def show_view(self, project: str, name: str) -> None:
        try:
            self.view = self.client("GET", f"api/projects/{project}/feature-views/{name}")
            self.stats = self.client("GET", f"api/projects/{project}/feature-views/{name}/stats")
        except FeaturesError as err:
            self._say(str(err), error=True)
            return
        self.detail.value = view_html(self.view, self.stats)
        self.features.options = [f["name"] for f in self.view["features"]]
        self.features.value = tuple(self.features.options)
        try:
            lineage = self.client("GET", f"api/projects/{project}/feature-views/{name}/lineage")
            self.lineage.value = lineage_html(lineage)
        except FeaturesError as err:
            self.lineage.value = f"<small>Lineage: {e(str(err))}</small>"

    # -- the training set ----------------------------------------------------------------------

    def _chosen(self) -> list[str]:
        if self.view is None:
            return []
        return [f"{self.view['name']}:{f}" for f in self.features.value]

    def add(self) -> None:
        if self.view is None:
            self._say("Open a feature view first, then choose its features", error=True)
            return
        if self.cart and self.cart[0][0] != self.view["project"]:
            self._say("A training set takes features of one project; empty it first", error=True)
            return
        for ref in self._chosen():
            if (self.view["project"], ref) not in self.cart:
                self.cart.append((self.view["project"], ref))
        self._show_cart()

    def empty(self) -> None:
        self.cart = []
        self._show_cart()

    def _show_cart(self) -> None:
        if not self.cart:
            self.cart_box.value = ""
            return
        self.cart_box.value = (
            f"<div class='hubml-cart'><b>Training set</b> ({e(self.cart[0][0])}): "
            + e(", ".join(ref for _p, ref in self.cart))
            + "</div>"
        )

    def _keys(self, project: str, refs: list[str]) -> dict[str, list]:
        """Real entity keys for the cell: from the sample rows of the views used."""
        keys: dict[str, list] = {}
        views = dict.fromkeys(r.split(":", 1)[0] for r in refs)
        for name in views:
            try:
                view = self.client("GET", f"api/projects/{project}/feature-views/{name}")
                stats = self.client("GET", f"api/projects/{project}/feature-views/{name}/stats")
            except FeaturesError:
                continue
            rows = (stats.get("sample") or {}).get("rows", [])
            for key in view["join_keys"]:
                values = list(dict.fromkeys(r.get(key) for r in rows if r.get(key) is not None))
                keys.setdefault(key, values[:3] or [0])
        return keys

    def code_for(self) -> tuple[str, list[str]] | None:
        if self.cart:
            project, refs = self.cart[0][0], [ref for _p, ref in self.cart]
        elif self.view is not None and self.features.value:
            project, refs = self.view["project"], self._chosen()
        else:
            return None
        return history_code(project, refs, self._keys(project, refs)), refs

    def insert(self) -> None:
        made = self.code_for()
        if made is None:
            self._say(
                "Choose features first: open a feature view, or add to the training set", True
            )
            return
        code, refs = made
        self.code.value = code
        self.code.layout.display = "none"

        def done(inserted: bool) -> None:
            if inserted:
                self._say(
                    f"Inserted a cell below with {len(refs)} feature(s); run it to get the DataFrame"
                )
            else:
                self.code.layout.display = ""
                self._say("Could not insert a cell here: copy the code below into one", True)

        if not insert_cell(code, done):
            done(False)
        else:
            self._say("Inserting a cell…")

    def save(self) -> None:
        if not self.cart:
            self._say("Add features to the training set first", error=True)
            return
        name = self.service_name.value.strip()
        project = self.cart[0][0]
        try:
            saved = self.client(
                "POST",
                f"api/projects/{project}/feature-services",
                body={"name": name, "features": [ref for _p, ref in self.cart]},
            )
        except FeaturesError as err:
            self._say(str(err), error=True)
            return
        self._say(
            f"Saved feature service {saved['name']} ({len(saved['refs'])} features): "
            f"store.get_feature_service({saved['name']!r})"
        )

    # -- proposals ---------------------------------------------------------------------------

    def propose(self) -> dict:
        project = self.project.value or next((v for _label, v in self.project.options if v), "")
        if not project:
            self._say("You may read no feature project to propose to", error=True)
            return {}
        try:
            answer = propose_features(self.proposal.value, project, client=self.client)
        except FeaturesError as err:
            self.proposal_answer.value = f"<span style='color:#cf222e'>{e(str(err))}</span>"
            return {}
        self.proposal_answer.value = findings_html(answer)
        return answer

    def load_reviews(self) -> None:
        try:
            pending = self.client("GET", "api/proposals", params={"state": "pending"})
        except FeaturesError:
            return
        rows = []
        for p in pending["proposals"]:
            if not p["you_may_review"]:
                continue
            comment = w.Text(placeholder="comment (required to reject)")
            approve = w.Button(description="Approve", button_style="success", icon="check")
            reject = w.Button(description="Reject", icon="times")
            said = w.HTML("")
            views = ", ".join(v["name"] for v in p["definition"]["feature_views"])

            def decide(
                decision, pid=p["id"], comment=comment, said=said, buttons=(approve, reject)
            ):
                try:
                    done = self.client(
                        "POST",
                        f"api/proposals/{pid}/review",
                        body={"decision": decision, "comment": comment.value},
                    )
                except FeaturesError as err:
                    said.value = f"<span style='color:#cf222e'>{e(str(err))}</span>"
                    return
                for b in buttons:
                    b.disabled = True
                said.value = f"<b>{e(done['state'])}</b>" + (
                    f": {e(done['error'])}" if done.get("error") else ""
                )
                self.search()

            approve.on_click(lambda _b, d=decide: d("approve"))
            reject.on_click(lambda _b, d=decide: d("reject"))
            row = w.VBox(
                [
                    w.HTML(
                        f"<b>#{p['id']} {e(p['title'])}</b> to {e(p['project'])} by "
                        f"{e(p['proposed_by'])}: {e(views)}"
                        f"<details><summary>Definition</summary><pre>{e(p['source'])}</pre></details>"
                    ),
                    w.HBox([comment, approve, reject]),
                    said,
                ]
            )
            row.add_class("hubml-review-row")
            rows.append(row)
        self.reviews.children = (
            [w.HTML(f"<b>Waiting for your review</b> ({len(rows)})"), *rows] if rows else []
        )
