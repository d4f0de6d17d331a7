"""Runs as Kubernetes ``batch/v1`` Jobs: the manifest, and the executor that submits and follows them.

A run's Job is the user's own pod from KubeSpawner (same image, resources, GPU limits, node
selector, tolerations, home volume) running ``python -m hubml.extensions.jobs.runner --remote``
instead of the notebook server. The runner in the pod asks the jobs service for its run
(``GET api/runs/<id>/runner/spec``: the snapshotted notebook, the parameters, the timeout and
the run's environment), executes it with papermill, and sends the output notebook, its HTML
and its result back (``PUT api/runs/<id>/runner/<file>``). Those calls carry a per-run secret
that only the Job's pod is given, valid while the run is running; the service keeps only its
hash. The run's log is the pod's log, read from the Kubernetes API.

The executor keeps no state of its own: the Job (labelled with the run's id, named after it)
and the jobs database are the state, so a restarted service re-attaches to Jobs still running.
Where a Job ended without a result from its runner (out of memory, deadline, evicted), the
executor writes one from what Kubernetes says about the Job and its pod.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from . import remote

log = logging.getLogger("hubml.jobs.kube")

COMPONENT = "hubml-job"
CONTAINER = "notebook"
RUNNER_COMMAND = ["python", "-m", "hubml.extensions.jobs.runner", "--remote"]
# env a run gets locally that means nothing, or harm, in a pod: GPUs there come from the
# device plugin (an empty CUDA_VISIBLE_DEVICES would hide them) and the image sets HOME/USER
_LOCAL_ONLY = {"HOME", "USER", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HUBML_GPU_DEVICES"}


def job_name(run_id: str) -> str:
    return f"hubml-run-{run_id}"[:63]


def k8s_job_manifest(
    settings,
    profile_slug: str,
    username: str,
    notebook: str,
    parameters: dict | None = None,
    job_id: str = "preview",
    run_id: str = "preview",
    timeout_s: int = 3600,
    jobs_url: str | None = None,
    run_token: str = "<minted for each run>",
) -> dict:
    """The ``batch/v1`` Job for one run: the user's pod from KubeSpawner, running the job runner.

    The pod template is KubeSpawner's own pod for this user and profile, with the notebook
    server command replaced by the runner and the server's hub credentials removed. Retries are
    the service's business, so ``backoffLimit`` is 0; ``activeDeadlineSeconds`` is the run's
    timeout plus a grace period (:func:`job_deadline`) for the runner to stop the kernel and send the partial output.
    """

    from hubml.hub_config import k8s

    pod = k8s.pod_manifest(settings, profile_slug, username)
    spec = pod["spec"]
    spec["restartPolicy"] = "Never"
    container = spec["containers"][0]
    container["name"] = CONTAINER
    container["command"] = list(RUNNER_COMMAND)
    container.pop("args", None)
    container.pop("ports", None)
    container.pop("lifecycle", None)
    # the server's hub credentials and URLs mean nothing to a batch pod
    # (MLFLOW_TRACKING_TOKEN is the server's token too: the run's own comes with its spec)
    env = [
        e
        for e in container.get("env", [])
        if e["name"] == "JUPYTERHUB_USER"
        or not e["name"].startswith(("JUPYTERHUB_", "JPY_API_TOKEN", "MLFLOW_TRACKING_TOKEN"))
    ]
    env += [
        {"name": "HUBML_JOBS_URL", "value": jobs_url or cluster_jobs_url(settings)},
        {"name": "HUBML_JOB_ID", "value": job_id},
        {"name": "HUBML_JOB_RUN_ID", "value": run_id},
        {"name": "HUBML_RUN_TOKEN", "value": run_token},
        {"name": "JPY_SESSION_NAME", "value": notebook},
    ]
    container["env"] = env
    labels = {
        **pod["metadata"].get("labels", {}),
        "app.kubernetes.io/component": COMPONENT,
        "hubml.io/job-id": job_id,
        "hubml.io/run-id": run_id,
    }
    labels.pop("component", None)
    annotations = {
        "hubml.io/user": username,
        "hubml.io/notebook": notebook,
        "hubml.io/profile": profile_slug,
        "hubml.io/parameters": json.dumps(parameters or {}, sort_keys=True),
    }
    return batch_job(
        settings,
        job_name(run_id),
        pod,
        labels,
        annotations,
        deadline_s=job_deadline(timeout_s),
        ttl_s=7 * 24 * 3600,
    )


def batch_job(
    settings, name: str, pod: dict, labels: dict, annotations: dict, *, deadline_s: int, ttl_s: int
) -> dict:
    """A ``batch/v1`` Job (no retries: ``backoffLimit`` 0) whose pod is ``pod`` (a KubeSpawner
    pod as a dict, its spec already adapted), built and serialised by the kubernetes client."""
    from kubernetes_asyncio.client import (
        ApiClient,
        V1Job,
        V1JobSpec,
        V1ObjectMeta,
        V1PodTemplateSpec,
    )

    from hubml.hub_config import k8s

    job = V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(
            name=name,
            namespace=settings.kubernetes.namespace,
            labels=labels,
            annotations=annotations,
        ),
        spec=V1JobSpec(
            backoff_limit=0,
            active_deadline_seconds=deadline_s,
            ttl_seconds_after_finished=ttl_s,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(
                    labels=labels, annotations=pod["metadata"].get("annotations")
                ),
                spec=pod["spec"],
            ),
        ),
    )

    async def serialize():
        async with ApiClient() as api:
            return api.sanitize_for_serialization(job)

    return k8s._run(serialize())


def job_deadline(timeout_s: int) -> int:
    """The Job's activeDeadlineSeconds: the run's timeout (the runner enforces it) plus time for
    the runner to stop the kernel and send the partial output; 10-60 s."""
    return timeout_s + min(60, 10 + timeout_s // 10)


def cluster_jobs_url(settings) -> str:
    """Where a run's pod reaches the jobs service: its front door on the hub's Service."""
    from hubml.hub_config.topology import SERVICE_PORTS

    return f"http://{settings.kubernetes.hub_service}:{SERVICE_PORTS['jobs']}/services/jobs/"


async def cluster_client():
    """``(ApiClient, where)`` for the cluster: the in-cluster service account (in the hub
    pod), else ``$KUBECONFIG`` or ``~/.kube/config``."""
    from kubernetes_asyncio import client, config

    conf = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=conf)
        where = "in-cluster service account"
    except config.ConfigException:
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=conf
        )
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return client.ApiClient(conf), where


class KubernetesExecutor:
    """Submits each run as a Job in ``kubernetes.namespace`` and follows it.

    ``maintain`` (once per scheduler tick) forgets the last listing; ``alive`` lists the
    namespace's run Jobs at most once per tick, so following N runs costs one API call a second.
    """

    cluster_gpus = True  # the cluster's scheduler places GPUs (nvidia.com/gpu), not our ledger

    def __init__(self, settings, jobs_url: str = ""):
        self.settings = settings
        self.namespace = settings.kubernetes.namespace
        self.jobs_url = jobs_url or cluster_jobs_url(settings)
        self._api = None
        self._listing: dict[str, object] | None = None

    async def _client(self):
        if self._api is None:
            self._api, where = await cluster_client()
            log.info(
                "kubernetes executor: %s at %s, namespace %s; pods reach the service at %s",
                where,
                self._api.configuration.host,
                self.namespace,
                self.jobs_url,
            )
        return self._api

    async def _batch(self):
        from kubernetes_asyncio import client

        return client.BatchV1Api(await self._client())

    async def _core(self):
        from kubernetes_asyncio import client

        return client.CoreV1Api(await self._client())

    # -- the executor interface ----------------------------------------------------------------

    async def maintain(self) -> None:
        self._listing = None

    async def launch(self, spec: dict) -> None:
        run_dir = Path(spec["run_dir"])
        env = {k: v for k, v in spec["env"].items() if k not in _LOCAL_ONLY}
        token = remote.prepare(run_dir, spec, env)
        manifest = await asyncio.to_thread(
            k8s_job_manifest,
            self.settings,
            spec["profile"],
            spec["user"],
            spec["notebook"],
            spec["parameters"],
            job_id=spec["job_id"],
            run_id=spec["run_id"],
            timeout_s=spec["timeout_s"],
            jobs_url=self.jobs_url,
            run_token=token,
        )
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await (await self._batch()).create_namespaced_job(self.namespace, manifest)
        except ApiException as e:
            raise RuntimeError(
                f"Kubernetes refused the Job ({e.status} {e.reason}): {_api_message(e)}"
            ) from None
        self._listing = None
        with open(run_dir / "log", "a") as f:
            f.write(
                f"[hubml-jobs] submitted Job {job_name(spec['run_id'])} to namespace {self.namespace} "
                f"(profile {spec['profile']}); the pod's log follows when it ends\n"
            )
        return None

    async def _jobs(self) -> dict:
        if self._listing is None:
            found = await (await self._batch()).list_namespaced_job(
                self.namespace, label_selector=f"app.kubernetes.io/component={COMPONENT}"
            )
            self._listing = {
                (j.metadata.labels or {}).get("hubml.io/run-id"): j for j in found.items
            }
        return self._listing

    async def alive(self, run_dir: Path) -> bool:
        run_dir = Path(run_dir)
        job = (await self._jobs()).get(run_dir.name)
        if job is None:
            return False  # never submitted, or deleted from outside
        if job.metadata.deletion_timestamp:
            return True  # being deleted: its pod is stopping and may still send its output
        if not _ended(job):
            return True
        await self._collect(run_dir, job)
        return False

    async def terminate(self, run_dir: Path, pid=None, force: bool = False) -> None:
        """Delete the run's Job; foreground, so it stays until its pod has stopped (the runner
        gets SIGTERM, stops the kernel and sends the partial output)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await (await self._batch()).delete_namespaced_job(
                job_name(Path(run_dir).name),
                self.namespace,
                propagation_policy="Foreground",
                **({"grace_period_seconds": 0} if force else {}),
            )
        except ApiException as e:
            if e.status != 404:
                raise
        self._listing = None

    async def live_log(self, run_dir: Path) -> bytes | None:
        """The log so far: our own lines and the pod's (None when there is no pod yet)."""
        pod = await self._pod(Path(run_dir).name)
        if pod is None:
            return None
        own = (Path(run_dir) / "log").read_bytes() if (Path(run_dir) / "log").exists() else b""
        waiting = _pending(pod)
        if waiting is not None:
            return own + f"[hubml-jobs] the pod is waiting: {waiting}\n".encode()
        return own + (await self._pod_log(pod)).encode()

    def close(self) -> None:
        # Jobs keep running without us; the client's connections close with the process
        self._api = None

    # -- helpers -------------------------------------------------------------------------------

    async def _pod(self, run_id: str):
        pods = await (await self._core()).list_namespaced_pod(
            self.namespace, label_selector=f"job-name={job_name(run_id)}"
        )
        return (
            max(pods.items, key=lambda p: p.metadata.creation_timestamp or 0, default=None)
            if pods.items
            else None
        )

    async def _pod_log(self, pod) -> str:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await (await self._core()).read_namespaced_pod_log(
                pod.metadata.name, self.namespace, container=CONTAINER
            )
        except ApiException as e:
            return f"[hubml-jobs] the pod's log could not be read: {e.status} {e.reason}\n"

    async def _collect(self, run_dir: Path, job) -> None:
        """The Job ended: keep the pod's log, write a result if the runner sent none, delete the Job."""
        from kubernetes_asyncio.client.exceptions import ApiException

        pod = await self._pod(run_dir.name)
        with open(run_dir / "log", "a") as f:
            f.write(
                await self._pod_log(pod)
                if pod is not None
                else "[hubml-jobs] the Job has no pod left\n"
            )
        if not (run_dir / "result.json").exists():
            status, error = _failure(job, pod)
            with open(run_dir / "log", "a") as f:
                f.write(f"[hubml-jobs] {error}\n")
            remote.write_private(
                run_dir / "result.json",
                json.dumps({"status": status, "error": error, "mlflow_run_id": None}),
            )
        try:
            await (await self._batch()).delete_namespaced_job(
                job.metadata.name, self.namespace, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status != 404:
                log.warning("could not delete finished Job %s: %s", job.metadata.name, e.reason)


def _ended(job) -> bool:
    status = job.status
    if status is None:
        return False
    if (status.succeeded or 0) > 0 or (status.failed or 0) > 0:
        return True
    return any(
        c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or []
    )


def _failure(job, pod) -> tuple[str, str]:
    """(status, error) for a Job that ended without its runner's result, in Kubernetes' words."""
    conditions = [
        c for c in (job.status.conditions or []) if c.type == "Failed" and c.status == "True"
    ]
    if conditions and conditions[0].reason == "DeadlineExceeded":
        deadline = job.spec.active_deadline_seconds
        waiting = _pending(pod)
        if waiting is not None:
            return (
                "timed_out",
                f"timed out after {deadline} s before the pod could start: {waiting}",
            )
        return (
            "timed_out",
            f"timed out: the Job passed its deadline ({deadline} s) and Kubernetes stopped its pod",
        )
    for cs in (pod.status.container_statuses or []) if pod is not None and pod.status else []:
        term = cs.state.terminated if cs.state else None
        if term is not None:
            what = {
                "OOMKilled": "ran out of memory (OOMKilled): choose a profile with more memory"
            }.get(term.reason or "", f"ended with {term.reason or 'an error'}")
            return (
                "failed",
                f"the pod's container {what}, exit code {term.exit_code}, without a result from the runner",
            )
    if conditions:
        c = conditions[0]
        return (
            "failed",
            f"the Job failed: {c.reason or 'unknown reason'}{': ' + c.message if c.message else ''}",
        )
    return "failed", "the Job ended without a result from its runner"


def _api_message(e) -> str:
    """The message of a Kubernetes API error (its Status object), else its body."""
    try:
        return json.loads(e.body).get("message") or str(e.body)
    except (TypeError, ValueError, AttributeError):
        return str(e.body or e.reason)


def _pending(pod) -> str | None:
    """Why a pod that has not started is waiting (no node fits, image pulling), else None."""
    status = pod.status if pod is not None else None
    if status is None or status.phase != "Pending":
        return None
    why = [
        f"{c.reason}: {c.message}"
        for c in status.conditions or []
        if c.type == "PodScheduled" and c.status == "False"
    ]
    why += [
        f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".rstrip(": ")
        for cs in status.container_statuses or []
        if cs.state and cs.state.waiting
    ]
    return "; ".join(why) or "Pending"
