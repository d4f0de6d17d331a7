"""The three gates a candidate passes before it is registered: (a) its metric against the
champion's, (b) a test inference on its input example checked against its signature, (c) the
p95 latency of repeated predictions.

``check_metric``, ``check_latency`` and ``output_problem`` are pure; ``probe_model`` loads and
runs the candidate (code its author chose: run it where that is acceptable); ``run_gates``
downloads the model and runs all three. numpy and mlflow are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .policy import GatePolicy
from .store import first_line, get_run, is_not_found
from .validation import RegistryError, validate_run_id

log = logging.getLogger(__name__)


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
    validate_run_id(run_id)
    if not artifact_path or ".." in artifact_path.split("/"):
        raise RegistryError(f"model URI {model_uri!r}: the artifact path must be a relative path")
    from mlflow.exceptions import MlflowException

    run = get_run(client, run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    names, deleted = [], []
    for out in outputs:
        try:
            logged = client.get_logged_model(out.model_id)
        except MlflowException as e:
            if not is_not_found(e):
                raise
            deleted.append(out.model_id)
            continue
        names.append(logged.name)
        if logged.name == artifact_path:
            return logged.artifact_location, logged.model_id
    if any(a.path.endswith("MLmodel") for a in client.list_artifacts(run_id, artifact_path)):
        return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None
    gone = f"; deleted logged model(s) of this run: {', '.join(deleted)}" if deleted else ""
    raise RegistryError(
        f"run {run_id} has no model at artifact_path {artifact_path!r} (models logged in this run: "
        f"{', '.join(names) or 'none'}{gone}); log one with mlflow.<flavor>.log_model(model, "
        "name=...)",
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
        detail = f"could not read the model's MLmodel file: {first_line(e)}"
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
                "inference", False, f"test inference on the input example failed: {first_line(e)}"
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
            detail = f"prediction {trial + 1} on the input example failed: {first_line(e)}"
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
            raise RegistryError(f"could not download {model_uri}: {first_line(e)}", 404) from e
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
