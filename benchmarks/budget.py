"""What the budget check adds to a spawn, against the same spawn without budgets, in one run.

Two hubs with the same configuration, one with budgets (the spawner asks the cost service
before it reserves anything), one without the cost service; spawns alternate so machine noise
hits both alike. Measured per spawn, from the hub's own log: the time from the spawn's start
(JupyterHub creating the server's OAuth client) to the spawner's first step after the profile
is resolved and checked ("Preparing <profile>"); that span is where the check sits, so the
difference of the medians is what the check adds. Spawn-to-ready is printed too: it is seconds
long and its noise (JupyterHub's back-off while it waits for the server) is far larger than the
check. And the check alone (`POST /services/cost/api/check`), as a client times it.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.spawn import time_spawn
from tests.hubprocess import start_hub

CHECKS = 100


STAMP = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d{3})")


def _when(line: str) -> float | None:
    m = STAMP.match(line)
    if not m:
        return None
    return dt.datetime.strptime(m.group(1).replace(",", "."), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def spawn_step(hub, user: str, options: dict, offset: int) -> tuple[float, float, int]:
    """(spawn-to-ready s, start-to-"Preparing" s, new log offset) of one spawn."""
    total = time_spawn(hub, user, options)
    text = hub.log()
    lines = text[offset:].splitlines()
    begun = next(
        _when(line) for line in lines if f"Creating oauth client jupyterhub-user-{user}" in line
    )
    prepared = next(_when(line) for line in lines if f"{user}: Preparing " in line)
    return total, prepared - begun, len(text)


def time_checks(hub, n: int) -> list[float]:
    url = hub.service_url("cost") + "api/check"
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub.token}"
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = session.post(
            url, json={"user": "bench", "profile": "cpu-small", "groups": []}, timeout=30
        )
        times.append(time.perf_counter() - t0)
        if r.status_code != 200 or not r.json()["allowed"]:
            raise RuntimeError(f"budget check failed: {r.status_code} {r.text}")
    return times


def run(samples: int = 7) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        budgets = start_hub(
            Path(tmp) / "budgets",
            {"gpus": {"inventory": "none"}, "cost": {"budgets": {"users": {"bench": 1000}}}},
        )
        plain = start_hub(
            Path(tmp) / "plain", {"gpus": {"inventory": "none"}, "cost": {"enabled": False}}
        )
        try:
            for hub in (budgets, plain):
                hub.ensure_user("bench")
                time_spawn(hub, "bench", None)  # warm-up
            deadline = time.monotonic() + 60
            while True:  # the cost service answers
                try:
                    time_checks(budgets, 1)
                    break
                except (requests.RequestException, RuntimeError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            checked, unchecked, step_checked, step_unchecked = [], [], [], []
            offsets = {id(budgets): len(budgets.log()), id(plain): len(plain.log())}
            for _ in range(samples):
                for hub, totals, steps in (
                    (budgets, checked, step_checked),
                    (plain, unchecked, step_unchecked),
                ):
                    total, step, offsets[id(hub)] = spawn_step(
                        hub, "bench", {"profile": "cpu-small"}, offsets[id(hub)]
                    )
                    totals.append(total)
                    steps.append(step)
            checks = time_checks(budgets, CHECKS)
        finally:
            budgets.stop()
            plain.stop()
    result = {
        "step_with_ms": statistics.median(step_checked) * 1000,
        "step_without_ms": statistics.median(step_unchecked) * 1000,
        "with_budgets_median_s": statistics.median(checked),
        "without_median_s": statistics.median(unchecked),
        "check_median_ms": statistics.median(checks) * 1000,
        "check_p95_ms": sorted(checks)[int(len(checks) * 0.95) - 1] * 1000,
        "with_budgets_samples": checked,
        "without_samples": unchecked,
    }
    result["added_ms"] = result["step_with_ms"] - result["step_without_ms"]
    result["ratio"] = result["with_budgets_median_s"] / result["without_median_s"]
    return result


def report(result: dict) -> str:
    return (
        "budget check on a spawn (REST, cpu-small, median of {n}):\n"
        "  spawn start -> profile checked, with budgets     {sw:.1f} ms\n"
        "  spawn start -> profile checked, without (base)   {so:.1f} ms\n"
        "  added by the check                               {d:+.1f} ms  (goal <= 20 ms)\n"
        "  spawn-to-ready with / without budgets            {a:.2f} s / {b:.2f} s ({r:.2f}x)\n"
        "  the check alone, from a client                   {c:.1f} ms median, {p:.1f} ms p95 of {k}"
    ).format(
        n=len(result["with_budgets_samples"]),
        sw=result["step_with_ms"],
        so=result["step_without_ms"],
        d=result["added_ms"],
        a=result["with_budgets_median_s"],
        b=result["without_median_s"],
        r=result["ratio"],
        c=result["check_median_ms"],
        p=result["check_p95_ms"],
        k=CHECKS,
    )
