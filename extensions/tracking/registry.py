"""Gated publishing and human-approved promotion for the MLflow model registry.

The flow, for one registered model:

1. ``publish`` a logged model (``runs:/<run_id>/<artifact_path>``): the gates run *before*
   anything is registered; only when all pass is a version created and ``@challenger`` moved
   to it. A failed gate leaves the registry untouched and says which gate failed, with numbers.
2. ``request_promotion`` records that the author asks for review.
3. ``approve`` moves ``@champion``; the approver must not be the version's author and, when the
   model's policy names an approver group, must belong to it.
4. ``rollback`` moves ``@champion`` back to the champion it replaced.

Every alias move (and every rejected publish, policy change and request) is appended to an
``AuditLog``. The gate policy lives on the registered model as ``hubml.gate.*`` tags, so it
travels with the model to any MLflow server.

The module has no hub dependency and imports mlflow, numpy and pandas lazily (importing mlflow
costs seconds), so a hub service or a widget can import it for free. Every method blocks on
network and disk: call it from a worker thread in an async server.

Security note: the gates load and run the candidate model, i.e. code its author chose. Run
``RegistryService`` where that is acceptable (its own process and user), not inside the hub.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)
# One JSON object per alias move, on its own logger so operators can route it to a SIEM
audit_log = logging.getLogger("hubml.audit.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"

# registered-model tags that hold the GatePolicy
POLICY_TAG_PREFIX = "hubml.gate."
# model-version tags written by publish
AUTHOR_TAG = "hubml.author"
SOURCE_RUN_TAG = "hubml.source_run"
GATES_TAG = "hubml.gates"
GATES_PASSED_TAG = "hubml.gates_passed"
# run tags naming the hub user who made the run (see DESIGN "Run tags")
RUN_USER_TAGS = ("hubml.user", "mlflow.user")

# MLflow keeps registered model names in a String(256) column
MAX_MODEL_NAME_LENGTH = 256
MAX_ALIAS_LENGTH = 255
MAX_REASON_LENGTH = 2000
_ALIAS_RE = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS_RE = re.compile(r"^[vV]\d+$")
_METRIC_RE = re.compile(r"^[/\w.\- ]+$")
_RUN_ID_RE = re.compile(r"^[\w\-]{1,64}$")
_BAD_NAME_CHARS = "/:@'\"\\"


class RegistryError(Exception):
    """A refusal the caller can act on; ``status`` is the HTTP status a service should return.

    400: bad input (name, alias, version, policy value); 403: the user may not do this;
    404: the model, version, run or alias does not exist; 409: the registry's state forbids it
    (nothing to roll back to, version never passed the gates, ...).
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


# -- input validation -------------------------------------------------------------------------


