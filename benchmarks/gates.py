"""Publishing through the registry's gates: the candidate run out of process (as the publisher's
account, through the runner service) against the same gates run in the publishing process.

One real ``mlflow server`` (1 worker, SQLite), one run with an iris ``LogisticRegression``
logged with a 5-row input example. Two ``RegistryService`` objects on the same server: one
with the service's sandbox (as root: ``GateSandbox(runner_socket=...)`` on a real runner
service, whose warm process forks a probe per publish; not root: a fresh child of this
process), one with :class:`hubml.extensions.tracking.gatesandbox.InProcessGates` (the model
loaded and called here, as before the sandbox). Each sample is one ``publish`` (download,
three gates, registration, audit) on each, alternating, after one warm-up publish each (the
in-process side pays mlflow's first-load caches there; the sandboxed side waits for the warm
process). Goal: sandboxed ≤ 2× in-process.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from tests.gaterunutil import start_runners
from tests.mlflowserver import start_mlflow

PUBLISHER = "bench"


def _log_run(url: str) -> str:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment("bench-gates")
    model = LogisticRegression(max_iter=1000).fit(X, y)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        with mlflow.start_run() as run:
            mlflow.log_metric("accuracy", float(model.score(X, y)))
            mlflow.sklearn.log_model(model, name="model", input_example=X.head(5))
    return run.info.run_id


def _publish(registry, name: str, run_id: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = registry.publish(name, run_id, user=PUBLISHER)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise RuntimeError(
            f"{name}: the gates refused the benchmark model: {result.report.summary()}"
        )
    (inference,) = [g for g in result.report.results if g.name == "inference"]
    return elapsed, inference.numbers


def run(samples: int = 5) -> dict:
    from mlflow import MlflowClient

    from hubml.extensions.tracking.gatesandbox import GateSandbox, InProcessGates
    from hubml.extensions.tracking.registry import AuditLog, RegistryService

    tmp = Path(tempfile.mkdtemp(prefix="hubml-bench-gates-"))
    root = os.geteuid() == 0
    server = start_mlflow(tmp / "mlflow")
    runners = start_runners(tmp / "runners") if root else None
    try:
        run_id = _log_run(server.url)
        client = MlflowClient(server.url)
        sandbox = GateSandbox(runner_socket=str(runners.socket)) if runners else GateSandbox()
        sides = {
            "sandboxed": RegistryService(
                client, AuditLog(f"sqlite:///{tmp / 'a.sqlite'}"), gates=sandbox
            ),
            "in_process": RegistryService(
                client, AuditLog(f"sqlite:///{tmp / 'b.sqlite'}"), gates=InProcessGates()
            ),
        }
        times: dict[str, list[float]] = {side: [] for side in sides}
        probe_s: dict[str, list[float]] = {side: [] for side in sides}
        warmup = {side: _publish(reg, f"bench-{side}", run_id)[0] for side, reg in sides.items()}
        for _ in range(samples):
            for side, registry in sides.items():
                elapsed, numbers = _publish(registry, f"bench-{side}", run_id)
                times[side].append(elapsed)
                probe_s[side].append(numbers.get("wall_s") or 0.0)
    finally:
        if runners is not None:
            runners.stop()
        server.stop()
    sandboxed, in_process = (statistics.median(times[s]) for s in ("sandboxed", "in_process"))
    return {
        "mode": "runner service, as the publisher's account" if root else "child process",
        "samples": samples,
        "warmup_s": warmup,
        "times_s": times,
        "probe_wall_s": probe_s,
        "sandboxed_median_s": sandboxed,
        "in_process_median_s": in_process,
        "ratio": sandboxed / in_process,
    }


def report(r: dict) -> str:
    probe = statistics.median(r["probe_wall_s"]["sandboxed"])
    return (
        f"gates ({r['mode']}, {r['samples']} publishes each): sandboxed median "
        f"{r['sandboxed_median_s']:.3f} s (its probe {probe:.3f} s), in-process median "
        f"{r['in_process_median_s']:.3f} s, ratio {r['ratio']:.2f}x (goal <= 2x); "
        f"first publish {r['warmup_s']['sandboxed']:.2f} s / {r['warmup_s']['in_process']:.2f} s"
    )
