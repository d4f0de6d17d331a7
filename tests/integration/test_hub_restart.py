"""A hub restart, by SIGKILL or SIGTERM, keeps users' servers, apps and job runs: the next start
adopts them (no re-spawn), runs one copy of each service on the same ports, and an app's
server stays the app whoever starts it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_apps import GREETER, Apps
from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.integration

SETTINGS = {
    "hub": {"stop_servers_on_exit": False},  # the default, said here because tests flip it
    "tracking": {"enabled": True},
    "jobs": {"enabled": True},
    "apps": {"enabled": True},
    "features": {"enabled": True},
}
# the hub's own processes, by what they run (each must run once per data dir)
PARTS = {
    "policy": "hubml.hub_config.policy",
    "mlflow service": "hubml.extensions.tracking.service",
    "jobs service": "hubml.extensions.jobs.service",
    "runner service": "hubml.extensions.jobs.runnerd",
    "apps service": "hubml.extensions.apps.service",
    "home service": "hubml.extensions.home.service",
    "cost service": "hubml.extensions.cost.service",
    "features service": "hubml.extensions.features.service",
    "proxy": "configurable-http-proxy",
}


def hub_processes(data_dir: Path) -> dict[str, list[int]]:
    """The pids of each of the hub's parts started for ``data_dir`` (by their environment)."""
    found: dict[str, list[int]] = {name: [] for name in PARTS}
    marker = f"HUBML_DATA_DIR={data_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (entry / "environ").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        # (a job's runner is forked from the runner service: it names itself)
        if marker not in environ or comm == "hubml-runner":
            continue
        for name, what in PARTS.items():
            if what.encode() in cmdline:
                found[name].append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"{said} (after {timeout:.0f} s)")
        time.sleep(0.2)


def server_pid(hub, user: str, server: str) -> int | None:
    model = hub.api("GET", f"users/{user}").json()["servers"].get(server) or {}
    return (model.get("state") or {}).get("pid") if model.get("ready") else None


def describe(data_dir: Path) -> str:
    out = []
    for name, pids in hub_processes(data_dir).items():
        for pid in pids:
            try:
                ppid = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1]
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
            except OSError:
                continue
            out.append(f"{name}: pid {pid} ppid {ppid} {comm} {cmd.decode()}")
    return "; ".join(out)


def one_of_each(data_dir: Path) -> dict[str, list[int]]:
    procs = hub_processes(data_dir)
    return procs if all(len(pids) == 1 for pids in procs.values()) else {}


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    from tests.hubprocess import free_port, start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    data = tmp_path_factory.mktemp("restart")
    port = free_port()
    hubs = [start_hub(data, SETTINGS, port=port, log_name="hub-0.log")]
    hub = hubs[0]
    try:
        wait_for_mlflow(hub, hub.token)
        JobsAPI(hub, hub.token).wait_up()
        yield data, port, hubs
    finally:
        hubs[-1].stop_leaving_nothing("alice", ("", "app-greeter"))


