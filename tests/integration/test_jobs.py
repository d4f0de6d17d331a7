"""Notebook jobs against a real hub, the real jobs service, real papermill kernels and MLflow."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import requests

from tests.jobsutil import JobsAPI, notebook, put_notebook

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-40GB"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(
        tmp_path_factory.mktemp("jobs"),
        {
            "tracking": {"enabled": True},
            "jobs": {
                "enabled": True,
                "max_concurrent_runs": 4,
                "max_concurrent_runs_per_user": 4,
                # the test's webhook receiver; names that resolve to loopback stay refused
                "webhook_allowed_hosts": ["127.0.0.1"],
            },
            "auth": {"groups": {"gpu-users": ["alice"]}},
            "gpus": {"inventory": [{"index": 0, "model": A100}]},
        },
    )
    try:
        JobsAPI(hub, hub.token).wait_up()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def alice(hub):
    return JobsAPI(hub, hub.user_token("alice"))


@pytest.fixture(scope="module")
def bob(hub):
    return JobsAPI(hub, hub.user_token("bob"))


def output_cells(hub, api, run) -> str:
    r = api("GET", f"runs/{run['id']}/output.ipynb")
    assert r.status_code == 200, r.text
    nb = r.json()
    return "\n".join(
        "".join(o.get("text", "")) + json.dumps(o.get("data", {})) + o.get("evalue", "")
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )


def test_run_now_injects_parameters_and_tags_the_mlflow_run_then_a_schedule_fires_without_the_server(
    hub, alice
):
    token = alice.session.headers["Authorization"].split()[1]
    nb = notebook(
        "import mlflow, os\n"
        "print('MLFLOW_TOKEN', os.environ['MLFLOW_TRACKING_TOKEN'])\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('epochs', epochs)\n"
        "    mlflow.log_metric('accuracy', 0.5 + epochs / 100)\n"
        "print(f'trained {epochs} epochs at lr={lr}')",
        params="epochs = 1\nlr = 0.1",
    )
    job = alice.create(
        notebook="projects/train.ipynb",
        content=nb,
        parameters={"epochs": 7},
        profile="cpu-small",
        schedule=None,
        timeout_s=300,
        name="nightly training",
    )
    assert (
        job["owner"] == "alice"
        and job["schedule"] is None
        and job["last_run"]["status"] in ("queued", "running")
    )
    [run] = alice.wait_runs(job["id"])
    assert run["status"] == "succeeded", run
    assert run["duration_s"] > 0 and run["cost_usd"] == pytest.approx(
        run["duration_s"] / 3600 * 0.0971, rel=0.05
    )
    assert "trained 7 epochs at lr=0.1" in output_cells(hub, alice, run)
    html = alice("GET", f"runs/{run['id']}/output.html")
    assert html.status_code == 200 and "text/html" in html.headers["Content-Type"]
    assert "trained 7 epochs" in html.text
    assert "sandbox" in html.headers["Content-Security-Policy"]
    log = alice("GET", f"runs/{run['id']}/log").text
    assert "trained 7 epochs" in log
    # a succeeded run's log does not end in the kernel's shutdown interrupt, read as an error
    assert "KeyboardInterrupt" not in log, log[-2000:]

    # the notebook's plain mlflow calls made a run that says which job and run made it
    assert run["mlflow_run_id"], run
    r = requests.get(
        hub.at("/services/mlflow/api/2.0/mlflow/runs/get"),
        params={"run_id": run["mlflow_run_id"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    tags = {t["key"]: t["value"] for t in r.json()["run"]["data"]["tags"]}
    assert tags["hubml.job_id"] == job["id"] and tags["hubml.job_run_id"] == run["id"]
    assert tags["mlflow.user"] == "alice" and tags["hubml.profile"] == "cpu-small"
    assert tags["mlflow.source.name"] == "projects/train.ipynb"
    params = {p["key"]: p["value"] for p in r.json()["run"]["data"]["params"]}
    assert params["epochs"] == "7"
    # the run's own MLflow token authenticates nothing once the run is over
    run_token = re.search(r"MLFLOW_TOKEN (\S+)", output_cells(hub, alice, run)).group(1)
    deadline = time.monotonic() + 10
    while True:
        r = requests.get(
            hub.at("/services/mlflow/api/2.0/mlflow/runs/get"),
            params={"run_id": run["mlflow_run_id"]},
            headers={"Authorization": f"Bearer {run_token}"},
            timeout=30,
        )
        if r.status_code == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 403, f"a finished run's token still works: {r.status_code}"

    # the user's own server comes and goes; the schedule does not care
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    hub.stop_server("alice")
    assert not hub.api("GET", "users/alice").json()["servers"]
    r = alice(
        "PATCH", f"jobs/{job['id']}", json={"schedule": "* * * * *", "parameters": {"epochs": 3}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["schedule_description"] == "Every minute" and r.json()["next_run_at"]
    scheduled = alice.wait_status(job["id"], "running", timeout=75)
    assert scheduled["trigger"] == "schedule"
    runs = alice.wait_runs(job["id"], count=2, timeout=60)
    assert runs[1]["status"] == "succeeded", runs[1]
    assert "trained 3 epochs" in output_cells(hub, alice, runs[1])
    r = alice("PATCH", f"jobs/{job['id']}", json={"paused": True})
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["next_run_at"] is None


def test_users_only_reach_their_own_jobs_and_only_notebooks_in_their_home(hub, alice, bob):
    job = alice.create(
        notebook="secret.ipynb", content=notebook("print('alice only')"), profile="cpu-small"
    )
    [run] = alice.wait_runs(job["id"])
    for method, path in [
        ("GET", f"jobs/{job['id']}"),
        ("PATCH", f"jobs/{job['id']}"),
        ("DELETE", f"jobs/{job['id']}"),
        ("GET", f"jobs/{job['id']}/runs"),
        ("POST", f"jobs/{job['id']}/runs"),
        ("GET", f"runs/{run['id']}"),
        ("GET", f"runs/{run['id']}/output.ipynb"),
        ("GET", f"runs/{run['id']}/output.html"),
        ("GET", f"runs/{run['id']}/log"),
        ("POST", f"runs/{run['id']}/cancel"),
    ]:
        r = bob(method, path, json={} if method in ("PATCH", "POST") else None)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "of yours" in r.json()["message"]
    assert all(j["owner"] == "bob" for j in bob("GET", "jobs").json()["jobs"])
    # an admin sees everyone's
    admin = JobsAPI(hub, hub.token)
    assert admin("GET", f"jobs/{job['id']}").status_code == 200
    # no token, a bad token
    assert requests.get(alice.base + "jobs", timeout=10).status_code == 403
    assert (
        requests.get(
            alice.base + "jobs", headers={"Authorization": "token nope"}, timeout=10
        ).status_code
        == 403
    )

    for path in [
        "../alice/secret.ipynb",
        "/srv/homes/alice/secret.ipynb",
        "/etc/passwd",
        "a/../../x.ipynb",
    ]:
        r = bob("POST", "jobs", json={"notebook": path, "profile": "cpu-small"})
        assert r.status_code == 400, (path, r.text)
        assert "must be a path inside your home" in r.json()["message"], r.text


def test_without_content_the_notebook_is_read_from_the_owners_running_server(hub, bob):
    """The service never opens a home: a REST client that sends only a path gets the notebook
    its owner's server has saved, or a 409 saying the server is not running."""
    token = bob.session.headers["Authorization"].split()[1]
    r = bob("POST", "jobs", json={"notebook": "mine.ipynb", "profile": "cpu-small"})
    assert r.status_code == 409 and "bob's server is not running" in r.json()["message"], r.text
    hub.spawn("bob", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("bob")
    try:
        put_notebook(hub, "bob", token, "mine.ipynb", notebook("print('from bob server')"))
        job = bob.create(notebook="mine.ipynb", profile="cpu-small")
        [run] = bob.wait_runs(job["id"])
        assert run["status"] == "succeeded" and "from bob server" in output_cells(hub, bob, run), (
            run
        )
        r = bob("POST", "jobs", json={"notebook": "missing.ipynb", "profile": "cpu-small"})
        assert (
            r.status_code == 404
            and "'missing.ipynb' does not exist in bob's home" in r.json()["message"]
        )
        info = bob("GET", "notebook", params={"path": "mine.ipynb"}).json()
        assert info["notebook"] == "mine.ipynb" and info["parameters"] == {}
    finally:
        hub.stop_server("bob")


def test_bad_definitions_are_refused_with_a_clear_message_and_create_nothing(hub, alice):
    nb = notebook("print(n)", params="n = 1\nname = 'x'\nrate: float = 0.5")
    before = len(alice("GET", "jobs").json()["jobs"])
    cases = [
        ({"schedule": "61 * * * *"}, 400, "not a valid cron expression"),
        ({"schedule": "every day"}, 400, "5-field cron"),
        ({"schedule": "0 2 * * *", "timezone": "Mars/Olympus"}, 400, "unknown timezone"),
        ({"profile": "gpu-giant"}, 400, "Valid profiles: cpu-small"),
        (
            {"parameters": {"epochs": 3}},
            400,
            "unknown parameter(s) epochs; the notebook declares n (int), name (str), rate (float)",
        ),
        ({"parameters": {"n": "three"}}, 400, "n must be int"),
        ({"parameters": {"rate": True}}, 400, "rate must be float"),
        ({"notebook": "notes.txt"}, 400, "is not a .ipynb file"),
        ({"content": "not json"}, 400, "not valid notebook JSON"),
        ({"content": {"cells": 3}}, 400, "not an nbformat 4 notebook"),
        ({"content": 42}, 400, "content: the notebook"),
        ({"parameters": {"name": "x" * 70_000}}, 413, "at most 65536"),
        ({"timeout_s": 0}, 400, "timeout_s: must be a whole number from 1"),
        ({"max_retries": -1}, 400, "max_retries"),
        ({"concurrency": "parallel"}, 400, "concurrency: 'skip'"),
        ({"webhook_url": "file:///etc/passwd"}, 400, "webhook_url"),
        ({"color": "red"}, 400, "unknown field(s) color"),
        ({"keep_runs": 0}, 400, "keep_runs: must be a whole number from 1 to 1000000"),
        ({"keep_days": "forever"}, 400, "keep_days: must be a whole number from 1 to 36500"),
    ]
    for change, status, message in cases:
        body = {"notebook": "params.ipynb", "content": nb, "profile": "cpu-small", **change}
        r = alice("POST", "jobs", json=body)
        assert r.status_code == status, (change, r.status_code, r.text)
        assert message in r.json()["message"], (change, r.json())
    # retention: the service's defaults unless the job says otherwise, and patchable
    body = {
        "notebook": "params.ipynb",
        "content": nb,
        "profile": "cpu-small",
        "schedule": "0 2 * * *",
    }
    made = alice.create(**body, keep_runs=5)
    assert (made["keep_runs"], made["keep_days"]) == (5, 90)
    r = alice("PATCH", f"jobs/{made['id']}", json={"keep_runs": None, "keep_days": 7})
    assert (r.json()["keep_runs"], r.json()["keep_days"]) == (200, 7), r.text
    assert alice("DELETE", f"jobs/{made['id']}").status_code == 204
    r = alice("POST", "jobs", data="{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    assert len(alice("GET", "jobs").json()["jobs"]) == before
    # a profile of a group bob is not in
    bob = JobsAPI(hub, hub.user_token("bob"))
    r = bob(
        "POST",
        "jobs",
        json={"notebook": "gpu.ipynb", "content": notebook("print(1)"), "profile": "gpu-a100"},
    )
    assert r.status_code == 403 and "is limited to members of gpu-users" in r.json()["message"]
    # the cron preview the widget shows
    r = alice("GET", "cron", params={"schedule": "0 2 * * 1-5", "timezone": "Europe/Berlin"})
    assert (
        r.json()["description"] == "Every weekday at 02:00 (Europe/Berlin)"
        and len(r.json()["next_runs"]) == 3
    )


def test_webhooks_go_to_public_hosts_only(hub, alice):
    """A webhook is a request from inside the platform's network: loopback, private and
    link-local addresses (cloud metadata) are refused, by address and by any name that leads
    there, with a message saying what is allowed."""
    nb = notebook("1")
    for url, why in [
        ("http://127.0.0.2:9/hook", "127.0.0.2 is a loopback address"),
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8000/", "::1 is a loopback address"),
        ("http://localhost:8000/hub/api/users", "localhost resolves to"),
        ("http://user:secret@example.org/", "must not carry a user name or password"),
        ("ftp://example.org/", "is not an http:// or https:// URL"),
    ]:
        r = alice(
            "POST",
            "jobs",
            json={
                "notebook": "n.ipynb",
                "content": nb,
                "webhook_url": url,
                "schedule": "0 2 * * *",
            },
        )
        assert r.status_code == 400, (url, r.text)
        message = r.json()["message"]
        assert message.startswith("webhook_url: ") and why in message, (url, message)
        if "resolves" in why or "address" in why:
            assert "webhooks go to public http(s) hosts only" in message
    # and a job cannot be changed into one that calls in
    job = alice.create(notebook="n.ipynb", content=nb, schedule="0 2 * * *")
    r = alice("PATCH", f"jobs/{job['id']}", json={"webhook_url": "http://169.254.169.254/"})
    assert r.status_code == 400 and "link-local" in r.json()["message"]
    alice("DELETE", f"jobs/{job['id']}")


def test_timeout_retry_and_a_failing_cell(hub, alice):
    slow = notebook(
        "print('started', flush=True)", "import time\ntime.sleep(120)", "print('never')"
    )
    # the run works in its owner's home, as its owner: the marker stays there between attempts
    flaky = notebook(
        "import os\nfirst = not os.path.exists('flaky.marker')\nopen('flaky.marker', 'w').close()\n"
        "if first:\n    raise RuntimeError('first attempt fails')\nprint('second attempt ok')",
    )
    broken = notebook("x = 1", "print('before the error')", "1 / 0", "print('not reached')")
    slow = alice.create(notebook="slow.ipynb", content=slow, profile="cpu-small", timeout_s=4)
    flaky = alice.create(
        notebook="flaky.ipynb", content=flaky, profile="cpu-small", max_retries=2, retry_delay_s=0.5
    )
    broken = alice.create(notebook="broken.ipynb", content=broken, profile="cpu-small")

    [run] = alice.wait_runs(slow["id"], timeout=60)
    assert run["status"] == "timed_out" and "timed out after 4 s" in run["error"], run
    assert "started" in output_cells(hub, alice, run)  # the partial output is kept
    assert "never" not in output_cells(hub, alice, run)

    runs = alice.wait_runs(flaky["id"], count=2, timeout=60)
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "succeeded")], runs
    assert "RuntimeError: first attempt fails" in runs[0]["error"] and runs[1]["trigger"] == "retry"

    [run] = alice.wait_runs(broken["id"])
    assert run["status"] == "failed"
    assert run["error"] == "cell 2 (In [3]) raised ZeroDivisionError: division by zero", run[
        "error"
    ]
    out = output_cells(hub, alice, run)
    assert "before the error" in out and "not reached" not in out
    assert "ZeroDivisionError" in alice("GET", f"runs/{run['id']}/output.html").text


