"""Registry gates on Kubernetes: a real hub and mlflow service submitting a ``batch/v1`` Job per
candidate with the real ``kubernetes_asyncio`` client to the stand-in API server
(tests/kubefake.py), whose pods run the real gate pod (:mod:`hubml.extensions.tracking.gatepod`)
as local processes: it fetches the model from the service with its gate's secret, probes it in
the same capped child as on one machine and reports back."""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest
import requests

from tests.gaterunutil import log_code_model

pytestmark = pytest.mark.integration

NAMESPACE = "hubml-gates-test"
GATE_TIMEOUT_S = 20
GATE_MEMORY_MB = 1024
START_TIMEOUT_S = 10
ALICE, BOB = "alice", "bob"

ENV_PROBE = """
import os
held = sorted(k for k in os.environ if "TOKEN" in k or "SECRET" in k or k.startswith(("JUPYTERHUB_", "MLFLOW_", "HUBML_")))
if held:
    raise RuntimeError("the model holds " + ", ".join(held))
return [len(os.environ)] * len(model_input)
"""


@pytest.fixture(scope="module")
def cluster_and_hub(tmp_path_factory):
    from tests.hubprocess import free_port, start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow
    from tests.kubefake import FakeCluster

    tmp = tmp_path_factory.mktemp("gates-k8s")
    port = free_port()
    cluster = FakeCluster(homes=tmp / "cluster" / "volumes", workdir=tmp / "cluster").start()
    hub = None
    try:
        hub = start_hub(
            tmp / "hub",
            {
                "tracking": {
                    "enabled": True,
                    "gate_executor": "kubernetes",
                    "gate_timeout_s": GATE_TIMEOUT_S,
                    "gate_memory_mb": GATE_MEMORY_MB,
                    "gate_start_timeout_s": START_TIMEOUT_S,
                },
                "auth": {"groups": {"gpu-users": [ALICE]}},
                "kubernetes": {"namespace": NAMESPACE, "proxy_url": f"http://127.0.0.1:{port}"},
                "gpus": {"inventory": "none"},
            },
            extra_env={"KUBECONFIG": str(cluster.kubeconfig)},
            port=port,
        )
        wait_for_mlflow(hub, hub.token)
        hub.tokens = {u: hub.user_token(u) for u in (ALICE, BOB)}
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
def runs(hub, tmp_path_factory):
    """Runs logged through the front door: a plain sklearn model of alice's made on the GPU
    profile she may use, one of bob's claiming that profile (he may not use it), and
    models-from-code candidates of alice's that hang, hoard memory or look for credentials."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    folder = tmp_path_factory.mktemp("gate-candidates")
    previous_uri = mlflow.get_tracking_uri()
    previous_token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    mlflow.set_tracking_uri(hub.at("/services/mlflow"))
    out = {}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow\.")
            for key, user in (("alice", ALICE), ("bob", BOB)):
                os.environ["MLFLOW_TRACKING_TOKEN"] = hub.tokens[user]
                mlflow.set_experiment(f"gates-k8s-{user}")
                model = LogisticRegression(max_iter=1000).fit(X, y)
                tags = {"hubml.user": user, "hubml.profile": "gpu-a100"}
                with mlflow.start_run(tags=tags) as run:
                    mlflow.log_metric("accuracy", float(model.score(X, y)))
                    mlflow.sklearn.log_model(model, name="model", input_example=X.head(5))
                out[key] = run.info.run_id
            os.environ["MLFLOW_TRACKING_TOKEN"] = hub.tokens[ALICE]
            mlflow.set_experiment("gates-k8s-candidates")
            for key, body in (
                ("sleeper", "import time\ntime.sleep(10**6)"),
                ("hoarder", "hoard = bytearray(8 << 30)\nreturn [len(hoard)] * len(model_input)"),
                ("env", ENV_PROBE),
            ):
                out[key] = log_code_model(folder / key, body, user=ALICE)
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_token is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = previous_token
    return out


def publish(hub, who, name, run_id):
    return requests.post(
        hub.at(f"/services/mlflow/hubml/api/models/{name}/publish"),
        json={"run_id": run_id},
        headers={"Authorization": f"token {hub.tokens[who]}"},
        timeout=GATE_TIMEOUT_S + START_TIMEOUT_S + 120,
    )


def inference_gate(r) -> dict:
    (gate,) = [g for g in r.json()["gates"]["results"] if g["name"] == "inference"]
    return gate


def gate_jobs(cluster) -> list[dict]:
    return [
        m
        for m in cluster.created
        if m["metadata"]["labels"].get("app.kubernetes.io/component") == "hubml-gate"
    ]


def wait_for_new_gate_job(cluster, seen: int, timeout=30) -> dict:
    deadline = time.monotonic() + timeout
    while len(gate_jobs(cluster)) <= seen:
        assert time.monotonic() < deadline, "no gate Job was submitted"
        time.sleep(0.1)
    return gate_jobs(cluster)[seen]


def no_gate_jobs_left(cluster, timeout=20):
    deadline = time.monotonic() + timeout
    while any(n.startswith("hubml-gate-") for n in cluster.job_names()):
        assert time.monotonic() < deadline, cluster.job_names()
        time.sleep(0.2)


def test_a_candidate_is_gated_in_a_job_on_its_runs_profile_and_the_job_is_deleted(
    hub, cluster, runs
):
    seen = len(gate_jobs(cluster))
    r = publish(hub, ALICE, "k8s-good", runs["alice"])

    assert r.status_code == 201, r.text
    gate = inference_gate(r)
    assert gate["passed"], gate
    [job] = gate_jobs(cluster)[seen:]
    # on the profile the run was made on (alice is in gpu-users, which gpu-a100 requires): its image, node and GPU
    assert job["metadata"]["annotations"] == {
        "hubml.io/user": ALICE,
        "hubml.io/profile": "gpu-a100",
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["automountServiceAccountToken"] is False and "volumes" not in pod
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert env == {"HUBML_GATE_URL", "HUBML_GATE_TOKEN", "JUPYTERHUB_USER", "PYTHONUNBUFFERED"}
    no_gate_jobs_left(cluster)


def test_a_profile_the_publisher_may_not_use_is_not_where_the_gate_runs(hub, cluster, runs):
    seen = len(gate_jobs(cluster))
    r = publish(hub, BOB, "k8s-bobs", runs["bob"])

    assert r.status_code == 201, r.text
    [job] = gate_jobs(cluster)[seen:]
    assert job["metadata"]["annotations"]["hubml.io/profile"] == "cpu-small"
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_a_hanging_candidate_fails_at_the_timeout_while_another_publish_goes_through(
    hub, cluster, runs
):
    answers = {}
    seen = len(gate_jobs(cluster))
    sleeper = threading.Thread(
        target=lambda: answers.update(r=publish(hub, ALICE, "k8s-sleeper", runs["sleeper"]))
    )
    started = time.monotonic()
    sleeper.start()
    job = wait_for_new_gate_job(cluster, seen)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    url, secret = env["HUBML_GATE_URL"], env["HUBML_GATE_TOKEN"]
    # the pod's endpoints take that gate's own secret only
    assert requests.get(url + "spec", timeout=10).status_code == 403
    wrong = {"Authorization": "hubml-gate " + secret[:-2] + "xx"}
    assert requests.get(url + "model", headers=wrong, timeout=10).status_code == 403
    other = url.replace(job["metadata"]["labels"]["hubml.io/gate-id"], "0" * 16)
    mine = {"Authorization": f"hubml-gate {secret}"}
    assert requests.get(other + "spec", headers=mine, timeout=10).status_code == 403
    assert (
        requests.get(url + "spec", headers=mine, timeout=10).json()["timeout_s"] == GATE_TIMEOUT_S
    )

    good = publish(hub, ALICE, "k8s-beside-sleeper", runs["alice"])

    assert good.status_code == 201 and inference_gate(good)["passed"], good.text
    assert sleeper.is_alive(), "the good model waited for the hanging one"
    sleeper.join(GATE_TIMEOUT_S + START_TIMEOUT_S + 90)
    rejected = answers["r"]
    assert rejected.status_code == 422, rejected.text
    gate = inference_gate(rejected)
    assert gate["detail"] == f"predict did not return within {GATE_TIMEOUT_S} s", gate
    assert time.monotonic() - started >= GATE_TIMEOUT_S
    # once the gate is over, its secret opens nothing
    assert requests.get(url + "spec", headers=mine, timeout=10).status_code == 403
    no_gate_jobs_left(cluster)


def test_a_candidate_that_allocates_past_the_cap_runs_out_of_memory(hub, runs):
    r = publish(hub, ALICE, "k8s-hoarder", runs["hoarder"])

    assert r.status_code == 422, r.text
    assert inference_gate(r)["detail"] == f"the model ran out of memory (cap {GATE_MEMORY_MB} MiB)"


def test_a_gate_pod_killed_for_memory_fails_the_gate_saying_so(hub, cluster, runs):
    """On a GPU profile the container's limit is the cap: Kubernetes OOM-kills the pod."""
    answers = {}
    seen = len(gate_jobs(cluster))
    t = threading.Thread(
        target=lambda: answers.update(r=publish(hub, ALICE, "k8s-oom", runs["sleeper"]))
    )
    t.start()
    job = wait_for_new_gate_job(cluster, seen)
    time.sleep(2)  # its pod is running the model
    cluster.oom_kill(job["metadata"]["name"])
    t.join(60)
    r = answers["r"]
    assert r.status_code == 422, r.text
    assert (
        "ran out of memory" in inference_gate(r)["detail"]
        and "OOMKilled" in inference_gate(r)["detail"]
    )


