"""The three gates a candidate passes before it is registered: (a) its metric against the
champion's, (b) a test inference on its input example checked against its signature, (c) the
p95 latency of repeated predictions.

``check_metric`` and ``check_latency`` are pure; ``run_gates`` downloads the model and runs all
three, (b) and (c) in a :class:`..gatesandbox.GateSandbox` (the candidate's code, which its
author chose, never runs in the service: it runs as the publisher's account through the runner
service, or in a child process with nothing of the service's environment). ``output_problem``
(the signature check) is the sandbox's. mlflow is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

from ..gatesandbox import GateProbe, GateSandbox, output_problem, probe_in_process
from .policy import GatePolicy
from .store import first_line, get_run, is_not_found
from .validation import RegistryError, scrub, validate_run_id

log = logging.getLogger(__name__)

__all__ = [
    "Champion",
    "GateReport",
    "GateResult",
    "check_latency",
    "check_metric",
    "inference_result",
    "output_problem",
    "percentile",
    "probe_model",
    "run_gates",
]


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


def inference_result(probe: GateProbe) -> GateResult:
    """Gate (b) from a probe: its reason as the detail, what it saw and used as numbers (``uid``
    is the account the model ran as)."""
    numbers = {
        "rows": probe.rows,
        **{
            k: probe.output[k]
            for k in ("output_type", "output_shape", "first_ms")
            if k in probe.output
        },
        **{
            k: probe.resources[k]
            for k in ("uid", "vm_peak_mb", "rss_peak_mb", "wall_s", "memory_cap_mb", "timeout_s")
            if k in probe.resources
        },
    }
    return GateResult("inference", probe.ok, scrub(probe.reason), numbers)


def probe_model(model_dir: str, trials: int) -> tuple[GateResult, list[float] | None, int | None]:
    """Gate (b) on a downloaded model directory, and the latencies for gate (c), *in this
    process*: no isolation at all (the benchmarks' baseline). Services use a
    :class:`.gatesandbox.GateSandbox` (``run_gates(sandbox=...)``)."""
    probe = probe_in_process(model_dir, trials)
    return inference_result(probe), probe.latencies_ms if probe.ok else None, probe.rows


def run_gates(
    client,
    model_uri: str,
    candidate_metrics: Mapping[str, float],
    champion: Champion | None,
    policy: GatePolicy,
    *,
    sandbox=None,
    publisher: str = "",
    profile: str | None = None,
    groups=(),
) -> GateReport:
    """Run gates (a) metric vs champion, (b) test inference, (c) p95 latency; register nothing.

    Gates (b) and (c) run the candidate in ``sandbox`` (a :class:`.gatesandbox.GateSandbox`,
    default: a child of this process) as hub user ``publisher``'s account where the sandbox
    can; ``profile`` (the candidate run's ``hubml.profile``) and ``groups`` (the publisher's)
    choose where a Kubernetes sandbox runs it. All three always report, so one publish attempt
    tells the user everything that is wrong.
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
        probe = (sandbox or GateSandbox()).probe(
            model_dir, policy.latency_trials, publisher, profile=profile, groups=groups
        )
    results.append(inference_result(probe))
    if probe.ok and probe.latencies_ms:
        results.append(check_latency(probe.latencies_ms, policy.latency_budget_ms, probe.rows))
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