def test_two_gpu_jobs_on_one_device_run_one_after_the_other(hub, alice):
    code = (
        "import os, time, json\nstart = time.time()\ntime.sleep(3)\n"
        "print(json.dumps({'cuda': os.environ['CUDA_VISIBLE_DEVICES'], 'start': start, 'end': time.time()}))"
    )
    jobs = [
        alice.create(notebook="gpu.ipynb", content=notebook(code), profile="gpu-a100")
        for _ in range(2)
    ]
    seen = []
    for job in jobs:
        [run] = alice.wait_runs(job["id"], timeout=90)
        assert run["status"] == "succeeded" and run["gpu_devices"] == "0", run
        line = next(x for x in output_cells(hub, alice, run).splitlines() if '"cuda"' in x)
        seen.append(json.loads(line[line.index("{") :]))
    assert [s["cuda"] for s in seen] == ["0", "0"]
    first, second = sorted(seen, key=lambda s: s["start"])
    assert second["start"] >= first["end"], "two holders of GPU 0 at once"


def test_cancel_a_running_job(hub, alice):
    long = notebook("print('go', flush=True)", "import time\ntime.sleep(300)")
    job = alice.create(notebook="long.ipynb", content=long, profile="cpu-small")
    run = alice.wait_status(job["id"], "running")
    # "Run now" while it runs (concurrency: skip): refused saying why, nothing recorded
    r = alice("POST", f"jobs/{job['id']}/runs")
    assert r.status_code == 409 and r.json()["run_id"] == run["id"], r.text
    assert "concurrency: skip" in r.json()["message"] and "cancel it" in r.json()["message"]
    assert len(alice("GET", f"jobs/{job['id']}/runs").json()["runs"]) == 1
    time.sleep(2)
    r = alice("POST", f"runs/{run['id']}/cancel")
    assert r.status_code == 202, r.text
    [run] = alice.wait_runs(job["id"], timeout=40)
    assert run["status"] == "cancelled", run
    assert alice("POST", f"runs/{run['id']}/cancel").status_code == 409


