"""Logging 10,000 metric points from a loop (issue 3): hubml's ``track`` API against one
``mlflow.log_metric`` call per point and against raw ``MlflowClient().log_batch`` in chunks of
1000 (MLflow's per-request cap), on the same 1-worker server and the same run.

hubml is timed from its first log call until ``flush()`` returns, i.e. all points are on the
server. Raw log_batch is timed over the requests only (its Metric lists are built beforehand),
so the comparison is strict. Per-call logging (about 12 ms a call, FACTS.md) runs once; the
other two run ``samples`` times, interleaved, and their medians are compared.
Goals: per-call / hubml >= 20x, hubml / raw log_batch <= 1.5x.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tests.mlflowserver import start_mlflow

POINTS = 10_000
CHUNK = 1000


def _raw(client, run_id: str, key: str) -> float:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    chunks = [
        [Metric(key, 1.0 / (i + 1), now, i) for i in range(start, min(start + CHUNK, POINTS))]
        for start in range(0, POINTS, CHUNK)
    ]
    t0 = time.perf_counter()
    for chunk in chunks:
        client.log_batch(run_id, metrics=chunk)
    return time.perf_counter() - t0


def _hubml(key: str) -> tuple[float, float, int]:
    """(until flush returned, until the loop finished, requests sent) through hubml's track API."""
    from hubml.extensions.tracking import track

    before = track.status()["requests"]  # the run's logger lives on across samples
    t0 = time.perf_counter()
    for i in range(POINTS):
        track.log_metric(key, 1.0 / (i + 1), step=i)
    loop = time.perf_counter() - t0
    track.flush()
    total = time.perf_counter() - t0
    return total, loop, track.status()["requests"] - before


def _per_call(key: str) -> float:
    import mlflow

    t0 = time.perf_counter()
    for i in range(POINTS):
        mlflow.log_metric(key, 1.0 / (i + 1), step=i)
    return time.perf_counter() - t0


def measure(client, run_id: str, samples: int) -> dict:
    """The three ways, on ``run_id`` (the active MLflow run), ``samples`` times interleaved."""
    import mlflow

    from hubml.extensions.tracking import track

    result: dict = {
        "points": POINTS,
        "raw_s": [],
        "hubml_s": [],
        "hubml_loop_s": [],
        "hubml_requests": [],
    }
    with mlflow.start_run(run_id=run_id):
        client.log_batch(run_id, metrics=[])  # warm the connection and the server
        for sample in range(samples):
            # a new key per sample: every point is a new row, as in training
            for name in ("raw", "hubml") if sample % 2 == 0 else ("hubml", "raw"):
                if name == "raw":
                    result["raw_s"].append(_raw(client, run_id, f"raw_{sample}"))
                else:
                    total, loop, requests = _hubml(f"hubml_{sample}")
                    result["hubml_s"].append(total)
                    result["hubml_loop_s"].append(loop)
                    result["hubml_requests"].append(requests)
        result["per_call_s"] = _per_call("per_call")
        track.flush()
        # every hubml point arrived, once
        history = client.get_metric_history(run_id, "hubml_0")
        result["hubml_points_on_server"] = len(history)
        assert sorted(m.step for m in history) == list(range(POINTS)), (
            "hubml lost or doubled points"
        )
    result["raw_median_s"] = statistics.median(result["raw_s"])
    result["hubml_median_s"] = statistics.median(result["hubml_s"])
    result["hubml_loop_median_s"] = statistics.median(result["hubml_loop_s"])
    result["per_call_over_hubml"] = result["per_call_s"] / result["hubml_median_s"]
    result["hubml_over_raw"] = result["hubml_median_s"] / result["raw_median_s"]
    return result


def run(samples: int = 5) -> dict:
    import mlflow
    from mlflow import MlflowClient

    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_mlflow(Path(tmp) / "mlflow")
        try:
            mlflow.set_tracking_uri(server.url)
            client = MlflowClient(server.url)
            run_id = client.create_run(client.create_experiment("fastlog-bench")).info.run_id
            return measure(client, run_id, samples)
        finally:
            mlflow.set_tracking_uri(previous)
            server.stop()


def report(result: dict) -> str:
    def fmt(values):
        return ", ".join(f"{v:.2f}" for v in values)

    return (
        f"logging {result['points']:,} metric points to a 1-worker MLflow server, same run:\n"
        f"  mlflow.log_metric per point (once)       {result['per_call_s']:8.2f} s\n"
        f"  raw MlflowClient.log_batch, 1000-chunks  {result['raw_median_s']:8.2f} s  median of [{fmt(result['raw_s'])}]\n"
        f"  hubml track.log_metric + flush()         {result['hubml_median_s']:8.2f} s  median of [{fmt(result['hubml_s'])}]\n"
        f"    of which the loop itself               {result['hubml_loop_median_s']:8.3f} s  ({', '.join(map(str, result['hubml_requests']))} requests)\n"
        f"  per-call / hubml                         {result['per_call_over_hubml']:8.1f} x  (goal >= 20x)\n"
        f"  hubml / raw log_batch                    {result['hubml_over_raw']:8.2f} x  (goal <= 1.5x)\n"
        f"  hubml points on the server (sample 0)    {result['hubml_points_on_server']:8d}  (each step once)"
    )