def test_sigkill_and_sigterm_restarts_keep_the_server_the_app_and_the_job(started):
    from tests.hubprocess import start_hub

    data, port, hubs = started
    hub = hubs[0]
    alice = hub.user_token("alice")
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    lab_pid = server_pid(hub, "alice", "")
    apps = Apps(hub, alice)
    r = apps(
        "POST", "apps", json={"name": "greeter", "source": "app.py", "files": {"app.py": GREETER}}
    )
    assert r.status_code == 201 and r.json()["status"] == "running", r.text
    app_pid = server_pid(hub, "alice", "app-greeter")
    jobs = JobsAPI(hub, alice)
    job = jobs.create(
        notebook="slow.ipynb",
        content=notebook("import time\ntime.sleep(40)\nprint('done after restarts')"),
        profile="cpu-small",
    )
    run = jobs.wait_status(job["id"], "running")
    wait_for(
        lambda: "Executing Cell 1" in jobs("GET", f"runs/{run['id']}/log").text,
        60,
        "the job's notebook did not start",
    )
    first = wait_for(
        lambda: one_of_each(data), 30, lambda: f"not one process per part: {describe(data)}"
    )
    ports = (data / "ports.json").read_text()

    for how in (signal.SIGKILL, signal.SIGTERM):
        hub.proc.send_signal(how)
        hub.proc.wait(30)
        if how == signal.SIGKILL:
            # nobody stopped the services: each stops itself once its hub is gone
            old = [pids[0] for name, pids in first.items() if name != "proxy"]
            wait_for(
                lambda: not any(alive(pid) for pid in old),  # noqa: B023
                10,
                f"services left running by a killed hub: {hub_processes(data)}",
            )
        # the servers and the app did not stop with the hub
        assert alive(lab_pid) and alive(app_pid)
        hub = start_hub(data, SETTINGS, port=port, log_name=f"hub-{len(hubs)}.log")
        hubs.append(hub)
        assert (data / "ports.json").read_text() == ports
        # the same processes answer, adopted by the new hub without a re-spawn
        assert server_pid(hub, "alice", "") == lab_pid, how
        r = requests.get(
            hub.user_url("alice") + "api/status",
            headers={"Authorization": f"token {alice}"},
            timeout=30,
        )
        assert r.status_code == 200, (how, r.status_code, r.text[:300])
        assert server_pid(hub, "alice", "app-greeter") == app_pid, how
        page = requests.get(
            hub.at("/user/alice/app-greeter/"),
            headers={"Authorization": f"token {alice}"},
            timeout=30,
        )
        assert page.status_code == 200 and "gradio" in page.text.lower(), how
        assert Apps(hub, alice)("GET", "apps/greeter").json()["status"] == "running"
        jobs = JobsAPI(hub, alice)
        jobs.wait_up()
        [now] = jobs.runs(job["id"])
        assert now["id"] == run["id"] and now["status"] in ("running", "succeeded"), now
        # one copy of each part, none of them the killed hub's
        procs = wait_for(lambda: one_of_each(data), 30, lambda: f"two copies: {describe(data)}")
        assert all(procs[n] != first[n] for n in PARTS if n != "proxy"), (procs, first)
        first = procs

    [done] = jobs.wait_runs(job["id"], timeout=90)
    assert done["status"] == "succeeded" and done["attempt"] == 1, done
    out = jobs("GET", f"runs/{done['id']}/output.ipynb").text
    assert "done after restarts" in out

    # the app's server started at the hub, with no options, is still the app
    r = hub.api("DELETE", "users/alice/servers/app-greeter", token=alice)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: server_pid(hub, "alice", "app-greeter") is None, 30, "app did not stop")
    r = hub.api("POST", "users/alice/servers/app-greeter", token=alice, json={})
    assert r.status_code in (201, 202), r.text
    wait_for(lambda: server_pid(hub, "alice", "app-greeter"), 60, "app did not start")
    for path in ("", "api/contents", "lab"):
        r = requests.get(
            hub.at("/user/alice/app-greeter/" + path),
            headers={"Authorization": f"token {alice}"},
            timeout=30,
        )
        assert (
            (r.status_code == 200 and "gradio" in r.text.lower())
            if not path
            else (r.status_code == 404)
        ), (path, r.status_code)
    # and the apps service lists it as it is
    wait_for(
        lambda: Apps(hub, alice)("GET", "apps/greeter").json()["status"] == "running",
        15,
        "the apps service does not list the relaunched app as running",
    )


def test_a_second_hub_on_the_same_data_dir_refuses_to_start(started):
    from tests.hubprocess import free_port, start_hub

    data, _, hubs = started
    with pytest.raises(RuntimeError) as info:
        start_hub(data, SETTINGS, port=free_port(), timeout=30, log_name="hub-second.log")
    message = str(info.value)
    assert f"a hub is already running on {data} (pid {hubs[-1].proc.pid})" in message
    assert hubs[-1].proc.poll() is None
    assert hubs[-1].api("GET", "").status_code == 200