def service_pid(api) -> int:
    r = requests.get(api.base.replace("/api/", "/hubml/health"), timeout=10)
    return r.json()["pid"]


def wait_restarted(api, old_pid, timeout=90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = service_pid(api)
            if pid != old_pid:
                return pid
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError("the hub did not restart the jobs service")


def test_kill_9_during_a_run_and_at_a_due_slot_loses_and_duplicates_nothing(hub, alice):
    steady = notebook("import time\ntime.sleep(6)\nprint('finished')")
    job = alice.create(notebook="steady.ipynb", content=steady, profile="cpu-small")
    run = alice.wait_status(job["id"], "running")
    deadline = time.monotonic() + 30
    while (
        "Executing Cell 1" not in alice("GET", f"runs/{run['id']}/log").text
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    pid = service_pid(alice)
    os.kill(pid, signal.SIGKILL)
    wait_restarted(alice, pid)
    [run] = alice.wait_runs(job["id"], timeout=90)
    # the runner outlived the service and was re-attached: one run, finished, not re-run
    assert run["status"] == "succeeded" and run["attempt"] == 1, (
        run["error"],
        alice("GET", f"runs/{run['id']}/log").text,
    )
    assert "finished" in output_cells(hub, alice, run)
    # charged for what it ran (the runner's own measure: ~6 s and a kernel start), not for
    # the time the service was down
    assert run["duration_s"] < 16, run

    # a schedule due while the service is dead: exactly one run for that slot afterwards
    sched = alice.create(
        notebook="tick.ipynb",
        content=notebook("print('tick')"),
        profile="cpu-small",
        schedule="* * * * *",
    )
    due = time.mktime(time.strptime(sched["next_run_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    time.sleep(max(0.0, due - time.time() - 0.3))
    pid = service_pid(alice)
    os.kill(pid, signal.SIGKILL)  # just before (or as) the slot comes due
    wait_restarted(alice, pid)
    alice("PATCH", f"jobs/{sched['id']}", json={"paused": True})
    runs = alice.wait_runs(sched["id"], count=1, timeout=60)
    slots = [r["scheduled_for"] for r in runs]
    assert len(set(slots)) == len(slots), f"a slot ran twice: {runs}"
    assert sched["next_run_at"][:16] in [s[:16] for s in slots], f"the due slot was lost: {runs}"
    assert all(r["status"] == "succeeded" for r in runs), runs


def test_webhook_hears_the_outcome_and_track_latest_runs_the_saved_notebook(hub, alice):
    import http.server
    import threading

    heard = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            heard.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = alice.session.headers["Authorization"].split()[1]
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    try:
        put_notebook(hub, "alice", token, "evolving.ipynb", notebook("print('version one')"))
        snap = alice.create(
            notebook="evolving.ipynb",
            profile="cpu-small",
            concurrency="queue",
            webhook_url=f"http://127.0.0.1:{server.server_port}/hook",
            notify_on=["success", "failure"],
        )
        latest = alice.create(
            notebook="evolving.ipynb", profile="cpu-small", track_latest=True, concurrency="queue"
        )
        alice.wait_runs(snap["id"])
        alice.wait_runs(latest["id"])
        put_notebook(hub, "alice", token, "evolving.ipynb", notebook("print('version two')"))
        assert alice("POST", f"jobs/{snap['id']}/runs").status_code == 201
        assert alice("POST", f"jobs/{latest['id']}/runs").status_code == 201
        snap_runs = alice.wait_runs(snap["id"], count=2)
        latest_runs = alice.wait_runs(latest["id"], count=2)
        assert "version one" in output_cells(
            hub, alice, snap_runs[1]
        )  # the snapshot taken at creation
        assert "version two" in output_cells(
            hub, alice, latest_runs[1]
        )  # the notebook as saved now
        deadline = time.monotonic() + 10
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [h["event"] for h in heard] == ["run.succeeded", "run.succeeded"]
        assert {h["run"]["id"] for h in heard} == {r["id"] for r in snap_runs}
        assert heard[0]["job"]["id"] == snap["id"]
        assert heard[0]["run"]["links"]["html"].startswith(
            hub.service_url("jobs")
        )  # absolute, on its origin

        # with the server stopped, the latest version cannot be read: the run says so
        hub.stop_server("alice")
        assert alice("POST", f"jobs/{latest['id']}/runs").status_code == 201
        runs = alice.wait_runs(latest["id"], count=3)
        assert runs[2]["status"] == "failed", runs[2]
        assert (
            "alice's server is not running" in runs[2]["error"]
            and "Turn track_latest off" in runs[2]["error"]
        )
    finally:
        server.shutdown()
