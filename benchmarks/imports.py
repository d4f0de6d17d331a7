"""Import cost of what a notebook or the hub loads first, against `import mlflow` in the same run.

Each figure is the median wall time of a fresh interpreter importing the module, minus a fresh
interpreter doing nothing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

TARGETS = ["hubml.widgets", "hubml.widgets.tracking", "hubml.hub_config", "mlflow"]


def _time(statement: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - t0


def run(samples: int = 5) -> dict:
    empty = statistics.median(_time("pass") for _ in range(samples))
    result = {"interpreter_s": empty}
    for target in TARGETS:
        result[target] = max(
            0.0, statistics.median(_time(f"import {target}") for _ in range(samples)) - empty
        )
    return result


def report(result: dict) -> str:
    base = result["mlflow"]
    lines = [
        f"import cost (median, interpreter start-up {result['interpreter_s'] * 1000:.0f} ms subtracted):"
    ]
    for target in TARGETS:
        goal = "  (goal <= 500 ms)" if target == "hubml.widgets" else ""
        lines.append(
            f"  {target:24s} {result[target] * 1000:7.0f} ms  = {result[target] / base:.2f}x import mlflow{goal}"
        )
    return "\n".join(lines)
