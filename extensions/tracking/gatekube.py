"""Gate probes on Kubernetes: each candidate is probed in a ``batch/v1`` Job of its own.

In a cluster the mlflow service runs in the hub pod, next to the hub's database, its token and
its service account (which may create pods); there is no root runner service to become the
publisher. So a candidate is never started there: :class:`KubeGates` submits a Job whose pod is
the publisher's own pod from KubeSpawner for the chosen profile (same image, so the model's own
libraries; same node selector, tolerations and ``nvidia.com/gpu`` limit, so a GPU model is gated
on a GPU), with what a gate does not need taken away:

- no hub credentials or service URLs in its environment, no service-account token
  (``automountServiceAccountToken: false``), no home volume, no init containers;
- a container memory limit (``tracking.gate_memory_mb`` plus the pod runner's own
  ``POD_OVERHEAD_MB``), which is the cap for GPU profiles; on CPU profiles the child's
  ``RLIMIT_AS`` applies too, so a model allocating past it fails with MemoryError;
- labelled ``app.kubernetes.io/component: hubml-gate`` and without the chart's
  ``component``/``hub.jupyter.org/network-access-*`` labels, so that the NetworkPolicy shipped in
  ``hub_config/deploy/gates-networkpolicy.yaml`` is the only one that selects it: no ingress,
  egress only to DNS and the hub's mlflow port;
- ``activeDeadlineSeconds`` (start allowance + timeout + slack) and ``backoffLimit: 0``.

The pod runs :mod:`.gatepod`, which talks to this service only, with a per-gate secret
(``Authorization: hubml-gate <secret>``; the service keeps its SHA-256, :mod:`.gateexchange`): ``GET
hubml/gates/<id>/spec`` (trials, timeout, caps), ``GET hubml/gates/<id>/model`` (the downloaded
model directory as a tar archive) and ``PUT hubml/gates/<id>/result`` (how its child ran:
messages, stderr tail, exit, timed out). The secret is good for that one gate, and only until
its result is in or the service gave up on it. The verdict is the service's own
(:func:`.gateverdict.verdict`), from what the pod sent or, when it sent nothing, from what
Kubernetes says about the Job (not schedulable, out of memory, deadline).

What the model can still do: forge its own probe result (it runs in the pod that reports, as on
one machine, where it shares a process with the probe); reach the DNS and the mlflow service's
front door without credentials; use the profile's CPU and GPU until the deadline.

:func:`probe` blocks (it follows the Job): the registry calls it from a worker thread.
Importing this module imports no heavy library.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .gateexchange import GateExchange, PendingGate
from .gatesandbox import MAX_MEMORY_MB, check_limits, cpu_seconds, remove_tree
from .gateverdict import ChildRun, GateProbe, verdict

log = logging.getLogger("hubml.gates.kube")

COMPONENT = "hubml-gate"
CONTAINER = "gate"
POD_COMMAND = ["python", "-m", "hubml.extensions.tracking.gatepod"]
POD_OVERHEAD_MB = 256  # the pod's own interpreter (gatepod) and the container runtime's share
DEFAULT_START_TIMEOUT_S = 300.0  # scheduling and pulling the image, before the timeout counts
REPORT_SLACK_S = 30.0  # after the pod's own timeout: time to kill its child and send the result
POLL_S = 0.25
JOB_POLL_S = 1.0
# labels of the chart that would put the gate pod under the users' servers' NetworkPolicy
_CHART_LABELS = ("component", "hub.jupyter.org/network-access-hub")


def job_name(gate_id: str) -> str:
    return f"hubml-gate-{gate_id}"


# -- the Job ----------------------------------------------------------------------------------


def gate_job_manifest(
    settings,
    profile_slug: str,
    username: str,
    gate_id: str,
    gate_url: str,
    secret: str,
    *,
    memory_mb: int,
    deadline_s: int,
) -> dict:
    """The ``batch/v1`` Job that probes one candidate: ``username``'s pod from KubeSpawner on
    ``profile_slug``, stripped to what a gate needs (see the module's docstring)."""
    from hubml.extensions.jobs import kube
    from hubml.hub_config import k8s

    pod = k8s.pod_manifest(settings, profile_slug, username)
    spec = pod["spec"]
    spec["restartPolicy"] = "Never"
    spec["automountServiceAccountToken"] = False
    spec.pop("serviceAccountName", None)
    spec.pop("serviceAccount", None)
    spec.pop("volumes", None)
    spec.pop("initContainers", None)
    spec["enableServiceLinks"] = False  # no other services' addresses in its environment
    container = spec["containers"][0]
    container["name"] = CONTAINER
    container["command"] = list(POD_COMMAND)
    for key in ("args", "ports", "lifecycle", "volumeMounts", "envFrom", "workingDir"):
        container.pop(key, None)
    container["env"] = [
        {"name": "HUBML_GATE_URL", "value": gate_url},
        {"name": "HUBML_GATE_TOKEN", "value": secret},
        # whose pod this is (the model's own code may read it; it is not a credential)
        {"name": "JUPYTERHUB_USER", "value": username},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    resources = container.setdefault("resources", {})
    memory = f"{memory_mb + POD_OVERHEAD_MB}Mi"
    resources.setdefault("limits", {})["memory"] = memory
    resources.setdefault("requests", {})["memory"] = memory
    labels = {k: v for k, v in pod["metadata"].get("labels", {}).items() if k not in _CHART_LABELS}
    labels.update({"app.kubernetes.io/component": COMPONENT, "hubml.io/gate-id": gate_id})
    annotations = {"hubml.io/user": username, "hubml.io/profile": profile_slug}
    return kube.batch_job(
        settings, job_name(gate_id), pod, labels, annotations, deadline_s=deadline_s, ttl_s=600
    )


def choose_profile(settings, requested: str | None, groups) -> tuple[str | None, str]:
    """The profile a gate pod runs on: the one the candidate's run was made on (its
    ``hubml.profile`` tag) if the publisher may use it, else the catalog's default, else the
    first they may use. ``(None, why)`` when they may use none."""
    groups = set(groups)
    requested_profile = settings.profile(requested) if requested else None
    if requested_profile is not None and requested_profile.allows(groups):
        return requested_profile.slug, f"the run's profile {requested_profile.slug}"
    if settings.default_profile.allows(groups):
        why = f"{requested!r} is not a profile they may use" if requested else "the run names none"
        return settings.default_profile.slug, f"the default profile ({why})"
    usable = [p.slug for p in settings.profiles if p.allows(groups)]
    if usable:
        return usable[0], "the first profile they may use"
    return None, "the publisher may use no profile of the catalog"


def _archive(model_dir: str, into: Path) -> Path:
    """The model directory as an uncompressed tar (models are mostly compressed already)."""
    path = into / "model.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(model_dir, arcname="model")
    return path


@dataclasses.dataclass
class KubeGates:
    """The registry's sandbox on Kubernetes: one Job per probe (``tracking.gate_executor``)."""

    settings: Any
    # where pods reach this service's prefix, e.g. http://hub:8091/services/mlflow/
    service_url: str
    timeout_s: float = 120.0
    memory_mb: int = 4096
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    exchange: GateExchange = dataclasses.field(default_factory=GateExchange)

    def __post_init__(self):
        check_limits(0, self.timeout_s, self.memory_mb)
        if self.memory_mb > MAX_MEMORY_MB:
            raise ValueError(f"memory_mb={self.memory_mb}: at most {MAX_MEMORY_MB}")

    @classmethod
    def from_settings(cls, settings, service_url: str) -> KubeGates:
        return cls(
            settings,
            service_url or cluster_mlflow_url(settings),
            timeout_s=float(settings.tracking.gate_timeout_s),
            memory_mb=int(settings.tracking.gate_memory_mb),
            start_timeout_s=float(settings.tracking.gate_start_timeout_s),
        )

    def probe(
        self, model_dir: str, trials: int, publisher: str, *, profile=None, groups=()
    ) -> GateProbe:
        check_limits(trials, self.timeout_s, self.memory_mb)
        if not Path(model_dir, "MLmodel").is_file():
            return GateProbe(False, "the downloaded model has no MLmodel file")
        slug, why = choose_profile(self.settings, profile, groups)
        if slug is None:
            return GateProbe(False, f"the gate cannot run the model: {why}")
        chosen = self.settings.profile(slug)
        gpu = chosen.gpu_count > 0
        work = Path(tempfile.mkdtemp(prefix="hubml-gate-"))
        started = time.monotonic()
        try:
            archive = _archive(model_dir, work)
            spec = {
                "trials": trials,
                "timeout_s": self.timeout_s,
                "memory_mb": self.memory_mb,
                # CUDA cannot start under RLIMIT_AS: on a GPU profile the container's limit caps it
                "address_cap": not gpu,
                "gpu": gpu,
            }
            gate, secret = self.exchange.open(archive, spec, publisher)
            try:
                run, pod_note = asyncio.run(self._follow(gate, secret, slug, publisher))
            finally:
                self.exchange.close(gate.id)
        finally:
            remove_tree(work)
        probe = verdict(run, trials, self.timeout_s, self.memory_mb, cpu_seconds(self.timeout_s))
        probe.resources.update(
            {"where": f"Kubernetes Job {job_name(gate.id)}", "profile": slug, "profile_why": why}
        )
        if pod_note:
            probe.resources["pod"] = pod_note
        log.info(
            "gate probe of %s for %s in Job %s (profile %s, %s): %s (%.1f s)",
            model_dir,
            publisher,
            job_name(gate.id),
            slug,
            why,
            probe.reason,
            time.monotonic() - started,
        )
        return probe

    def deadline_s(self) -> int:
        return int(self.start_timeout_s + self.timeout_s + REPORT_SLACK_S) + 1

    async def _follow(self, gate: PendingGate, secret: str, slug: str, user: str):
        """Submit the gate's Job, wait for its pod's report (or for Kubernetes to say why
        there will be none), delete the Job: ``(ChildRun, note)``."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        from hubml.extensions.jobs import kube

        namespace = self.settings.kubernetes.namespace
        name = job_name(gate.id)

        def failed(reason: str) -> ChildRun:
            return ChildRun([], b"", None, False, False, 0.0, refused=reason)

        try:
            manifest = await asyncio.to_thread(
                gate_job_manifest,
                self.settings,
                slug,
                user,
                gate.id,
                f"{self.service_url.rstrip('/')}/hubml/gates/{gate.id}/",
                secret,
                memory_mb=self.memory_mb,
                deadline_s=self.deadline_s(),
            )
        except Exception as e:  # the catalog cannot build this user's pod
            log.exception("could not build the gate's Job")
            return failed(f"the gate's Job could not be built: {e}"), None
        try:
            api, _ = await kube.cluster_client()
        except Exception as e:  # no service account, no kubeconfig
            log.error("the gate cannot reach the Kubernetes API: %s", e)
            return failed("the gate cannot reach the Kubernetes API (see the service's log)"), None
        try:
            batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
            try:
                await batch.create_namespaced_job(namespace, manifest)
            except ApiException as e:
                return failed(
                    f"Kubernetes refused the gate's Job ({e.status} {e.reason}): "
                    f"{kube._api_message(e)}"
                ), None
            except Exception as e:  # the API server did not answer
                log.error("could not submit the gate's Job %s: %s", name, e)
                return failed(
                    f"the gate could not reach the Kubernetes API ({type(e).__name__})"
                ), None
            try:
                return await self._wait(gate, batch, core, namespace, name)
            except Exception as e:  # the API server went away, the Job was deleted from outside
                log.warning("lost track of the gate's Job %s: %s", name, e)
                reason = getattr(e, "reason", None) or type(e).__name__
                return failed(f"the gate lost track of its Kubernetes Job ({reason})"), None
            finally:
                try:
                    await batch.delete_namespaced_job(
                        name, namespace, propagation_policy="Background", grace_period_seconds=0
                    )
                except ApiException as e:
                    if e.status != 404:
                        log.warning("could not delete the gate's Job %s: %s", name, e.reason)
        finally:
            await api.close()

    async def _wait(self, gate: PendingGate, batch, core, namespace: str, name: str):
        from hubml.extensions.jobs import kube

        created = time.monotonic()
        next_look = created
        ended_at = None
        while True:
            if gate.done.is_set():
                return gate.result["run"], None
            now = time.monotonic()
            if gate.started is None and now > created + self.start_timeout_s:
                pod = await _pod_of(core, namespace, name)
                waiting = kube._pending(pod) or "no pod started"
                return ChildRun(
                    [],
                    b"",
                    None,
                    False,
                    False,
                    round(now - created, 3),
                    refused=f"the gate's pod did not start within {self.start_timeout_s:g} s: {waiting}",
                ), waiting
            if gate.started is not None and now > gate.started + self.timeout_s + REPORT_SLACK_S:
                # the pod's own watch should have reported at the timeout: it is gone or stuck
                return ChildRun([], b"", None, True, False, round(now - gate.started, 3)), None
            if now >= next_look:
                next_look = now + JOB_POLL_S
                job = await batch.read_namespaced_job(name, namespace)
                if kube._ended(job):
                    # its report may be on the way: give it a moment, then ask Kubernetes why
                    ended_at = ended_at or now
                    if now - ended_at > 2.0:
                        pod = await _pod_of(core, namespace, name)
                        _, error = kube._failure(job, pod)
                        if "OOMKilled" in error:
                            error = (
                                f"the model ran out of memory (cap {self.memory_mb} MiB: the "
                                "gate pod's container was OOMKilled)"
                            )
                        error = error.replace("from the runner", "from the gate's pod")
                        return ChildRun(
                            [],
                            b"",
                            None,
                            "DeadlineExceeded" in error or "timed out" in error,
                            False,
                            round(now - created, 3),
                            refused=error,
                        ), error
            await asyncio.sleep(POLL_S)


async def _pod_of(core, namespace: str, name: str):
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
    return pods.items[0] if pods.items else None


def cluster_mlflow_url(settings) -> str:
    """Where a gate's pod reaches the mlflow service: its port on the hub's Service."""
    from hubml.hub_config.topology import SERVICE_PORTS

    return f"http://{settings.kubernetes.hub_service}:{SERVICE_PORTS['mlflow']}/services/mlflow/"