def validate_model_name(name: Any) -> str:
    """Return ``name`` if MLflow would accept it as a registered model name, else raise 400.

    Mirrors MLflow's own rules (non-blank, no ``/`` or ``:``, must not resolve to another path,
    at most 256 characters) so the user sees the reason before any request is made. ``@`` is
    refused too: it separates the alias in ``models:/<name>@<alias>`` URIs, so such a model
    could never be loaded by alias; quotes and backslashes are refused so a name is always
    safe inside an MLflow search filter.
    """
    allowed = "printable characters except / : @ ' \" \\, at most 256"
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"model name is required ({allowed})")
    if len(name) > MAX_MODEL_NAME_LENGTH:
        raise RegistryError(f"model name is {len(name)} characters long; allowed: {allowed}")
    bad = sorted({c for c in name if c in _BAD_NAME_CHARS or not c.isprintable()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise RegistryError(f"invalid model name {name!r}: it contains {shown}; allowed: {allowed}")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        raise RegistryError(
            f"invalid model name {name!r}: MLflow treats names as paths and this one resolves to "
            f"{norm!r}; allowed: {allowed}"
        )
    return name


def validate_alias(alias: Any) -> str:
    """Return ``alias`` if it is a syntactically valid MLflow alias, else raise 400."""
    if not isinstance(alias, str) or not alias:
        raise RegistryError("alias is required (letters, digits, _ and -)")
    alias = alias.removeprefix("@")
    if not _ALIAS_RE.match(alias) or len(alias) > MAX_ALIAS_LENGTH:
        raise RegistryError(f"invalid alias {alias!r}: use letters, digits, _ and - (at most 255)")
    if _RESERVED_ALIAS_RE.match(alias) or alias.lower() == "latest":
        raise RegistryError(f"alias {alias!r} is reserved by MLflow (v<number> and 'latest')")
    return alias


def validate_version(version: Any) -> str:
    """Return a model version number as MLflow's string form, or raise 400."""
    text = str(version).strip()
    if isinstance(version, bool) or not text.isdigit() or int(text) < 1:
        raise RegistryError(f"invalid model version {version!r}: use a positive integer such as 3")
    return str(int(text))


def validate_user(user: Any, what: str = "user") -> str:
    if not isinstance(user, str) or not user.strip():
        raise RegistryError(f"the acting {what} is required")
    return user


def _validate_reason(reason: Any) -> str:
    reason = "" if reason is None else str(reason)
    if len(reason) > MAX_REASON_LENGTH:
        raise RegistryError(f"reason is {len(reason)} characters; at most {MAX_REASON_LENGTH}")
    return reason


def _validate_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise RegistryError(f"invalid run id {run_id!r}: expected an MLflow run id (32 hex digits)")
    return run_id


# -- policy -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """What a candidate must meet to be published, and who may promote it.

    Stored on the registered model as ``hubml.gate.<field>`` tags (``get_policy``/``set_policy``).
    """

    #: the run metric compared with the champion's, e.g. ``accuracy`` or ``rmse``
    metric: str = "accuracy"
    #: ``max``: higher is better; ``min``: lower is better
    direction: str = "max"
    #: absolute slack: with ``max`` a candidate passes when ``metric >= champion - tolerance``
    tolerance: float = 0.0
    #: the 95th percentile of predict latency on the input example must be at most this (ms)
    latency_budget_ms: float = 100.0
    #: how many timed predictions the latency gate makes
    latency_trials: int = 20
    #: hub group whose members may approve; ``None``: any user except the author
    approver_group: str | None = None
    #: allow the author to approve their own version (single-person teams); off by default
    allow_self_approval: bool = False

    def __post_init__(self):
        def bad(field: str, value: Any, allowed: str) -> RegistryError:
            return RegistryError(f"invalid gate policy: {field}={value!r}; allowed: {allowed}")

        if (
            not isinstance(self.metric, str)
            or not _METRIC_RE.match(self.metric)
            or len(self.metric) > 250
        ):
            raise bad("metric", self.metric, "an MLflow metric name such as 'accuracy'")
        if self.direction not in ("max", "min"):
            raise bad("direction", self.direction, "'max' (higher is better) or 'min'")
        if (
            not _is_number(self.tolerance)
            or not math.isfinite(self.tolerance)
            or self.tolerance < 0
        ):
            raise bad("tolerance", self.tolerance, "a finite number >= 0")
        budget = self.latency_budget_ms
        if not _is_number(budget) or not math.isfinite(budget) or budget <= 0:
            raise bad("latency_budget_ms", budget, "a finite number of milliseconds > 0")
        trials = self.latency_trials
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 1000:
            raise bad("latency_trials", trials, "an integer from 1 to 1000")
        group = self.approver_group
        if group is not None and (not isinstance(group, str) or not group.strip()):
            raise bad(
                "approver_group", group, "a hub group name, or null for 'anyone but the author'"
            )
        if not isinstance(self.allow_self_approval, bool):
            raise bad("allow_self_approval", self.allow_self_approval, "true or false")

    def to_tags(self) -> dict[str, str]:
        """The policy as registered-model tags (all strings; ``""`` means no approver group)."""
        return {
            POLICY_TAG_PREFIX + f.name: _tag_value(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GatePolicy:
        """Read a policy from registered-model tags; missing tags take the defaults.

        A tag that does not parse is a 409: the stored state is wrong, not the request.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = POLICY_TAG_PREFIX + f.name
            if key not in tags:
                continue
            raw = tags[key]
            try:
                if f.name in ("tolerance", "latency_budget_ms"):
                    values[f.name] = float(raw)
                elif f.name == "latency_trials":
                    values[f.name] = int(raw)
                elif f.name == "allow_self_approval":
                    if raw not in ("true", "false"):
                        raise ValueError(raw)
                    values[f.name] = raw == "true"
                elif f.name == "approver_group":
                    values[f.name] = raw or None
                else:
                    values[f.name] = raw
            except ValueError:
                raise RegistryError(
                    f"registered model tag {key}={raw!r} is not a valid {f.name}; "
                    "fix it with set_policy",
                    409,
                ) from None
        try:
            return cls(**values)
        except RegistryError as e:
            raise RegistryError(
                f"{e.message} (from the model's {POLICY_TAG_PREFIX}* tags)", 409
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tag_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def get_policy(client, name: str) -> GatePolicy:
    """The model's gate policy; the default policy when the model is not registered yet."""
    model = _get_registered_model(client, validate_model_name(name))
    return GatePolicy.from_tags(model.tags if model else {})


def set_policy(client, name: str, policy: GatePolicy, user: str) -> GatePolicy:
    """Store ``policy`` on the registered model (created if missing, so a policy can be set
    before the first version). Authorization and auditing are ``RegistryService.set_policy``'s.
    """
    name = validate_model_name(name)
    validate_user(user)
    _ensure_registered_model(client, name, policy)
    for key, value in policy.to_tags().items():
        client.set_registered_model_tag(name, key, value)
    log.info("gate policy of %s set by %s: %s", name, user, policy)
    return policy


# -- gates ------------------------------------------------------------------------------------


@dataclasses.dataclass
class GateResult:
    """One gate's verdict: ``detail`` is for people, ``numbers`` for tables and machines."""

    name: str
    passed: bool
    detail: str
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GateReport:
    model_uri: str
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        """One line, e.g. ``metric: passed; inference: passed; latency: FAILED (p95 ...)``."""
        return "; ".join(
            f"{r.name}: passed" if r.passed else f"{r.name}: FAILED ({r.detail})"
            for r in self.results
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_uri": self.model_uri,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }


@dataclasses.dataclass(frozen=True)
class Champion:
    """The version a candidate is compared with, and the metrics of its source run."""

    version: str
    metrics: Mapping[str, float]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def check_metric(
    policy: GatePolicy, candidate_metrics: Mapping[str, float], champion: Champion | None
) -> GateResult:
    """Gate (a): the candidate's declared metric is at least the champion's, within tolerance."""
    m, tol = policy.metric, policy.tolerance
    numbers: dict[str, Any] = {"metric": m, "direction": policy.direction, "tolerance": tol}
    candidate = candidate_metrics.get(m)
    if candidate is None or not math.isfinite(candidate):
        logged = ", ".join(sorted(candidate_metrics)) or "none"
        return GateResult(
            "metric",
            False,
            f"the candidate run has no finite metric {m!r} (logged: {logged}); log it with "
            f"mlflow.log_metric({m!r}, value) or change the model's gate metric",
            numbers,
        )
    numbers["candidate"] = candidate
    if champion is None:
        return GateResult("metric", True, f"{m} {_fmt(candidate)}; no champion yet", numbers)
    numbers["champion_version"] = champion.version
    best = champion.metrics.get(m)
    if best is None or not math.isfinite(best):
        return GateResult(
            "metric",
            True,
            f"{m} {_fmt(candidate)}; champion v{champion.version} has no {m!r} metric to compare with",
            numbers,
        )
    numbers["champion"] = best
    if policy.direction == "max":
        threshold, passed, ok_op, bad_op, sign = best - tol, candidate >= best - tol, ">=", "<", "-"
    else:
        threshold, passed, ok_op, bad_op, sign = best + tol, candidate <= best + tol, "<=", ">", "+"
    numbers["threshold"] = threshold
    op = ok_op if passed else bad_op
    detail = f"{m} {_fmt(candidate)} {op} champion {_fmt(best)} (v{champion.version}) {sign} tolerance {tol:.2f}"
    return GateResult("metric", passed, detail, numbers)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: the result is one of the measurements)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def check_latency(
    latencies_ms: list[float], budget_ms: float, rows: int | None = None
) -> GateResult:
    """Gate (c): p95 of the measured predict latencies is within the budget."""
    p95 = percentile(latencies_ms, 95)
    numbers = {
        "p95_ms": p95,
        "budget_ms": budget_ms,
        "trials": len(latencies_ms),
        "median_ms": percentile(latencies_ms, 50),
        "max_ms": max(latencies_ms),
        "rows": rows,
    }
    what = f"over {len(latencies_ms)} predictions" + (
        f" of the input example ({rows} rows)" if rows else ""
    )
    passed = p95 <= budget_ms
    op = "<=" if passed else ">"
    return GateResult(
        "latency", passed, f"p95 latency {p95:.4g} ms {op} budget {budget_ms:g} ms {what}", numbers
    )


# numpy dtype kinds that satisfy each MLflow DataType (ints are acceptable where floats are declared)
_KINDS = {
    "boolean": "b",
    "integer": "iu",
    "long": "iu",
    "float": "fiu",
    "double": "fiu",
    "string": "OUST",
    "binary": "OS",
    "datetime": "M",
}


def output_problem(
    output: Any, expected: list[tuple[str | None, str]], rows: int | None
) -> str | None:
    """Compare a prediction with the signature's outputs; return what is wrong, or ``None``.

    ``expected`` is the output schema as ``(column name or None, MLflow type name)`` pairs; type
    names outside ``_KINDS`` (objects, arrays, numpy dtypes of tensors) are not type-checked.
    Checks: row count, column count or names, and each column's dtype kind.
    """
    import numpy as np

    if hasattr(output, "columns") and hasattr(output, "dtypes"):  # a DataFrame, without pandas
        columns = {str(c): output[c].to_numpy() for c in output.columns}
        length = len(output)
    else:
        try:
            arr = np.asarray(output)
        except Exception as e:  # ragged lists and the like
            return f"the prediction ({type(output).__name__}) is not array-like: {e}"
        if arr.ndim == 0:
            return (
                f"the prediction is a single {type(output).__name__}, not one value per input row"
            )
        length = arr.shape[0]
        if arr.ndim == 1:
            columns = {"0": arr}
        elif arr.ndim == 2:
            columns = {str(i): arr[:, i] for i in range(arr.shape[1])}
        else:  # tensors: only rows are checked
            columns = {}
    if rows is not None and length != rows:
        return f"the prediction has {length} rows for {rows} input rows"
    if not columns:
        return None
    named = bool(expected) and all(n is not None for n, _ in expected)
    if named and hasattr(output, "columns"):
        missing = [n for n, _ in expected if n not in columns]
        if missing:
            return f"the prediction lacks the signature's output columns {missing} (it has {list(columns)})"
        values = [columns[n] for n, _ in expected]
    elif len(columns) != len(expected):
        return f"the prediction has {len(columns)} columns; the signature declares {len(expected)}"
    else:
        values = list(columns.values())
    for (col_name, type_name), col in zip(expected, values, strict=True):
        kinds = _KINDS.get(type_name)
        if kinds and col.dtype.kind not in kinds:
            label = f"column {col_name!r}" if col_name else "the output"
            return f"{label} has dtype {col.dtype}; the signature declares {type_name}"
    return None


# tensor outputs declare numpy dtypes: compare them by kind like the column types
_TENSOR_KIND_TYPES = {
    "b": "boolean",
    "i": "long",
    "u": "long",
    "f": "double",
    "U": "string",
    "S": "binary",
}


def _schema_pairs(schema) -> list[tuple[str | None, str]]:
    """An MLflow ``Schema`` as ``(name, type name)`` pairs for ``output_problem``."""
    pairs = []
    for spec in schema.inputs:
        t = spec.type
        if hasattr(t, "to_numpy"):  # DataType
            type_name = t.name
        elif hasattr(t, "kind"):  # numpy dtype of a TensorSpec
            type_name = _TENSOR_KIND_TYPES.get(t.kind, str(t))
        else:  # Array, Object, Map, Any: not type-checked
            type_name = str(t)
        pairs.append((spec.name, type_name))
    return pairs


def _rows(example: Any) -> int | None:
    try:
        return len(example)
    except TypeError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _model_location(client, model_uri: str) -> tuple[str, str | None]:
    """Resolve ``runs:/<run_id>/<path>`` to (artifact URI to download, logged model id or None).

    MLflow 3 stores models as *logged models* outside the run's artifacts; older runs keep them
    under the run. ``mlflow.artifacts.download_artifacts`` resolves the former only against the
    global tracking URI, so resolve here with this client.
    """
    if not model_uri.startswith("runs:/"):
        raise RegistryError(f"model URI {model_uri!r}: expected runs:/<run_id>/<artifact_path>")
    run_id, _, artifact_path = model_uri.removeprefix("runs:/").partition("/")
    artifact_path = artifact_path.strip("/")
    _validate_run_id(run_id)
    if not artifact_path or ".." in artifact_path.split("/"):
        raise RegistryError(f"model URI {model_uri!r}: the artifact path must be a relative path")
    run = _get_run(client, run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    names = []
    for out in outputs:
        logged = client.get_logged_model(out.model_id)
        names.append(logged.name)
        if logged.name == artifact_path:
            return logged.artifact_location, logged.model_id
    if any(a.path.endswith("MLmodel") for a in client.list_artifacts(run_id, artifact_path)):
        return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
    raise RegistryError(
        f"run {run_id} has no model at {artifact_path!r} (models logged in this run: "
        f"{', '.join(names) or 'none'}); log one with mlflow.<flavor>.log_model(model, name=...)",
        404,
    )


def probe_model(model_dir: str, trials: int) -> tuple[GateResult, list[float] | None, int | None]:
    """Gate (b) on a downloaded model directory, and the latencies for gate (c).

    Loads the model with ``mlflow.pyfunc``, predicts on its logged input example (pyfunc enforces
    the input schema) and checks the output against the signature's outputs. On success, times
    ``trials`` further predictions. Kept separate from ``run_gates`` so a service can run it in a
    sandboxed subprocess.
    """
    from mlflow.models import Model
    from mlflow.pyfunc import load_model

    fix = "log the model with input_example=<a few input rows> so MLflow saves it and infers a signature"
    try:
        meta = Model.load(model_dir)
    except Exception as e:  # a hand-made or truncated MLmodel file
        detail = f"could not read the model's MLmodel file: {_first_line(e)}"
        return GateResult("inference", False, detail), None, None
    if meta.saved_input_example_info is None:
        return GateResult("inference", False, f"the model has no input example; {fix}"), None, None
    if meta.signature is None or meta.signature.outputs is None:
        return (
            GateResult("inference", False, f"the model has no signature with outputs; {fix}"),
            None,
            None,
        )
    try:
        example = meta.load_input_example(model_dir)
        model = load_model(model_dir)
        started = time.perf_counter()
        output = model.predict(example)
        first_ms = (time.perf_counter() - started) * 1000
    except Exception as e:  # the candidate's own code: any failure is a gate verdict
        log.info("test inference failed for %s", model_dir, exc_info=True)
        return (
            GateResult(
                "inference", False, f"test inference on the input example failed: {_first_line(e)}"
            ),
            None,
            None,
        )
    rows = _rows(example)
    expected = _schema_pairs(meta.signature.outputs)
    problem = output_problem(output, expected, rows)
    shape = list(getattr(output, "shape", ()) or ())
    numbers = {
        "rows": rows,
        "output_type": type(output).__name__,
        "output_shape": shape,
        "first_ms": first_ms,
    }
    if problem:
        return (
            GateResult(
                "inference",
                False,
                f"{problem} (signature outputs: {meta.signature.outputs!r})",
                numbers,
            ),
            None,
            rows,
        )
    result = GateResult(
        "inference",
        True,
        f"predicted {rows} rows of the input example; output {type(output).__name__} matches the signature",
        numbers,
    )
    latencies = []
    for trial in range(1, trials + 1):
        started = time.perf_counter()
        try:
            model.predict(example)
        except Exception as e:  # works once, then fails: as unfit to serve as failing at once
            detail = f"prediction {trial + 1} on the input example failed: {_first_line(e)}"
            return GateResult("inference", False, detail, numbers), None, rows
        latencies.append((time.perf_counter() - started) * 1000)
    return result, latencies, rows


def run_gates(
    client,
    model_uri: str,
    candidate_metrics: Mapping[str, float],
    champion: Champion | None,
    policy: GatePolicy,
) -> GateReport:
    """Run gates (a) metric vs champion, (b) test inference, (c) p95 latency; register nothing.

    All three always report, so one publish attempt tells the user everything that is wrong.
    """
    from mlflow.artifacts import download_artifacts

    results = [check_metric(policy, candidate_metrics, champion)]
    artifact_uri, _ = _model_location(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="hubml-gates-") as tmp:
        try:
            model_dir = download_artifacts(
                artifact_uri, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        except Exception as e:
            raise RegistryError(f"could not download {model_uri}: {_first_line(e)}", 404) from e
        inference, latencies, rows = probe_model(model_dir, policy.latency_trials)
    results.append(inference)
    if latencies:
        results.append(check_latency(latencies, policy.latency_budget_ms, rows))
    else:
        results.append(
            GateResult(
                "latency",
                False,
                "not measured: the test inference did not pass",
                {"budget_ms": policy.latency_budget_ms},
            )
        )
    report = GateReport(model_uri, results)
    log.info("gates for %s: %s", model_uri, report.summary())
    return report


# -- audit log --------------------------------------------------------------------------------

_metadata = sa.MetaData()
_audit = sa.Table(
    "hubml_registry_audit",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("model", sa.String(MAX_MODEL_NAME_LENGTH), nullable=False, index=True),
    sa.Column("alias", sa.String(MAX_ALIAS_LENGTH)),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("gates", sa.Text),  # JSON list of {name, passed, detail}
)
# Defence in depth on SQLite: the database itself refuses to rewrite history. On PostgreSQL,
# grant the service role INSERT and SELECT only.
for _op in ("UPDATE", "DELETE"):
    sa.event.listen(
        _audit,
        "after_create",
        sa.DDL(
            f"CREATE TRIGGER IF NOT EXISTS hubml_registry_audit_no_{_op.lower()} BEFORE {_op} "
            "ON hubml_registry_audit BEGIN SELECT RAISE(ABORT, 'the registry audit log is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One recorded action. ``alias`` moves ``from_version`` -> ``to_version`` (either may be None)."""

    id: int
    at: str
    action: str
    model: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    gates: list[dict[str, Any]] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_audit_url(data_dir: str | Path) -> str:
    """The SQLite audit database in the platform's data dir."""
    return f"sqlite:///{Path(data_dir).resolve() / 'registry-audit.sqlite'}"


class AuditLog:
    """Append-only record of registry actions in a SQL database (SQLite file or PostgreSQL).

    There is deliberately no update or delete method. The table is created on first use.
    """

    def __init__(self, url: str):
        self.url = url
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                url = sa.engine.make_url(self.url)
                if url.get_backend_name() == "sqlite" and url.database not in (
                    None,
                    "",
                    ":memory:",
                ):
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url)
                _metadata.create_all(engine)
                self._engine = engine
            return self._engine

    def record(
        self,
        *,
        action: str,
        model: str,
        actor: str,
        alias: str | None = None,
        from_version: str | None = None,
        to_version: str | None = None,
        reason: str = "",
        gates: GateReport | list[GateResult] | None = None,
    ) -> AuditEntry:
        """Append one entry (UTC timestamp now) and log it as a JSON line."""
        if isinstance(gates, GateReport):
            gates = gates.results
        gate_rows = (
            None
            if gates is None
            else [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in gates]
        )
        row = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "action": action,
            "model": model,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "actor": actor,
            "reason": reason or "",
            "gates": None if gate_rows is None else json.dumps(gate_rows),
        }
        with self._connect().begin() as conn:
            entry_id = conn.execute(_audit.insert().values(**row)).inserted_primary_key[0]
        entry = AuditEntry(id=entry_id, **{**row, "gates": gate_rows})
        audit_log.info("%s", json.dumps(entry.to_dict(), sort_keys=True))
        return entry

    def entries(self, model: str | None = None) -> list[AuditEntry]:
        """Entries in the order they were recorded (newest last), for one model or all."""
        query = sa.select(_audit).order_by(_audit.c.id)
        if model is not None:
            query = query.where(_audit.c.model == model)
        with self._connect().connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(**{**r, "gates": json.loads(r["gates"]) if r["gates"] else None})
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


# -- MLflow helpers ---------------------------------------------------------------------------


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _get_registered_model(client, name: str):
    """The registered model, or None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if _is_not_found(e):
            return None
        raise


def _require_registered_model(client, name: str):
    model = _get_registered_model(client, name)
    if model is None:
        raise RegistryError(
            f"registered model {name!r} does not exist; publish a version first", 404
        )
    return model


def _ensure_registered_model(client, name: str, policy: GatePolicy | None = None):
    """Create the registered model if missing, stamped with ``policy`` (default policy if None)."""
    from mlflow.exceptions import MlflowException

    model = _get_registered_model(client, name)
    if model is not None:
        return model
    try:
        return client.create_registered_model(name, tags=(policy or GatePolicy()).to_tags())
    except MlflowException as e:
        if e.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):  # created concurrently
            return client.get_registered_model(name)
        raise


def _get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if _is_not_found(e) or e.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryError(f"run {run_id!r} not found on {client.tracking_uri}", 404) from None
        raise


def _aliases(model) -> dict[str, str]:
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _describe_aliases(model) -> str:
    aliases = _aliases(model)
    if not aliases:
        return "it has no aliases yet"
    return "existing aliases: " + ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items()))


# -- the service ------------------------------------------------------------------------------


@dataclasses.dataclass
class MetricRow:
    metric: str
    candidate: float | None
    champion: float | None
    delta: float | None
    gated: bool


@dataclasses.dataclass
class Comparison:
    """Candidate vs champion metrics, one row per metric either run logged (gated metric first)."""

    model: str
    run_id: str
    against: str
    champion_version: str | None
    rows: list[MetricRow]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PublishResult:
    """What ``publish`` did: ``version`` is None when a gate failed (nothing was registered)."""

    model: str
    run_id: str
    report: GateReport
    version: str | None = None
    previous_challenger: str | None = None

    @property
    def ok(self) -> bool:
        return self.version is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "ok": self.ok,
            "version": self.version,
            "previous_challenger": self.previous_challenger,
            "gates": self.report.to_dict(),
        }


class RegistryService:
    """Publishing, approval, rollback and history over one MLflow registry and one audit log.

    Every operation takes the acting (hub-authenticated) user; groups where they decide.
    Refusals raise ``RegistryError`` with an HTTP status.
    """

    def __init__(self, client, audit: AuditLog):
        self.client = client
        self.audit = audit
        # alias moves read-then-write; serialise them within this process
        self._lock = threading.RLock()

    # reading

    def policy(self, name: str) -> GatePolicy:
        return get_policy(self.client, name)

    def describe(self, name: str) -> dict[str, Any]:
        """The model's aliases, policy and versions (newest first) for the panel."""
        name = validate_model_name(name)
        model = _require_registered_model(self.client, name)
        versions = self.client.search_model_versions(
            f"name = '{name}'", order_by=["version_number DESC"]
        )
        return {
            "name": name,
            "aliases": _aliases(model),
            "policy": GatePolicy.from_tags(model.tags).to_dict(),
            "versions": [
                {
                    "version": str(v.version),
                    "run_id": v.run_id,
                    "author": v.tags.get(AUTHOR_TAG),
                    "gates_passed": v.tags.get(GATES_PASSED_TAG) == "true",
                    "created_ms": v.creation_timestamp,
                }
                for v in versions
            ],
        }

    def resolve_alias(self, name: str, alias: str) -> str:
        """The version ``@alias`` points at; 404 listing the existing aliases if it has none."""
        name, alias = validate_model_name(name), validate_alias(alias)
        model = _require_registered_model(self.client, name)
        version = _aliases(model).get(alias)
        if version is None:
            raise RegistryError(
                f"model {name!r} has no alias @{alias}; {_describe_aliases(model)}", 404
            )
        return version

    def history(self, name: str) -> list[AuditEntry]:
        """Every recorded action on the model, oldest first."""
        return self.audit.entries(validate_model_name(name))

    def compare(self, name: str, run_id: str, against: str = CHAMPION) -> Comparison:
        """The candidate run's metrics next to those of ``@against``'s source run.

        A missing ``@champion`` is the normal first-model case (empty champion column); any
        other missing alias is a 404.
        """
        name, run_id, against = (
            validate_model_name(name),
            _validate_run_id(run_id),
            validate_alias(against),
        )
        candidate = _get_run(self.client, run_id).data.metrics
        model = _get_registered_model(self.client, name)
        policy = GatePolicy.from_tags(model.tags if model else {})
        if against == CHAMPION:
            baseline = self._champion(model)
        else:
            baseline = self._champion(model, self.resolve_alias(name, against))
        theirs = baseline.metrics if baseline else {}
        keys = sorted(set(candidate) | set(theirs), key=lambda k: (k != policy.metric, k))
        rows = []
        for key in keys:
            a, b = candidate.get(key), theirs.get(key)
            delta = a - b if a is not None and b is not None else None
            rows.append(MetricRow(key, a, b, delta, key == policy.metric))
        return Comparison(name, run_id, against, baseline.version if baseline else None, rows)

    # writing

    def set_policy(
        self,
        name: str,
        policy: GatePolicy,
        *,
        user: str,
        user_groups: Iterable[str] = (),
        reason: str = "",
    ) -> GatePolicy:
        """Change the model's policy. When the current policy names an approver group, only its
        members may change it (otherwise an author could lower the bar for themselves)."""
        name, user, reason = (
            validate_model_name(name),
            validate_user(user),
            _validate_reason(reason),
        )
        with self._lock:
            current = self.policy(name)
            group = current.approver_group
            if group and group not in set(user_groups):
                raise RegistryError(
                    f"{user} may not change the gate policy of {name!r}: only members of group "
                    f"{group!r} may",
                    403,
                )
            set_policy(self.client, name, policy, user)
            self.audit.record(
                action="set_policy",
                model=name,
                actor=user,
                reason=reason or json.dumps(policy.to_dict(), sort_keys=True),
            )
        return policy

    def publish(
        self, name: str, run_id: str, *, user: str, artifact_path: str = "model", reason: str = ""
    ) -> PublishResult:
        """Gate ``runs:/<run_id>/<artifact_path>`` and, only if every gate passes, register it as
        a new version (tagged with author and source run) and point ``@challenger`` at it.

        A failed gate registers nothing and moves no alias; the result carries the report (the
        rejection is recorded in the audit log too).
        """
        name, run_id = validate_model_name(name), _validate_run_id(run_id)
        user, reason = validate_user(user), _validate_reason(reason)
        if not isinstance(artifact_path, str) or not artifact_path.strip("/"):
            raise RegistryError(
                f"invalid artifact path {artifact_path!r}: use the name the model was logged with, e.g. 'model'"
            )
        model_uri = f"runs:/{run_id}/{artifact_path.strip('/')}"
        run = _get_run(self.client, run_id)
        model = _get_registered_model(self.client, name)
        policy = GatePolicy.from_tags(model.tags if model else {})
        report = run_gates(self.client, model_uri, run.data.metrics, self._champion(model), policy)
        if not report.passed:
            self.audit.record(
                action="publish_rejected", model=name, actor=user, reason=reason, gates=report
            )
            log.info(
                "publish of %s to %s by %s rejected: %s", model_uri, name, user, report.summary()
            )
            return PublishResult(name, run_id, report)
        _, model_id = _model_location(self.client, model_uri)
        source = (
            f"models:/{model_id}"
            if model_id
            else f"{run.info.artifact_uri.rstrip('/')}/{artifact_path.strip('/')}"
        )
        with self._lock:
            _ensure_registered_model(self.client, name, policy)
            version = self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                model_id=model_id,
                tags={
                    AUTHOR_TAG: user,
                    SOURCE_RUN_TAG: run_id,
                    GATES_PASSED_TAG: "true",
                    GATES_TAG: json.dumps(report.to_dict()),
                },
            ).version
            version = str(version)
            previous = self._move_alias(
                name, CHALLENGER, version, action="publish", actor=user, reason=reason, gates=report
            )
        log.info("published %s as %s v%s by %s", model_uri, name, version, user)
        return PublishResult(name, run_id, report, version, previous)

    def request_promotion(
        self, name: str, version: Any, *, user: str, reason: str = ""
    ) -> AuditEntry:
        """Record that ``user`` asks an approver to make ``version`` the champion."""
        name, version = validate_model_name(name), validate_version(version)
        user, reason = validate_user(user), _validate_reason(reason)
        model = _require_registered_model(self.client, name)
        self._require_gated_version(name, version)
        if _aliases(model).get(CHAMPION) == version:
            raise RegistryError(f"version {version} of {name!r} is already @champion", 409)
        return self.audit.record(
            action="request_promotion",
            model=name,
            actor=user,
            alias=CHAMPION,
            from_version=_aliases(model).get(CHAMPION),
            to_version=version,
            reason=reason,
        )

    def approve(
        self,
        name: str,
        version: Any,
        *,
        approver: str,
        approver_groups: Iterable[str] = (),
        reason: str = "",
    ) -> AuditEntry:
        """Move ``@champion`` to ``version``.

        Refused (403) for the version's author (its publisher or the user who made its run)
        unless the policy allows self-approval, and for users outside the policy's approver
        group. The metric gate is checked again against the *current* champion (409 when it
        fails), since another version may have been promoted after this one was published.
        ``@challenger`` is cleared when it pointed at the promoted version.
        """
        name, version = validate_model_name(name), validate_version(version)
        approver, reason = validate_user(approver, "approver"), _validate_reason(reason)
        groups = set(approver_groups)
        with self._lock:
            model = _require_registered_model(self.client, name)
            policy = GatePolicy.from_tags(model.tags)
            mv = self._require_gated_version(name, version)
            aliases = _aliases(model)
            if aliases.get(CHAMPION) == version:
                raise RegistryError(f"version {version} of {name!r} is already @champion", 409)
            authors = self._authors(mv)
            if approver in authors and not policy.allow_self_approval:
                who = (
                    f"a member of group {policy.approver_group!r}"
                    if policy.approver_group
                    else "another user"
                )
                raise RegistryError(
                    f"{approver} may not approve version {version} of {name!r}: they are its author; "
                    f"ask {who} to approve it",
                    403,
                )
            if policy.approver_group and policy.approver_group not in groups:
                raise RegistryError(
                    f"{approver} may not approve version {version} of {name!r}: approvers must be "
                    f"members of group {policy.approver_group!r}",
                    403,
                )
            candidate = self._run_metrics(mv.run_id)
            recheck = check_metric(policy, candidate, self._champion(model))
            if not recheck.passed:
                raise RegistryError(
                    f"version {version} of {name!r} no longer passes the metric gate: {recheck.detail}",
                    409,
                )
            moved = self._move_alias(
                name,
                CHAMPION,
                version,
                action="approve",
                actor=approver,
                reason=reason,
                gates=[recheck],
                entry=True,
            )
            if aliases.get(CHALLENGER) == version:
                self._move_alias(
                    name, CHALLENGER, None, action="approve", actor=approver, reason=reason
                )
        return moved

    def rollback(
        self, name: str, *, user: str, user_groups: Iterable[str] = (), reason: str = ""
    ) -> AuditEntry:
        """Move ``@champion`` back to the champion it replaced (repeatable, like an undo stack).

        Rolling back restores a version an approver already accepted, so the author may do it;
        when the policy names an approver group, only its members may.
        """
        name, user, reason = (
            validate_model_name(name),
            validate_user(user),
            _validate_reason(reason),
        )
        with self._lock:
            model = _require_registered_model(self.client, name)
            policy = GatePolicy.from_tags(model.tags)
            if policy.approver_group and policy.approver_group not in set(user_groups):
                raise RegistryError(
                    f"{user} may not roll back {name!r}: only members of group "
                    f"{policy.approver_group!r} may move @champion",
                    403,
                )
            current = _aliases(model).get(CHAMPION)
            if current is None:
                raise RegistryError(
                    f"model {name!r} has no @champion to roll back; {_describe_aliases(model)}", 409
                )
            target = previous_champion(self.audit.entries(name))
            if target is None:
                raise RegistryError(
                    f"nothing to roll back to: v{current} is the first @champion of {name!r} in the audit history",
                    409,
                )
            self._require_version(name, target)
            return self._move_alias(
                name, CHAMPION, target, action="rollback", actor=user, reason=reason, entry=True
            )

    # internals

    def _champion(self, model, version: str | None = None) -> Champion | None:
        """The version ``@champion`` (or ``version``) of ``model`` with its run's metrics."""
        if model is None:
            return None
        version = version or _aliases(model).get(CHAMPION)
        if version is None:
            return None
        mv = self.client.get_model_version(model.name, version)
        return Champion(str(version), self._run_metrics(mv.run_id))

    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        return dict(_get_run(self.client, run_id).data.metrics) if run_id else {}

    def _authors(self, mv) -> set[str]:
        """The publisher and the user who made the source run: none of them may approve."""
        authors = {self._publisher(mv.name, str(mv.version)), mv.tags.get(AUTHOR_TAG)}
        if mv.run_id:
            tags = _get_run(self.client, mv.run_id).data.tags
            authors |= {tags.get(t) for t in RUN_USER_TAGS}
        return {a for a in authors if a}

    def _require_version(self, name: str, version: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, version)
        except MlflowException as e:
            if not _is_not_found(e):
                raise
        versions = self.client.search_model_versions(f"name = '{name}'")
        known = ", ".join(sorted((str(v.version) for v in versions), key=int)) or "none"
        raise RegistryError(f"model {name!r} has no version {version} (versions: {known})", 404)

    def _require_gated_version(self, name: str, version: str):
        """The model version, if this service published it after its gates passed.

        The proof is the audit log's ``publish`` entry, not the version's tags: tags can be
        written by anyone with MLflow access, the audit log only by this service.
        """
        mv = self._require_version(name, version)
        if self._publisher(name, version) is None:
            raise RegistryError(
                f"version {version} of {name!r} was not published through the gates; publish its "
                "run with the publish panel first",
                409,
            )
        return mv

    def _publisher(self, name: str, version: str) -> str | None:
        """Who published ``version`` through the gates, according to the audit log."""
        for e in self.audit.entries(name):
            if e.action == "publish" and e.alias == CHALLENGER and e.to_version == version:
                return e.actor
        return None

    def _move_alias(
        self,
        name: str,
        alias: str,
        version: str | None,
        *,
        action: str,
        actor: str,
        reason: str,
        gates: GateReport | list[GateResult] | None = None,
        entry: bool = False,
    ):
        """Point ``@alias`` at ``version`` (None: remove it), then record the move.

        If the audit write fails the alias is put back: a move that is not in the history must
        not stay. Returns the previous version (or the audit entry when ``entry``).
        """
        previous = _aliases(self.client.get_registered_model(name)).get(alias)
        self._set_alias(name, alias, version)
        try:
            recorded = self.audit.record(
                action=action,
                model=name,
                actor=actor,
                alias=alias,
                from_version=previous,
                to_version=version,
                reason=reason,
                gates=gates,
            )
        except Exception:
            log.exception("audit write failed; reverting @%s of %s to %s", alias, name, previous)
            self._set_alias(name, alias, previous)
            raise
        log.info(
            "@%s of %s moved from %s to %s by %s (%s)",
            alias,
            name,
            previous,
            version,
            actor,
            action,
        )
        return recorded if entry else previous

    def _set_alias(self, name: str, alias: str, version: str | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, version)


def previous_champion(entries: Iterable[AuditEntry]) -> str | None:
    """The version a rollback would restore, by replaying ``@champion`` moves as a stack.

    Each approval pushes the champion it replaced; each rollback pops. So after v1, v2, v3 were
    approved, rollbacks restore v2 and then v1, and a third is refused.
    """
    stack: list[str] = []
    for e in entries:
        if e.alias != CHAMPION or e.action not in ("approve", "rollback"):
            continue
        if e.action == "rollback":
            if stack:
                stack.pop()
        elif e.from_version is not None:
            stack.append(e.from_version)
    return stack[-1] if stack else None