def test_the_model_in_a_gate_pod_holds_no_credentials(hub, runs):
    r = publish(hub, ALICE, "k8s-env", runs["env"])

    assert r.status_code == 201, inference_gate(r)["detail"]


def test_a_gate_that_cannot_start_or_is_refused_fails_with_the_clusters_reason(hub, cluster, runs):
    cluster.unschedulable = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    try:
        r = publish(hub, ALICE, "k8s-pending", runs["alice"])
    finally:
        cluster.unschedulable = None
    assert r.status_code == 422, r.text
    detail = inference_gate(r)["detail"]
    assert (
        f"did not start within {START_TIMEOUT_S} s" in detail
        and "Insufficient nvidia.com/gpu" in detail
    )

    why = 'jobs.batch is forbidden: User "system:serviceaccount:hubml:hub" cannot create resource "jobs"'
    cluster.refuse = (403, "Forbidden", why)
    try:
        r = publish(hub, ALICE, "k8s-refused", runs["alice"])
    finally:
        cluster.refuse = None
    assert r.status_code == 422, r.text
    assert (
        f"Kubernetes refused the gate's Job (403 Forbidden): {why}" in inference_gate(r)["detail"]
    )
    no_gate_jobs_left(cluster)


def test_every_call_the_gates_made_is_allowed_by_the_shipped_role(cluster):
    used, allowed = cluster.calls_and_role()
    assert ("batch", "jobs", "create") in used and ("batch", "jobs", "delete") in used
    assert used <= allowed, used - allowed
