"""Everything alice has, tried by bob: her server, files, kernels, demo, tokens, runs,
experiments, models, jobs, job runs' outputs and logs, apps, shares and GPU. Every attempt is
refused, and alice's things are as they were afterwards.

One real hub with every service; each case is one request bob's own credentials can make.
"""

from __future__ import annotations

import re

import pytest
import requests
import websocket

from hubml.hub_config.gpus import Device, GPULedger, ledger_path
from tests.integration.test_apps import GREETER, Apps
from tests.integration.test_tracking_service import wait_for_mlflow
from tests.jobsutil import JobsAPI, notebook
from tests.kernelclient import ServerKernel

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-40GB"


class World:
    """Alice's things, made once for the module."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(
        tmp_path_factory.mktemp("cross"),
        {
            "tracking": {"enabled": True},
            "jobs": {"enabled": True},
            "apps": {"enabled": True},
            "auth": {"groups": {"gpu-users": ["alice", "bob"]}},
            "gpus": {"inventory": [{"index": 0, "model": A100}]},
        },
    )
    try:
        JobsAPI(hub, hub.token).wait_up()
        wait_for_mlflow(hub, hub.token)
        w = World()
        w.hub = hub
        w.alice, w.bob = hub.user_token("alice"), hub.user_token("bob")
        hub.spawn("alice", {"profile": "gpu-a100"}, token=w.alice)  # alice holds the one A100
        hub.wait_ready("alice")
        w.kernel = ServerKernel(hub, "alice", w.alice, "mine.ipynb")
        out = w.kernel.execute(
            "import mlflow\nopen('secret.txt', 'w').write('alice only')\n"
            "mlflow.set_experiment('alice-exp')\n"
            "with mlflow.start_run() as r:\n    mlflow.log_metric('acc', 0.9)\n"
            "print('RUN', r.info.run_id, 'EXP', r.info.experiment_id)\n"
            "from hubml.widgets import try_app\ndemo = try_app(lambda x: x)\nprint('INLINE', demo.hubml_url)"
        )
        w.run_id, w.experiment_id = re.search(r"RUN (\w+) EXP (\w+)", out).groups()
        w.inline = re.search(r"INLINE (\S+)", out).group(1)
        mlflow = mlflow_api(hub, w.alice)
        assert (
            mlflow("POST", "registered-models/create", {"name": "alice-model"}).status_code == 200
        )
        jobs = JobsAPI(hub, w.alice)
        w.job = jobs.create(
            notebook="j.ipynb", content=notebook("print('alice job')"), schedule="0 3 * * *"
        )
        run = jobs("POST", f"jobs/{w.job['id']}/runs").json()
        [w.job_run] = jobs.wait_runs(w.job["id"])
        assert w.job_run["id"] == run["id"] and w.job_run["status"] == "succeeded", w.job_run
        apps = Apps(hub, w.alice)
        r = apps(
            "POST",
            "apps",
            json={"name": "greet", "source": "greet.py", "files": {"app.py": GREETER}},
        )
        assert r.status_code == 201, r.text
        w.app_url = r.json()["url"]
        hub.ensure_user("carol")
        r = apps("POST", "apps/greet/shares", json={"users": ["carol"]})
        w.share_id = r.json()["shares"][0]["id"]
        yield w
    finally:
        hub.stop()


def mlflow_api(hub, token):
    def call(method, path, body=None):
        return requests.request(
            method,
            hub.at(f"/services/mlflow/api/2.0/mlflow/{path}"),
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    return call


def on_server(w, method, path, **kw):
    return requests.request(
        method,
        w.hub.user_url("alice") + path,
        headers={"Authorization": f"token {w.bob}"},
        timeout=30,
        **kw,
    )


def kernel_channels(w):
    url = (
        w.hub.user_url("alice").replace("http", "ws", 1)
        + f"api/kernels/{w.kernel.kernel_id}/channels"
    )
    try:
        websocket.create_connection(
            url, header=[f"Authorization: token {w.bob}"], timeout=10
        ).close()
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    return 101


CASES = {
    # alice's server, files and kernels
    "server status": lambda w: on_server(w, "GET", "api/status"),
    "list alice's files": lambda w: on_server(w, "GET", "api/contents"),
    "read alice's file": lambda w: on_server(w, "GET", "api/contents/secret.txt"),
    "write into alice's home": lambda w: on_server(
        w, "PUT", "api/contents/evil.txt", json={"type": "file", "format": "text", "content": "x"}
    ),
    "list alice's kernels": lambda w: on_server(w, "GET", "api/kernels"),
    "start a kernel on alice's server": lambda w: on_server(
        w, "POST", "api/kernels", json={"name": "python3"}
    ),
    "stop alice's kernel": lambda w: on_server(w, "DELETE", f"api/kernels/{w.kernel.kernel_id}"),
    "list alice's sessions": lambda w: on_server(w, "GET", "api/sessions"),
    "open a terminal on alice's server": lambda w: on_server(w, "POST", "api/terminals"),
    "attach to alice's kernel": kernel_channels,
    "ask the bridge about alice's kernel": lambda w: on_server(
        w, "GET", f"hubml/api/kernel-context?kernel_id={w.kernel.kernel_id}"
    ),
    "open alice's inline demo": lambda w: requests.get(
        w.hub.at(w.inline + "config"), headers={"Authorization": f"token {w.bob}"}, timeout=30
    ),
    # the hub: alice's server, tokens, shares
    "start alice's server": lambda w: w.hub.api("POST", "users/alice/server", token=w.bob, json={}),
    "stop alice's server": lambda w: w.hub.api("DELETE", "users/alice/server", token=w.bob),
    "mint a token for alice": lambda w: w.hub.api(
        "POST", "users/alice/tokens", token=w.bob, json={}
    ),
    "list alice's tokens": lambda w: w.hub.api("GET", "users/alice/tokens", token=w.bob),
    "share alice's app with oneself": lambda w: w.hub.api(
        "POST", "shares/alice/app-greet", token=w.bob, json={"user": "bob"}
    ),
    "make a share link of alice's app": lambda w: w.hub.api(
        "POST", "share-codes/alice/app-greet", token=w.bob, json={}
    ),
    # MLflow: alice's run, experiment and model
    "delete alice's run": lambda w: mlflow_api(w.hub, w.bob)(
        "POST", "runs/delete", {"run_id": w.run_id}
    ),
    "tag alice's run": lambda w: mlflow_api(w.hub, w.bob)(
        "POST", "runs/set-tag", {"run_id": w.run_id, "key": "x", "value": "y"}
    ),
    "log into alice's run": lambda w: mlflow_api(w.hub, w.bob)(
        "POST",
        "runs/log-metric",
        {"run_id": w.run_id, "key": "acc", "value": 0.1, "timestamp": 1, "step": 0},
    ),
    "rename alice's run": lambda w: mlflow_api(w.hub, w.bob)(
        "POST", "runs/update", {"run_id": w.run_id, "run_name": "bob's"}
    ),
    "rename alice's experiment": lambda w: mlflow_api(w.hub, w.bob)(
        "POST", "experiments/update", {"experiment_id": w.experiment_id, "new_name": "x"}
    ),
    "delete alice's experiment": lambda w: mlflow_api(w.hub, w.bob)(
        "POST", "experiments/delete", {"experiment_id": w.experiment_id}
    ),
    "take over alice's experiment": lambda w: mlflow_api(w.hub, w.bob)(
        "POST",
        "experiments/set-experiment-tag",
        {"experiment_id": w.experiment_id, "key": "hubml.owner", "value": "bob"},
    ),
    "upload into alice's run": lambda w: requests.put(
        w.hub.at(
            f"/services/mlflow/api/2.0/mlflow-artifacts/artifacts/{w.experiment_id}/{w.run_id}/artifacts/evil.txt"
        ),
        data=b"x",
        headers={"Authorization": f"Bearer {w.bob}"},
        timeout=30,
    ),
    "set @champion on alice's model": lambda w: mlflow_api(w.hub, w.bob)(
        "POST",
        "registered-models/alias",
        {"name": "alice-model", "alias": "champion", "version": "1"},
    ),
    "delete alice's model": lambda w: mlflow_api(w.hub, w.bob)(
        "DELETE", "registered-models/delete", {"name": "alice-model"}
    ),
    # jobs, runs, outputs, logs
    "read alice's job": lambda w: JobsAPI(w.hub, w.bob)("GET", f"jobs/{w.job['id']}"),
    "change alice's job": lambda w: JobsAPI(w.hub, w.bob)(
        "PATCH", f"jobs/{w.job['id']}", json={"paused": True}
    ),
    "delete alice's job": lambda w: JobsAPI(w.hub, w.bob)("DELETE", f"jobs/{w.job['id']}"),
    "run alice's job": lambda w: JobsAPI(w.hub, w.bob)("POST", f"jobs/{w.job['id']}/runs"),
    "list alice's job runs": lambda w: JobsAPI(w.hub, w.bob)("GET", f"jobs/{w.job['id']}/runs"),
    "read alice's run": lambda w: JobsAPI(w.hub, w.bob)("GET", f"runs/{w.job_run['id']}"),
    "read alice's run output": lambda w: JobsAPI(w.hub, w.bob)(
        "GET", f"runs/{w.job_run['id']}/output.ipynb"
    ),
    "read alice's run HTML": lambda w: JobsAPI(w.hub, w.bob)(
        "GET", f"runs/{w.job_run['id']}/output.html"
    ),
    "read alice's run log": lambda w: JobsAPI(w.hub, w.bob)("GET", f"runs/{w.job_run['id']}/log"),
    "cancel alice's run": lambda w: JobsAPI(w.hub, w.bob)("POST", f"runs/{w.job_run['id']}/cancel"),
    "fetch alice's run as its runner": lambda w: JobsAPI(w.hub, w.bob)(
        "GET", f"runs/{w.job_run['id']}/runner/spec"
    ),
    # apps and shares
    "read alice's app": lambda w: Apps(w.hub, w.bob)("GET", "apps/greet"),
    "delete alice's app": lambda w: Apps(w.hub, w.bob)("DELETE", "apps/greet"),
    "stop alice's app": lambda w: Apps(w.hub, w.bob)("POST", "apps/greet/stop"),
    "read alice's app log": lambda w: Apps(w.hub, w.bob)("GET", "apps/greet/logs"),
    "share alice's app": lambda w: Apps(w.hub, w.bob)(
        "POST", "apps/greet/shares", json={"users": ["bob"]}
    ),
    "revoke alice's share": lambda w: Apps(w.hub, w.bob)(
        "DELETE", f"apps/greet/shares/{w.share_id}"
    ),
    "fetch alice's app bundle": lambda w: Apps(w.hub, w.bob)("GET", "apps/greet/runtime/bundle"),
    "report as alice's app": lambda w: Apps(w.hub, w.bob)(
        "PUT", "apps/greet/runtime/report", json={"usage": {"last_user": "x"}, "log": "x"}
    ),
    "open alice's app (not shared)": lambda w: requests.get(
        w.app_url, headers={"Authorization": f"token {w.bob}"}, timeout=30
    ),
    # the GPU alice holds
    "take alice's GPU": lambda w: w.hub.spawn(
        "bob", {"profile": "gpu-a100"}, token=w.bob, wait=False
    ),
}
# refused for who bob is, never for a malformed request: 403, 404 (not his, as if absent), 409 (held)
REFUSED = {403, 404, 409}


def status_of(result) -> int:
    return result if isinstance(result, int) else result.status_code


@pytest.mark.parametrize("case", list(CASES))
def test_bob_cannot(world, case):
    result = CASES[case](world)
    status = status_of(result)
    print("STATUS", case, status, getattr(result, "text", "")[:100].replace("\n", " "))
    assert status in REFUSED, (case, status, getattr(result, "text", "")[:300])


def test_alices_things_are_as_they_were(world):
    w = world
    print(f"{len(CASES)} cross-user attempts by bob, all refused")
    assert len(CASES) >= 30
    r = requests.get(
        w.hub.user_url("alice") + "api/contents/secret.txt",
        headers={"Authorization": f"token {w.alice}"},
        timeout=30,
    )
    assert r.json()["content"] == "alice only"
    assert (
        requests.get(
            w.hub.user_url("alice") + "api/contents/evil.txt",
            headers={"Authorization": f"token {w.alice}"},
            timeout=30,
        ).status_code
        == 404
    )
    assert w.kernel.execute("print(1 + 1)").strip() == "2"  # her kernel still runs
    run = mlflow_api(w.hub, w.alice)("GET", f"runs/get?run_id={w.run_id}").json()["run"]
    assert run["info"]["lifecycle_stage"] == "active" and run["info"]["run_name"] != "bob's"
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"acc": 0.9}
    exp = mlflow_api(w.hub, w.alice)(
        "GET", f"experiments/get?experiment_id={w.experiment_id}"
    ).json()["experiment"]
    assert (
        exp["name"] == "alice-exp"
        and {t["key"]: t["value"] for t in exp["tags"]}["hubml.owner"] == "alice"
    )
    model = mlflow_api(w.hub, w.alice)("GET", "registered-models/get?name=alice-model").json()[
        "registered_model"
    ]
    assert not model.get("aliases")
    job = JobsAPI(w.hub, w.alice)("GET", f"jobs/{w.job['id']}").json()
    assert (
        job["paused"] is False
        and len(JobsAPI(w.hub, w.alice)("GET", f"jobs/{w.job['id']}/runs").json()["runs"]) == 1
    )
    app = Apps(w.hub, w.alice)("GET", "apps/greet").json()
    assert app["status"] == "running" and app["access"]["users"] == ["carol"]
    shares = w.hub.api("GET", "shares/alice/app-greet").json()["items"]
    assert [s["user"]["name"] for s in shares if s.get("user")] == ["carol"]
    holders = GPULedger(ledger_path(w.hub.data_dir), [Device(0, A100)]).holdings()
    assert [h["owner"] for h in holders.values()] == ["server:alice/"]
    bob = w.hub.api("GET", "users/bob").json()
    assert not (bob.get("servers") or {}).get("", {}).get("ready")
    w.kernel.close()
