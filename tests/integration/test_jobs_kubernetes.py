"""The jobs service's kubernetes executor: a real hub and jobs service submitting ``batch/v1``
Jobs with the real ``kubernetes_asyncio`` client to a stand-in API server (tests/kubefake.py,
there is no cluster here), whose "pods" run the real runner, papermill and kernels."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from tests.jobsutil import JobsAPI, notebook, put_notebook

pytestmark = pytest.mark.integration

NAMESPACE = "hubml-jobs-test"


@pytest.fixture(scope="module")
def cluster_and_hub(tmp_path_factory):
    from tests.hubprocess import free_port, start_hub
    from tests.kubefake import FakeCluster

    tmp = tmp_path_factory.mktemp("jobs-k8s")
    port = free_port()
    # the users' volumes are the cluster's, not the hub's: the hub never sees them
    cluster = FakeCluster(homes=tmp / "cluster" / "volumes", workdir=tmp / "cluster").start()
    hub = None
    try:
        hub = start_hub(
            tmp / "hub",
            {
                "jobs": {
                    "enabled": True,
                    "executor": "kubernetes",
                    "max_concurrent_runs": 4,
                    "max_concurrent_runs_per_user": 4,
                },
                "auth": {"groups": {"gpu-users": ["alice"]}},
                # the stand-in pods are on this host: they reach the hub's proxy on loopback
                "kubernetes": {"namespace": NAMESPACE, "proxy_url": f"http://127.0.0.1:{port}"},
                "gpus": {"inventory": "none"},  # no GPU on this host: the cluster has them
            },
            extra_env={"KUBECONFIG": str(cluster.kubeconfig)},
            port=port,
        )
        JobsAPI(hub, hub.token).wait_up()
        yield cluster, hub
    finally:
        if hub is not None:
            hub.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(cluster_and_hub):
    return cluster_and_hub[0]


@pytest.fixture(scope="module")
def hub(cluster_and_hub):
    return cluster_and_hub[1]


@pytest.fixture(scope="module")
def alice(hub):
    return JobsAPI(hub, hub.user_token("alice"))


def volume(cluster, user):
    """The user's home volume, as the cluster's pods (their server's, their jobs') mount it."""
    return cluster.homes / user


def outputs(api, run) -> str:
    r = api("GET", f"runs/{run['id']}/output.ipynb")
    assert r.status_code == 200, r.text
    return "\n".join(
        "".join(o.get("text", "")) + json.dumps(o.get("data", {})) + o.get("evalue", "")
        for c in r.json()["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )


def submitted(cluster, run_id) -> dict:
    return next(m for m in cluster.created if m["metadata"]["labels"]["hubml.io/run-id"] == run_id)


def wait_gone(cluster, run_id, timeout=20):
    deadline = time.monotonic() + timeout
    while any(n.endswith(run_id) for n in cluster.job_names()):
        assert time.monotonic() < deadline, (
            f"Job of run {run_id} still there: {cluster.job_names()}"
        )
        time.sleep(0.2)


def test_a_run_is_a_job_on_the_cluster_built_from_the_catalog_and_its_output_comes_back(
    hub, cluster, alice
):
    # the notebook is only on alice's server (saved there as JupyterLab saves it); the service
    # reads it from there with alice's authority, never from a home of its own
    token = alice.session.headers["Authorization"].split()[1]
    (volume(cluster, "alice") / "projects").mkdir(
        parents=True, exist_ok=True
    )  # the folder, on alice's volume
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    try:
        r = requests.put(
            hub.user_url("alice") + "api/contents/projects",
            json={"type": "directory"},
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text
        put_notebook(
            hub,
            "alice",
            token,
            "projects/train.ipynb",
            notebook(
                "import os\nprint('epochs', epochs, 'in', os.getcwd(), 'gpus', os.environ.get('CUDA_VISIBLE_DEVICES'))",
                params="epochs = 1",
            ),
        )
        job = alice.create(
            notebook="projects/train.ipynb",
            parameters={"epochs": 7},
            profile="gpu-t4",
            timeout_s=600,
        )
    finally:
        hub.stop_server("alice")
    [run] = alice.wait_runs(job["id"], timeout=120)
    log = alice("GET", f"runs/{run['id']}/log").text
    assert run["status"] == "succeeded", (run, log)
    out = outputs(alice, run)
    # the parameter was injected, it ran in the user's home folder of the notebook, and CUDA
    # devices were left to the cluster's device plugin (not hidden by an empty variable)
    assert (
        "epochs 7 in " + str(volume(cluster, "alice") / "projects") in out and "gpus None" in out
    ), out
    assert "epochs 7" in alice("GET", f"runs/{run['id']}/output.html").text
    assert (
        f"submitted Job hubml-run-{run['id']} to namespace {NAMESPACE}" in log
        and "Executing Cell" in log
    ), log

    manifest = submitted(cluster, run["id"])
    assert manifest["apiVersion"] == "batch/v1" and manifest["metadata"]["namespace"] == NAMESPACE
    assert (
        manifest["spec"]["backoffLimit"] == 0
        and manifest["spec"]["activeDeadlineSeconds"] == 600 + 60
    )
    pod = manifest["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert (
        c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )  # the catalog's gpu-t4, as the spawner does it
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert c["image"].startswith("hubml/singleuser-gpu")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HUBML_JOB_RUN_ID"] == run["id"] and env["JUPYTERHUB_USER"] == "alice"
    assert "CUDA_VISIBLE_DEVICES" not in env and "JUPYTERHUB_API_TOKEN" not in env
    assert json.loads(manifest["metadata"]["annotations"]["hubml.io/parameters"]) == {"epochs": 7}
    wait_gone(cluster, run["id"])  # collected, then deleted


def test_the_runner_endpoints_take_only_the_runs_own_secret_while_it_runs(hub, cluster, alice):
    nb_wait = notebook("import time\ntime.sleep(300)")
    job = alice.create(notebook="wait.ipynb", content=nb_wait, profile="cpu-small")
    run = alice.wait_status(job["id"], "running", timeout=60)
    deadline = time.monotonic() + 30
    while not any(m["metadata"]["labels"]["hubml.io/run-id"] == run["id"] for m in cluster.created):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    secret = cluster.pod_env(run["id"])["HUBML_RUN_TOKEN"]
    base = hub.at(f"/services/jobs/api/runs/{run['id']}/runner/")
    assert (
        requests.get(
            base + "spec", headers={"Authorization": f"hubml-run {secret}"}, timeout=10
        ).status_code
        == 200
    )
    for header in (
        {},
        {"Authorization": "hubml-run wrong"},
        {"Authorization": f"token {alice.session.headers['Authorization'].split()[1]}"},
        {"Authorization": f"token {hub.token}"},
    ):
        r = requests.get(base + "spec", headers=header, timeout=10)
        assert r.status_code == 403 and "the run's secret" in r.json()["message"], (header, r.text)
    bad = requests.put(
        base + "result.json",
        data=b'{"status": "great"}',
        headers={"Authorization": f"hubml-run {secret}"},
        timeout=10,
    )
    assert bad.status_code == 400 and "status one of" in bad.json()["message"]

    # cancel: the Job is deleted in the foreground, the runner stops its kernel and sends what it has
    assert alice("POST", f"runs/{run['id']}/cancel").status_code == 202
    [run] = alice.wait_runs(job["id"], timeout=60)
    assert run["status"] == "cancelled", run
    wait_gone(cluster, run["id"])
    r = requests.get(base + "spec", headers={"Authorization": f"hubml-run {secret}"}, timeout=10)
    assert r.status_code == 409 and "no longer running" in r.json()["message"]
    assert not cluster.alive_processes()


def test_timeout_keeps_partial_output_and_a_pod_killed_for_memory_says_so(hub, cluster, alice):
    nb_slow = notebook("print('started', flush=True)", "import time\ntime.sleep(120)")
    job = alice.create(notebook="slow.ipynb", content=nb_slow, profile="cpu-small", timeout_s=5)
    [run] = alice.wait_runs(job["id"], timeout=90)
    assert run["status"] == "timed_out" and "timed out after 5 s" in run["error"], run
    assert "started" in outputs(alice, run)

    nb_big = notebook("print('loading', flush=True)", "import time\ntime.sleep(120)")
    job = alice.create(notebook="big.ipynb", content=nb_big, profile="cpu-small", max_retries=0)
    run = alice.wait_status(job["id"], "running", timeout=60)
    deadline = time.monotonic() + 60
    while (
        "Executing Cell 2" not in alice("GET", f"runs/{run['id']}/log").text
    ):  # the live log is the pod's
        assert time.monotonic() < deadline, alice("GET", f"runs/{run['id']}/log").text
        time.sleep(0.2)
    cluster.oom_kill(run["id"])
    [run] = alice.wait_runs(job["id"], timeout=60)
    assert run["status"] == "failed" and "ran out of memory (OOMKilled)" in run["error"], run
    assert "loading" in alice("GET", f"runs/{run['id']}/log").text
    wait_gone(cluster, run["id"])


def test_a_service_killed_during_a_run_follows_the_job_again(hub, cluster, alice):
    nb_steady = notebook("import time\ntime.sleep(8)\nprint('finished')")
    job = alice.create(notebook="steady.ipynb", content=nb_steady, profile="cpu-small")
    run = alice.wait_status(job["id"], "running", timeout=60)
    pid = requests.get(hub.at("/services/jobs/hubml/health"), timeout=10).json()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(hub.at("/services/jobs/hubml/health"), timeout=5).json()["pid"] != pid:
                break
        except (requests.RequestException, ValueError):
            pass
        assert time.monotonic() < deadline, "the hub did not restart the jobs service"
        time.sleep(0.5)
    [run] = alice.wait_runs(job["id"], timeout=90)
    assert run["status"] == "succeeded" and run["attempt"] == 1, run
    assert "finished" in outputs(alice, run)
    assert (
        len([m for m in cluster.created if m["metadata"]["labels"]["hubml.io/job-id"] == job["id"]])
        == 1
    )


def test_a_run_waiting_for_a_gpu_node_says_why_and_can_be_cancelled(hub, cluster, alice):
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    nb_gpu = notebook("print('on a GPU node')")
    cluster.unschedulable = message
    try:
        waiting = alice.create(
            notebook="gpu.ipynb", content=nb_gpu, profile="gpu-a100", timeout_s=3, max_retries=0
        )
        cancelled = alice.create(
            notebook="gpu.ipynb", content=nb_gpu, profile="gpu-a100", timeout_s=600
        )
        run = alice.wait_status(cancelled["id"], "running", timeout=60)
        deadline = time.monotonic() + 30
        while (
            f"the pod is waiting: Unschedulable: {message}"
            not in alice("GET", f"runs/{run['id']}/log").text
        ):
            assert time.monotonic() < deadline, alice("GET", f"runs/{run['id']}/log").text
            time.sleep(0.2)
        assert alice("POST", f"runs/{run['id']}/cancel").status_code == 202
        [run] = alice.wait_runs(cancelled["id"], timeout=60)
        assert run["status"] == "cancelled", run
        # never scheduled before its deadline: timed out, with the scheduler's reason
        [run] = alice.wait_runs(waiting["id"], timeout=90)
        assert (
            run["status"] == "timed_out"
            and "before the pod could start" in run["error"]
            and message in run["error"]
        ), run
    finally:
        cluster.unschedulable = None


def test_a_job_the_cluster_refuses_fails_the_run_with_the_clusters_reason(hub, cluster, alice):
    why = 'jobs.batch is forbidden: User "system:serviceaccount:hubml:hub" cannot create resource "jobs"'
    nb_refused = notebook("print('never')")
    cluster.refuse = (403, "Forbidden", why)
    try:
        job = alice.create(
            notebook="refused.ipynb", content=nb_refused, profile="cpu-small", max_retries=0
        )
        [run] = alice.wait_runs(job["id"], timeout=60)
    finally:
        cluster.refuse = None
    assert (
        run["status"] == "failed"
        and f"Kubernetes refused the Job (403 Forbidden): {why}" in run["error"]
    ), run
    assert not any(n.endswith(run["id"]) for n in cluster.job_names())


def test_every_call_the_executor_made_is_allowed_by_the_shipped_role(cluster):
    """hub_config/deploy/jobs-rbac.yaml grants what the executor needs, judged by what it did."""
    used, allowed = cluster.calls_and_role()
    assert {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    } <= used
    assert used <= allowed, used - allowed
