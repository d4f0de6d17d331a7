"""The fastlog benchmark through the hub: the same three ways of logging 10,000 points, but
as a person's kernel does it, through the MLflow service's front door (authentication, the route
table, the run owner's lookup, the canonical body) rather than straight to ``mlflow server``.

Goals (issue 11): per-call / hubml >= 50x, hubml / raw log_batch <= 1.2x.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.fastlog import measure


def run(samples: int = 5) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from tests.hubprocess import start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_hub(Path(tmp) / "hub", {"tracking": {"enabled": True}})
        try:
            token = hub.user_token("alice")
            wait_for_mlflow(hub, token)
            url = hub.at("/services/mlflow")
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
            mlflow.set_tracking_uri(url)
            client = MlflowClient(url)
            run_id = client.create_run(client.create_experiment("fastlog-hub-bench")).info.run_id
            return measure(client, run_id, samples)
        finally:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
            mlflow.set_tracking_uri(previous)
            hub.stop()


def report(result: dict) -> str:
    def fmt(values):
        return ", ".join(f"{v:.2f}" for v in values)

    return (
        f"logging {result['points']:,} metric points through the hub's MLflow front door, same run:\n"
        f"  mlflow.log_metric per point (once)       {result['per_call_s']:8.2f} s\n"
        f"  raw MlflowClient.log_batch, 1000-chunks  {result['raw_median_s']:8.2f} s  median of [{fmt(result['raw_s'])}]\n"
        f"  hubml track.log_metric + flush()         {result['hubml_median_s']:8.2f} s  median of [{fmt(result['hubml_s'])}]\n"
        f"    of which the loop itself               {result['hubml_loop_median_s']:8.3f} s  ({', '.join(map(str, result['hubml_requests']))} requests)\n"
        f"  per-call / hubml                         {result['per_call_over_hubml']:8.1f} x  (goal >= 50x)\n"
        f"  hubml / raw log_batch                    {result['hubml_over_raw']:8.2f} x  (goal <= 1.2x)\n"
        f"  hubml points on the server (sample 0)    {result['hubml_points_on_server']:8d}  (each step once)"
    )
