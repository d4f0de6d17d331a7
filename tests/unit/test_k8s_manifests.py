"""Pods for every catalog profile, built by the real KubeSpawner offline (no cluster)."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from hubml.hub_config.cli import main
from hubml.hub_config.configurer import apply_settings
from hubml.hub_config.k8s import ManifestError, make_spawner, pod_manifest
from hubml.hub_config.settings import load_settings

pytestmark = pytest.mark.k8s

DEPLOY = Path(__file__).resolve().parents[2] / "hub_config" / "deploy"
GPU_TOLERATION = [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
EXPECTED = {
    # slug: (gpus, node selector, cpu request/limit, memory request/limit in bytes, image)
    "cpu-small": (0, None, (0.5, 2.0), (1 << 30, 8 << 30), "hubml/singleuser-cpu:0.1.0"),
    "cpu-large": (0, None, (4.0, 8.0), (16 << 30, 32 << 30), "hubml/singleuser-cpu:0.1.0"),
    "gpu-t4": (
        1,
        {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        (2.0, 4.0),
        (8 << 30, 15 << 30),
        "hubml/singleuser-gpu:0.1.0",
    ),
    "gpu-a10g": (
        1,
        {"node.kubernetes.io/instance-type": "g5.xlarge"},
        (2.0, 4.0),
        (8 << 30, 15 << 30),
        "hubml/singleuser-gpu:0.1.0",
    ),
    "gpu-a100": (
        1,
        {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
        (8.0, 12.0),
        (64 << 30, 80 << 30),
        "hubml/singleuser-gpu:0.1.0",
    ),
    "gpu-h100": (
        1,
        {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        (16.0, 26.0),
        (128 << 30, 234 << 30),
        "hubml/singleuser-gpu:0.1.0",
    ),
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    path = tmp_path_factory.mktemp("k8s") / "settings.yaml"
    path.write_text(
        "hub: {spawner: kubernetes, public_url: 'https://hub.example.org'}\nauth: {groups: {gpu-users: [alice]}}\n"
    )
    return load_settings(path, environ={"HUBML_DATA_DIR": str(path.parent)})


@pytest.mark.parametrize("slug", list(EXPECTED))
def test_pod_of_each_profile(settings, slug):
    gpus, selector, cpu, mem, image = EXPECTED[slug]
    pod = pod_manifest(settings, slug, "alice")
    container = pod["spec"]["containers"][0]
    res = container["resources"]
    if gpus:
        assert res["limits"]["nvidia.com/gpu"] == str(gpus) and res["requests"][
            "nvidia.com/gpu"
        ] == str(gpus)
        assert pod["spec"]["nodeSelector"] == selector
        assert pod["spec"]["tolerations"] == GPU_TOLERATION
    else:
        assert "nvidia.com/gpu" not in res["limits"] and "nvidia.com/gpu" not in res["requests"]
        assert not pod["spec"].get("nodeSelector") and not pod["spec"].get("tolerations")
    assert (res["requests"]["cpu"], res["limits"]["cpu"]) == cpu
    assert (res["requests"]["memory"], res["limits"]["memory"]) == mem
    assert container["image"] == image
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HUBML_PROFILE"] == slug
    assert env["JUPYTERHUB_API_TOKEN"] == "<generated-by-jupyterhub-at-spawn>"
    assert {"mountPath": "/home/jovyan", "name": "home"} in container["volumeMounts"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}} in pod["spec"][
        "volumes"
    ]
    assert container["args"] == [
        "jupyterhub-singleuser",
        "--ServerApp.jpserver_extensions=hubml.extensions.bridge=True",
    ]


def test_builder_exact_values(settings):
    from hubml.hub_config.spawners.kube import make_kubespawner_override

    assert make_kubespawner_override(settings.profile("cpu-small")) == {
        "image": "hubml/singleuser-cpu:0.1.0",
        "cpu_guarantee": 0.5,
        "cpu_limit": 2.0,
        "mem_guarantee": 1 << 30,
        "mem_limit": 8 << 30,
        "extra_resource_guarantees": {},
        "extra_resource_limits": {},
        "node_selector": {},
        "tolerations": [],
        "environment": {
            "HUBML_PROFILE": "cpu-small",
            "HUBML_PROFILE_NAME": "Small CPU",
            "HUBML_PRICE_PER_HOUR": "0.0971",
            "HUBML_GPU": "none",
        },
    }
    a100 = make_kubespawner_override(settings.profile("gpu-a100"))
    assert (
        a100["extra_resource_limits"]
        == {"nvidia.com/gpu": "1"}
        == a100["extra_resource_guarantees"]
    )
    assert a100["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_cpu_after_gpu_on_one_spawner_carries_no_gpu(settings):
    """KubeSpawner merges dict overrides in place; hubml replaces them."""
    from hubml.hub_config.k8s import _close_clients, offline_kubeconfig

    async def scenario():
        try:
            spawner = await make_spawner(settings, "gpu-a100", "alice")
            gpu_pod = await spawner.get_pod_manifest()
            await spawner._run_apply_user_options({"profile": "cpu-small"})
            cpu_pod = await spawner.get_pod_manifest()
            return gpu_pod, cpu_pod
        finally:
            await _close_clients()

    with offline_kubeconfig(), ThreadPoolExecutor(1) as pool:
        gpu_pod, cpu_pod = pool.submit(asyncio.run, scenario()).result()
    assert gpu_pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    cpu = cpu_pod.spec.containers[0]
    assert "nvidia.com/gpu" not in (cpu.resources.limits or {})
    assert "nvidia.com/gpu" not in (cpu.resources.requests or {})
    assert not cpu_pod.spec.node_selector and not cpu_pod.spec.tolerations
    assert {e.name: e.value for e in cpu.env}["HUBML_PROFILE"] == "cpu-small"


def test_hubml_k8s_pod_command(settings, capsys, monkeypatch, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("auth: {groups: {gpu-users: [alice]}}\n")
    assert (
        main(["--settings", str(path), "k8s", "pod", "--profile", "gpu-a100", "--user", "alice"])
        == 0
    )
    pod = yaml.safe_load(capsys.readouterr().out)
    assert pod["kind"] == "Pod"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        main(["--settings", str(path), "k8s", "pod", "--profile", "gpu-z", "--user", "alice"]) == 2
    )
    assert (
        "unknown profile 'gpu-z'; valid profiles: cpu-small, cpu-large" in capsys.readouterr().err
    )
    assert (
        main(["--settings", str(path), "k8s", "pod", "--profile", "gpu-a100", "--user", "bob"]) == 2
    )
    assert "limited to members of gpu-users" in capsys.readouterr().err


def test_unknown_profile_is_a_manifest_error(settings):
    with pytest.raises(ManifestError, match="valid profiles: cpu-small"):
        pod_manifest(settings, "nope", "alice")


def test_kubernetes_configuration_selects_the_kube_spawner(settings):
    c = Config()
    apply_settings(c, settings)
    assert c.JupyterHub.spawner_class == "hubml.hub_config.spawners.kube.HubmlKubeSpawner"
    assert [p["slug"] for p in c.HubmlKubeSpawner.catalog][:2] == ["cpu-small", "cpu-large"]
    assert c.KubeSpawner.cmd == ["jupyterhub-singleuser"]
    assert c.KubeSpawner.storage_pvc_ensure is True


def test_in_a_cluster_services_are_on_the_hubs_service_and_pods_reach_them_there(settings):
    from hubml.hub_config.topology import SERVICE_PORTS

    c = Config()
    apply_settings(c, settings)
    services = {s["name"]: s for s in c.JupyterHub.services}
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    opened = {p["port"] for p in values["hub"]["service"]["extraPorts"]}
    for name in ("mlflow", "jobs", "apps", "home", "cost", "features"):
        # the proxy is another pod: loopback would not reach the hub pod
        assert services[name]["url"] == f"http://hub:{SERVICE_PORTS[name]}"
        assert services[name]["environment"]["HUBML_SERVICE_BIND"] == ""
        assert (
            SERVICE_PORTS[name] in opened
            and SERVICE_PORTS[name] in values["hub"]["networkPolicy"]["allowedIngressPorts"]
        )
    env = c.KubeSpawner.environment if "environment" in c.KubeSpawner else c.Spawner.environment
    # a pod reaches each service's front door (which authenticates everything) on the hub's Service
    assert env["MLFLOW_TRACKING_URI"] == "http://hub:8091/services/mlflow"
    assert env["HUBML_JOBS_URL"] == "http://hub:8092/services/jobs"
    assert env["HUBML_APPS_URL"] == "http://hub:8093/services/apps"
    assert env["HUBML_PUBLIC_URL"] == "https://hub.example.org"
    assert c.JupyterHub.subdomain_host == "https://hub.example.org"


def test_an_apps_pod_runs_the_launcher_fetching_its_bundle_from_the_apps_service(settings):
    pod = pod_manifest(settings, "cpu-small", "alice", app="greeter")
    c = pod["spec"]["containers"][0]
    assert c["args"] == ["python", "-m", "hubml.extensions.apps.launcher"]  # the image's Python
    assert (
        pod["metadata"]["name"] == "jupyter-alice--app-greeter"
    )  # its own pod, not alice's server
    env = {e["name"]: e.get("value") for e in c["env"]}
    # the pod cannot see the hub's data dir: it fetches the bundle and reports back over HTTP
    assert env["HUBML_APP_RUNTIME_URL"] == "http://hub:8093/services/apps/api/apps/greeter/runtime/"
    assert env["HUBML_APP_NAME"] == "greeter" and "HUBML_APP_DIR" not in env
    # an app gets no home volume (no PVC per app); CPU/memory come from the catalog as for servers
    assert not pod["spec"].get("volumes") and not c.get("volumeMounts")
    assert (
        c["resources"]
        == pod_manifest(settings, "cpu-small", "alice")["spec"]["containers"][0]["resources"]
    )


def test_deployment_examples_parse_and_validate(tmp_path):
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    assert "configure(c)" in str(values["hub"]["extraConfig"])
    s = load_settings(
        DEPLOY / "settings-kubernetes.yaml", environ={"HUBML_DATA_DIR": str(tmp_path)}
    )
    assert s.hub.spawner == "kubernetes"


@pytest.mark.parametrize("slug", ["cpu-small", "gpu-a100"])
def test_job_of_a_notebook_uses_the_same_translation_as_the_spawner(settings, slug):
    from kubernetes_asyncio.client import V1Job  # noqa: F401  (the real client's model built it)

    from hubml.extensions.jobs.kube import job_deadline, k8s_job_manifest

    gpus, selector, cpu, mem, image = EXPECTED[slug]
    job = k8s_job_manifest(
        settings,
        slug,
        "alice",
        "projects/train.ipynb",
        {"epochs": 5, "lr": 0.01},
        job_id="j1",
        run_id="r1",
        timeout_s=900,
    )
    pod = pod_manifest(settings, slug, "alice")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    # the runner gets the run's timeout; the Job's deadline leaves it time to stop and report
    assert (
        job["spec"]["backoffLimit"] == 0
        and job["spec"]["activeDeadlineSeconds"] == job_deadline(900) == 960
    )
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    c = spec["containers"][0]
    assert c["image"] == image and c["resources"] == pod["spec"]["containers"][0]["resources"]
    assert c["resources"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert spec.get("nodeSelector") == pod["spec"].get("nodeSelector") == selector
    assert spec.get("tolerations") == pod["spec"].get("tolerations")
    assert spec["volumes"] == pod["spec"]["volumes"]  # the user's home volume
    assert c["volumeMounts"] == pod["spec"]["containers"][0]["volumeMounts"]
    assert (
        c["command"] == ["python", "-m", "hubml.extensions.jobs.runner", "--remote"]
        and "args" not in c
    )
    assert json.loads(job["metadata"]["annotations"]["hubml.io/parameters"]) == {
        "epochs": 5,
        "lr": 0.01,
    }
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (
        env["HUBML_JOB_ID"] == "j1"
        and env["HUBML_JOB_RUN_ID"] == "r1"
        and env["JUPYTERHUB_USER"] == "alice"
    )
    assert (
        env["HUBML_JOBS_URL"] == "http://hub:8092/services/jobs/"
    )  # its front door, on the hub's Service
    # no hub credentials: the pod's only secret is its run's, minted when the run is submitted
    assert [k for k in env if "TOKEN" in k] == ["HUBML_RUN_TOKEN"] and env[
        "HUBML_RUN_TOKEN"
    ] == "<minted for each run>"
    assert job["metadata"]["labels"]["hubml.io/run-id"] == "r1"


def test_hubml_k8s_job_command(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("auth: {groups: {gpu-users: [alice]}}\n")
    args = [
        "--settings",
        str(path),
        "k8s",
        "job",
        "--profile",
        "gpu-t4",
        "--user",
        "alice",
        "--notebook",
        "nb.ipynb",
    ]
    assert main(args + ["--parameters", '{"n": 2}', "-o", "json"]) == 0
    import json

    job = json.loads(capsys.readouterr().out)
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
    )
    assert main(args[:-2]) == 2
    assert "a job needs --notebook" in capsys.readouterr().err
    assert main(args + ["--parameters", "[1]"]) == 2
    assert "--parameters must be a JSON object" in capsys.readouterr().err


def test_no_hub_or_service_credential_reaches_a_users_server_job_or_app_pod(tmp_path):
    """On Kubernetes pods are the boundary: a user's pods carry the user's own server token at
    most (a job's pod not even that), never the admin token, a service's token, the MLflow
    front door's secret, settings or a database password."""
    from hubml.extensions.jobs.kube import k8s_job_manifest

    secrets_ = {
        "admin": "A" * 40,
        "db": "s3cret-db-password",
        "mlflow-db": "s3cret-mlflow-password",
    }
    path = tmp_path / "settings.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "hub": {
                    "spawner": "kubernetes",
                    "public_url": "https://hub.example.org",
                    "db_url": f"postgresql+psycopg://hub:{secrets_['db']}@db/hub",
                },
                "auth": {"admin_token": secrets_["admin"], "groups": {"gpu-users": ["alice"]}},
                "tracking": {
                    "backend_store_uri": f"postgresql://mlflow:{secrets_['mlflow-db']}@db/mlflow"
                },
            }
        )
    )
    s = load_settings(path, environ={"HUBML_DATA_DIR": str(tmp_path)})
    server = pod_manifest(s, "gpu-a100", "alice")
    app = pod_manifest(s, "cpu-small", "alice", app="greeter")
    job = k8s_job_manifest(
        s, "cpu-small", "alice", "train.ipynb", {}, run_token="the-runs-own-secret"
    )
    for name, obj in (("server", server), ("app", app), ("job", job)):
        text = json.dumps(obj)
        for what, secret in secrets_.items():
            assert secret not in text, (name, what)
        pod = obj["spec"]["template"]["spec"] if name == "job" else obj["spec"]
        env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
        tokens = sorted(
            k for k in env if "TOKEN" in k or "SECRET" in k or "PASSWORD" in k or "SETTINGS" in k
        )
        if name == "job":
            assert tokens == ["HUBML_RUN_TOKEN"] and env["HUBML_RUN_TOKEN"] == "the-runs-own-secret"
        else:  # the server's own token, which JupyterHub generates for that server at spawn
            assert tokens == ["JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "MLFLOW_TRACKING_TOKEN"]
            assert {env[k] for k in tokens} == {"<generated-by-jupyterhub-at-spawn>"}


# -- registry gates in the cluster (extensions/tracking/gatekube.py) ---------------------------


def _gate_job(settings, slug, user="alice"):
    from hubml.extensions.tracking.gatekube import gate_job_manifest

    return gate_job_manifest(
        settings,
        slug,
        user,
        "0123456789abcdef",
        "http://hub:8091/services/mlflow/hubml/gates/0123456789abcdef/",
        "the-gates-own-secret",
        memory_mb=4096,
        deadline_s=451,
    )


@pytest.mark.parametrize("slug", ["cpu-small", "gpu-a100"])
def test_a_gate_job_is_the_publishers_pod_without_credentials_volumes_or_the_chart_labels(
    settings, slug
):
    gpus, selector, cpu, _, image = EXPECTED[slug]
    job = _gate_job(settings, slug)
    pod = pod_manifest(settings, slug, "alice")
    assert job["kind"] == "Job" and job["metadata"]["name"] == "hubml-gate-0123456789abcdef"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 451
    spec = job["spec"]["template"]["spec"]
    c = spec["containers"][0]
    # same image, node and GPU as the profile (a GPU model is gated on a GPU, with its libraries)
    assert c["image"] == image and spec.get("nodeSelector") == selector
    assert spec.get("tolerations") == pod["spec"].get("tolerations")
    assert c["resources"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert (
        c["resources"]["limits"]["cpu"]
        == pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    )
    # the gate's memory cap (plus the pod runner's own share) is the container's limit
    assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"] == "4352Mi"
    assert c["command"] == ["python", "-m", "hubml.extensions.tracking.gatepod"]
    assert "args" not in c and "volumeMounts" not in c and "volumes" not in spec
    assert "initContainers" not in spec and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env == {
        "HUBML_GATE_URL": "http://hub:8091/services/mlflow/hubml/gates/0123456789abcdef/",
        "HUBML_GATE_TOKEN": "the-gates-own-secret",
        "JUPYTERHUB_USER": "alice",
        "PYTHONUNBUFFERED": "1",
    }
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "hubml-gate"
    assert "component" not in labels and "hub.jupyter.org/network-access-hub" not in labels


def test_the_gates_network_policy_selects_gate_pods_only_and_lets_them_reach_mlflow_only(settings):
    from hubml.hub_config.topology import SERVICE_PORTS

    [policy] = yaml.safe_load_all((DEPLOY / "gates-networkpolicy.yaml").read_text())
    selector = policy["spec"]["podSelector"]["matchLabels"]

    def selected(labels):
        return all(labels.get(k) == v for k, v in selector.items())

    gate = _gate_job(settings, "cpu-small")["spec"]["template"]["metadata"]["labels"]
    assert selected(gate)
    # neither a user's server nor a notebook job's pod is under it (they have policies of their own)
    from hubml.extensions.jobs.kube import k8s_job_manifest

    assert not selected(pod_manifest(settings, "cpu-small", "alice")["metadata"]["labels"])
    run = k8s_job_manifest(settings, "cpu-small", "alice", "t.ipynb", {})
    assert not selected(run["spec"]["template"]["metadata"]["labels"])
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["spec"]["ingress"] == []
    ports = {
        (p["protocol"], p["port"], tuple(sorted(to["podSelector"]["matchLabels"].items())))
        for rule in policy["spec"]["egress"]
        for to in rule["to"]
        for p in rule["ports"]
    }
    assert ports == {
        ("TCP", SERVICE_PORTS["mlflow"], (("component", "hub"),)),
        ("UDP", 53, (("k8s-app", "kube-dns"),)),
        ("TCP", 53, (("k8s-app", "kube-dns"),)),
    }


def test_a_gate_runs_on_the_runs_profile_only_if_the_publisher_may_use_it(settings):
    from hubml.extensions.tracking.gatekube import choose_profile

    default = settings.default_profile.slug
    assert choose_profile(settings, "gpu-a100", {"gpu-users"})[0] == "gpu-a100"
    # a run tagged with a GPU profile by someone outside gpu-users is gated on the default
    slug, why = choose_profile(settings, "gpu-a100", set())
    assert slug == default and "not a profile they may use" in why
    assert choose_profile(settings, "no-such-profile", set())[0] == default
    assert choose_profile(settings, None, set()) == (
        default,
        "the default profile (the run names none)",
    )


def test_gates_go_to_the_cluster_where_the_settings_say_and_mlflow_then_finds_it(
    tmp_path, monkeypatch
):
    from hubml.hub_config.topology import gates_in_cluster

    def settings_with(extra):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(extra))
        return load_settings(path, environ={"HUBML_DATA_DIR": str(tmp_path)})

    assert not gates_in_cluster(settings_with({}))
    assert gates_in_cluster(settings_with({"jobs": {"executor": "kubernetes"}}))
    assert not gates_in_cluster(
        settings_with({"jobs": {"executor": "kubernetes"}, "tracking": {"gate_executor": "local"}})
    )
    assert gates_in_cluster(settings_with({"tracking": {"gate_executor": "kubernetes"}}))
    c = Config()
    with_gates = settings_with({"tracking": {"gate_executor": "kubernetes"}})
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    apply_settings(c, with_gates)
    [mlflow] = [s for s in c.JupyterHub.services if s["name"] == "mlflow"]
    assert "KUBECONFIG" in mlflow["environment"]
    assert "HUBML_GATE_RUNNER" not in mlflow["environment"]


def test_a_gate_pods_report_is_checked_field_by_field():
    from hubml.extensions.tracking.gateexchange import child_run_from

    run = child_run_from(
        {
            "messages": [{"phase": "load"}, "junk", {"result": {"ok": False}}],
            "stderr": "x" * 100_000,
            "returncode": 0,
            "timed_out": False,
            "overflow": False,
            "wall_s": 1.5,
            "refused": None,
        }
    )
    assert run.messages == [{"phase": "load"}, {"result": {"ok": False}}]
    assert len(run.stderr) == 16 << 10 and run.wall_s == 1.5
    for bad, says in (
        ([], "JSON object"),
        ({"messages": "x"}, "messages"),
        ({"messages": [], "returncode": "0"}, "returncode"),
        ({"messages": [], "timed_out": "yes"}, "timed_out"),
        ({"messages": [], "wall_s": -1}, "wall_s"),
        ({"messages": [], "stderr": 3}, "stderr"),
        ({"messages": [], "refused": 3}, "refused"),
    ):
        with pytest.raises(ValueError, match=says):
            child_run_from(bad)


def test_a_gate_that_cannot_reach_the_cluster_fails_with_a_reason(settings, tmp_path, monkeypatch):
    from hubml.extensions.tracking.gatekube import KubeGates

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "hub", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "hub"}}],
                "current-context": "gone",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    gates = KubeGates(settings, "http://hub:8091/services/mlflow/", timeout_s=5, memory_mb=512)
    probe = gates.probe(str(model), 3, "alice")
    assert not probe.ok and "could not reach the Kubernetes API" in probe.reason, probe.reason
    assert len(gates.exchange) == 0  # the gate's secret is gone with it
