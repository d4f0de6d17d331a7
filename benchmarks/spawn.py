"""REST spawn-to-ready: hubml's local spawner vs JupyterHub's SimpleLocalProcessSpawner.

Both hubs run at once with the same hub configuration; spawns alternate between them so that
machine noise hits both alike. Each sample is one `POST /hub/api/users/<u>/server` until the
server reports ready, then the server is stopped.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tests.hubprocess import start_hub

HERE = Path(__file__).parent


def time_spawn(hub, user: str, options: dict | None) -> float:
    t0 = time.perf_counter()
    r = hub.api("POST", f"users/{user}/server", json=options or {})
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn failed: {r.status_code} {r.text}")
    hub.wait_ready(user)
    elapsed = time.perf_counter() - t0
    hub.stop_server(user)
    return elapsed


def run(samples: int = 7) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        hubml = start_hub(Path(tmp) / "hubml", {"gpus": {"inventory": "none"}})
        base = start_hub(
            Path(tmp) / "base",
            {"gpus": {"inventory": "none"}},
            config=HERE / "baseline_spawner_config.py",
        )
        try:
            for hub in (hubml, base):
                hub.ensure_user("bench")
                time_spawn(hub, "bench", None)  # warm-up: first import of the server's packages
            ours, theirs = [], []
            for _ in range(samples):
                ours.append(time_spawn(hubml, "bench", {"profile": "cpu-small"}))
                theirs.append(time_spawn(base, "bench", None))
        finally:
            hubml.stop()
            base.stop()
    result = {
        "hubml_median_s": statistics.median(ours),
        "baseline_median_s": statistics.median(theirs),
        "hubml_samples": ours,
        "baseline_samples": theirs,
    }
    result["ratio"] = result["hubml_median_s"] / result["baseline_median_s"]
    return result


def report(result: dict) -> str:
    return (
        "spawn-to-ready (REST, cpu-small, median of {n}):\n"
        "  hubml HubmlLocalSpawner          {a:.2f} s\n"
        "  JupyterHub SimpleLocalProcessSpawner {b:.2f} s\n"
        "  ratio hubml/baseline            {r:.2f}x  (goal <= 1.2x)"
    ).format(
        n=len(result["hubml_samples"]),
        a=result["hubml_median_s"],
        b=result["baseline_median_s"],
        r=result["ratio"],
    )
