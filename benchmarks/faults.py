"""Faults as an operator meets them, repeated and counted; every count of harm should be 0.

- ``gpu_handoff``: the jobs service killed with SIGKILL at each step of handing a GPU run to
  its runner (reserved, runner launched, runner named in the ledger), ``tries`` times per step;
  counted: a second holder given the device while the run lives, a device still held after
  the run is gone.
- ``mlflow_kills``: the real mlflow service's ``mlflow server`` killed alone (SIGKILL of its
  process group leader), ``tries`` times, with a client asking all along; counted: answers
  other than 200/503, kills after which it was not back within 10 s. The baseline is the same
  with ``tracking.warm_spare: false`` (a cold ``mlflow server`` start after each kill).
- ``hub_restarts``: a real hub with a user's server, a published app and job runs in flight,
  restarted ``tries`` times, SIGKILL and SIGTERM alternating, a new run-now job submitted at a
  varying moment just before each; counted: runs lost (not succeeded) or duplicated, servers
  or apps re-spawned, and restarts after which a service ran twice.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path


def gpu_handoff(tries: int) -> dict:
    from hubml.hub_config.gpus import Device, GPULedger, GPUUnavailable
    from tests.gpuhandoff import STEPS, end, kill_service_at

    out = {"tries": 0, "double_holders": 0, "left_held": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for step in STEPS:
            for i in range(tries):
                # (the run's lock file must not be the ledger's own, ``<ledger>.lock``)
                ledger_file = Path(tmp) / f"{step}{i}-ledger.json"
                runner = kill_service_at(step, ledger_file, Path(tmp) / f"{step}{i}-run.lock")
                out["tries"] += 1
                ledger = GPULedger(ledger_file, [Device(0, "NVIDIA A100")])
                if runner is not None:
                    try:
                        ledger.reserve("server:bob/", "A100", 1)
                        out["double_holders"] += 1  # bob got the run's device
                        ledger.release("server:bob/")
                    except GPUUnavailable:
                        pass
                    end(runner)
                try:
                    ledger.reserve("server:carol/", "A100", 1)
                except GPUUnavailable:
                    out["left_held"] += 1
    return out


def mlflow_kills(tries: int, warm_spare: bool = True) -> dict:
    from tests.hubprocess import start_hub
    from tests.integration.test_mlflow_faults import mlflow_server, search, spare_of
    from tests.integration.test_tracking_service import wait_for_mlflow

    out = {"tries": 0, "bad_answers": 0, "not_back_in_10s": 0, "answers": 0, "back_s": []}
    settings = {"tracking": {"enabled": True, "warm_spare": warm_spare}}
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_hub(Path(tmp) / "hub", settings)
        try:
            wait_for_mlflow(hub, hub.token)
            hub.alice = hub.user_token("alice")
            for _ in range(tries):
                deadline = time.monotonic() + 90
                while warm_spare and spare_of(hub) is None and time.monotonic() < deadline:
                    time.sleep(0.5)  # each kill meets the server as it runs, spare ready
                leader = mlflow_server(hub)
                os.kill(leader.pid, signal.SIGKILL)
                out["tries"] += 1
                killed = time.monotonic()
                seen_503 = False
                while True:
                    status = search(hub).status_code
                    out["answers"] += 1
                    if status not in (200, 503):
                        out["bad_answers"] += 1
                    seen_503 = seen_503 or status == 503
                    if status == 200 and (seen_503 or time.monotonic() - killed > 1):
                        break
                    if time.monotonic() - killed > 30:
                        break
                    time.sleep(0.1)
                back = time.monotonic() - killed
                out["back_s"].append(round(back, 1))
                if back > 10:
                    out["not_back_in_10s"] += 1
        finally:
            hub.stop()
    return out


def hub_restarts(tries: int) -> dict:
    import requests

    from tests.hubprocess import free_port, start_hub
    from tests.integration.test_apps import GREETER, Apps
    from tests.integration.test_hub_restart import (
        SETTINGS,
        alive,
        hub_processes,
        one_of_each,
        server_pid,
        wait_for,
    )
    from tests.jobsutil import JobsAPI, notebook

    out = {
        "restarts": 0,
        "runs": 0,
        "runs_lost": 0,
        "runs_duplicated": 0,
        "servers_respawned": 0,
        "apps_respawned": 0,
        "services_doubled": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data, port = Path(tmp) / "hub", free_port()
        hub = start_hub(data, SETTINGS, port=port, log_name="hub-0.log")
        try:
            JobsAPI(hub, hub.token).wait_up()
            alice = hub.user_token("alice")
            hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
            lab = server_pid(hub, "alice", "")
            r = Apps(hub, alice)(
                "POST",
                "apps",
                json={"name": "greeter", "source": "app.py", "files": {"app.py": GREETER}},
            )
            r.raise_for_status()
            app = server_pid(hub, "alice", "app-greeter")
            jobs = []
            for i in range(tries):
                api = JobsAPI(hub, alice)
                api.wait_up()
                job = api.create(
                    notebook=f"restart{i}.ipynb",
                    content=notebook("import time\ntime.sleep(3)\nprint('ok')"),
                    profile="cpu-small",
                )
                jobs.append(job["id"])
                time.sleep((i % 4) * 0.7)  # before, while and after the run starts
                how = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
                hub.proc.send_signal(how)
                hub.proc.wait(60)
                out["restarts"] += 1
                if how == signal.SIGKILL:
                    # the killed hub's services stop themselves (its proxy is replaced)
                    old = [
                        p for n, pids in hub_processes(data).items() if n != "proxy" for p in pids
                    ]
                    deadline = time.monotonic() + 10
                    while any(alive(p) for p in old) and time.monotonic() < deadline:
                        time.sleep(0.1)
                hub = start_hub(data, SETTINGS, port=port, log_name=f"hub-{i + 1}.log")
                if server_pid(hub, "alice", "") != lab:
                    out["servers_respawned"] += 1
                    lab = server_pid(hub, "alice", "")
                if server_pid(hub, "alice", "app-greeter") != app:
                    out["apps_respawned"] += 1
                    app = server_pid(hub, "alice", "app-greeter")
                try:
                    wait_for(lambda: one_of_each(data), 30, "")
                except AssertionError:
                    out["services_doubled"] += 1
            api = JobsAPI(hub, alice)
            api.wait_up()
            for job_id in jobs:
                runs = api.wait_runs(job_id, timeout=120)
                out["runs"] += len(runs)
                out["runs_duplicated"] += max(0, len(runs) - 1)
                out["runs_lost"] += int(not any(r["status"] == "succeeded" for r in runs))
            requests.get(hub.user_url("alice") + "api/status", timeout=10)
        finally:
            hub.stop_leaving_nothing("alice", ("", "app-greeter"))
    return out


def run(samples: int = 7) -> dict:
    return {
        "gpu_handoff": gpu_handoff(max(10, samples)),
        "mlflow_kills": mlflow_kills(samples),
        "mlflow_kills_cold": mlflow_kills(samples, warm_spare=False),
        "hub_restarts": hub_restarts(samples),
    }


def report(r: dict) -> str:
    import statistics

    g, m, h = r["gpu_handoff"], r["mlflow_kills"], r["hub_restarts"]
    cold = r["mlflow_kills_cold"]
    warm_median, cold_median = statistics.median(m["back_s"]), statistics.median(cold["back_s"])
    return "\n".join(
        [
            f"faults/gpu_handoff: {g['tries']} kills of the jobs service mid hand-off: "
            f"{g['double_holders']} double GPU holders, {g['left_held']} devices left held",
            f"faults/mlflow_kills: {m['tries']} kills of mlflow server, {m['answers']} requests: "
            f"{m['bad_answers']} answers other than 200/503, {m['not_back_in_10s']} not back in "
            f"10 s (back after {', '.join(map(str, m['back_s']))} s)",
            f"faults/mlflow_kills: back after a kill, median {warm_median:.1f} s with the warm "
            f"spare vs {cold_median:.1f} s cold ({cold['answers']} requests, "
            f"{cold['bad_answers']} answers other than 200/503, {cold['not_back_in_10s']} not "
            f"back in 10 s): {warm_median / cold_median:.2f}x",
            f"faults/hub_restarts: {h['restarts']} hub restarts (SIGKILL and SIGTERM), "
            f"{h['runs']} runs: {h['runs_lost']} lost, {h['runs_duplicated']} duplicated; "
            f"{h['servers_respawned']} servers and {h['apps_respawned']} apps re-spawned; "
            f"{h['services_doubled']} restarts with a service running twice",
        ]
    )
