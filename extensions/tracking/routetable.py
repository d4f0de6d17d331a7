"""The MLflow front door's route table: every route of the MLflow server and what it needs.

:mod:`.access` applies it; ``tests/unit/test_access.py`` walks MLflow's own route list (its
Flask URL map and the FastAPI routers it mounts) and fails when a route is not classified here,
so an MLflow upgrade cannot open a route silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    """A route (regular expression on the canonical path) and what a request to it needs.

    ``kind`` is one of:

    read            anyone signed in (also POST searches)
    graphql         a read, once the body is a GraphQL request
    create_run      start a run: the experiment's owner (or the Default experiment); stamps the user
    run             the run's user (``run_id``/``run_uuid`` in the body or query)
    experiment_new  anyone; stamps ``hubml.owner``
    experiment      the experiment's owner
    logged_new      a logged model: the source run's user, or the experiment's owner; stamps
    logged          the logged model's creator (``model_id`` in path and body)
    artifact        files under ``<experiment>/<run>/artifacts/`` or ``<experiment>/models/<m-id>/``
    model_new       register a name: anyone; stamps ``hubml.owner``
    model           the registered model's owners/maintainers (``name`` in the body)
    alias           as ``model``; ``@champion``/``@challenger`` only through the registry API
    admin           admins only
    registry_api    refused here: the registry API does it (audited)
    off             a feature hubml does not offer: writes refused for everyone
    """

    pattern: str
    methods: frozenset[str]
    kind: str
    what: str = ""

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and re.fullmatch(self.pattern, path) is not None


# -- the table ------------------------------------------------------------------------------

_V2 = r"(?:ajax-)?api/2\.0/mlflow"
_V3 = r"(?:ajax-)?api/3\.0/mlflow"
_VX = r"(?:ajax-)?api/[23]\.0/mlflow"
_ART = r"(?:ajax-)?api/2\.0/mlflow-artifacts"
_SEG = r"[^/]+"
R, W, D = frozenset({"GET", "HEAD", "OPTIONS"}), frozenset({"POST"}), frozenset({"DELETE"})
P, PA, PU = frozenset({"POST"}), frozenset({"PATCH"}), frozenset({"PUT"})
ANY_WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _r(pattern, methods, kind, what=""):
    return Rule(pattern, frozenset(methods), kind, what)


RULES: tuple[Rule, ...] = (
    # the gateway proxy forwards to model providers hubml does not configure, reads included
    _r(r"ajax-api/2\.0/mlflow/gateway-proxy", R | ANY_WRITE, "off", "the AI gateway"),
    _r(r"gateway/.*", R | ANY_WRITE, "off", "the AI gateway"),
    # the assistant runs tools on the server host; hubml does not configure one
    _r(rf"{_V3}/assistant(/.*)?", R | ANY_WRITE, "off", "the MLflow assistant"),
    # --- every GET is a read; the UI and its assets
    _r(r".*", R, "read"),
    # --- searches that MLflow takes as POST
    _r(
        rf"{_V2}/(runs/search|experiments/search|registered-models/get-latest-versions|"
        rf"logged-models/search|artifacts/presigned-download-url)",
        P,
        "read",
    ),
    # (MLflow registers this one both with and without the slash after 2.0)
    _r(r"(?:ajax-)?api/2\.0/?mlflow/experiments/search-datasets", P, "read"),
    _r(r"graphql", P, "graphql", "GraphQL (its schema has searches only)"),
    # --- runs
    _r(rf"{_V2}/runs/create", P, "create_run"),
    _r(
        rf"{_V2}/runs/(delete|restore|update|log-metric|log-parameter|set-tag|delete-tag|"
        rf"log-batch|log-model|log-inputs|outputs)",
        P,
        "run",
    ),
    # --- experiments
    _r(rf"{_V2}/experiments/create", P, "experiment_new"),
    _r(
        rf"{_V2}/experiments/(delete|restore|update|set-experiment-tag|delete-experiment-tag)",
        P,
        "experiment",
    ),
    # --- logged models (MLflow 3)
    _r(rf"{_V2}/logged-models", P, "logged_new"),
    _r(rf"{_V2}/logged-models/(?P<model_id>{_SEG})", PA | D, "logged"),
    _r(rf"{_V2}/logged-models/(?P<model_id>{_SEG})/params", P, "logged"),
    _r(rf"{_V2}/logged-models/(?P<model_id>{_SEG})/tags", PA, "logged"),
    _r(rf"{_V2}/logged-models/(?P<model_id>{_SEG})/tags/(?P<tag_key>.+)", D, "logged"),
    # --- artifacts (proxied; the path says whose they are)
    _r(rf"{_ART}/artifacts/(?P<artifact_path>.+)", PU | D, "artifact"),
    _r(rf"{_ART}/mpu/(create|complete|abort)/(?P<artifact_path>.+)", P, "artifact"),
    _r(r"ajax-api/2\.0/mlflow/upload-artifact", P, "run", "upload an artifact"),
    _r(
        rf"{_V2}/artifacts/presigned-upload-url",
        P,
        "off",
        "presigned uploads (artifacts go through the tracking service)",
    ),
    # --- the registry
    _r(rf"{_V2}/registered-models/create", P, "model_new"),
    _r(rf"{_V2}/registered-models/(update|set-tag|delete-tag)", PA | P | D, "model"),
    _r(rf"{_V2}/registered-models/alias", P | D, "alias"),
    _r(rf"{_V2}/registered-models/(rename|delete)", P | D, "admin", "rename or delete a model"),
    _r(
        rf"{_V2}/model-versions/(create|update|set-tag|delete-tag|transition-stage)",
        P | PA | D,
        "model",
    ),
    _r(rf"{_V2}/model-versions/delete", D, "registry_api", "delete a model version"),
    _r(rf"{_V2}/webhooks(/{_SEG})?(/test)?", P | PA | D, "admin", "manage webhooks"),
    # --- MLflow's GenAI features and server-side jobs: not part of hubml's classic-ML platform
    _r(rf"{_VX}/traces(/.*)?", ANY_WRITE, "off", "traces"),
    _r(rf"{_V2}/get-trace-artifact", ANY_WRITE, "off", "traces"),
    _r(rf"{_V3}/datasets(/.*)?", ANY_WRITE, "off", "evaluation datasets"),
    _r(rf"{_V3}/gateway(/.*)?", ANY_WRITE, "off", "the AI gateway"),
    _r(rf"{_V3}/(scorers|scorer)(/.*)?", ANY_WRITE, "off", "scorers"),
    _r(rf"{_V3}/prompt-optimization(/.*)?", ANY_WRITE, "off", "prompt optimization"),
    _r(rf"{_V3}/review-queues(/.*)?", ANY_WRITE, "off", "review queues"),
    _r(rf"{_V3}/label-schemas(/.*)?", ANY_WRITE, "off", "label schemas"),
    _r(rf"{_V3}/issues(/.*)?", ANY_WRITE, "off", "issues"),
    _r(rf"{_V3}/workspaces(/.*)?", ANY_WRITE, "off", "workspaces"),
    _r(rf"{_V3}/ui-telemetry", ANY_WRITE, "off", "telemetry"),
    _r(r"(?:ajax-)?api/3\.0/(mlflow/)?jobs(/.*)?", ANY_WRITE, "off", "server-side jobs"),
    _r(r"v1/traces", ANY_WRITE, "off", "traces (OpenTelemetry)"),
    _r(rf"{_V3}/mcp-servers(/.*)?", ANY_WRITE, "off", "MCP servers"),
    _r(rf"{_V3}/demo/.*", ANY_WRITE, "off", "demo data"),
    _r(rf"{_V3}/genai/.*", ANY_WRITE, "off", "GenAI evaluation"),
    _r(rf"{_V2}/runs/create-promptlab-run", ANY_WRITE, "off", "prompt-lab runs"),
)


def find_rule(method: str, path: str) -> Rule | None:
    """The first rule for ``method`` on the canonical ``path``; None: nothing allows it."""
    for rule in RULES:
        if rule.matches(method, path):
            return rule
    return None
