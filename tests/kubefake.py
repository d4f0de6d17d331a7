"""A stand-in Kubernetes API for the jobs service's kubernetes executor, on 127.0.0.1.

These machines have no cluster, so this serves the few endpoints the executor calls (Jobs:
create, list, read, delete; Pods: list, log) with the Kubernetes API's JSON shapes, behind a
bearer token, for the real ``kubernetes_asyncio`` client. A created Job's "pod" is the
container's real command run as a local process (the image is not pulled: this machine's
Python environment stands in for it), with the container's env, ``HOME`` at the user's home
(standing in for their volume) and stdout as the pod log. It honours what the executor relies
on: ``activeDeadlineSeconds`` (DeadlineExceeded), ``backoffLimit: 0``, foreground deletion (the
Job stays until its pod has stopped after SIGTERM), and it can kill a pod as the kernel's OOM
killer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
from tornado import web

TOKEN = "fake-cluster-token-" + secrets.token_hex(8)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Pod:
    def __init__(self, cluster: FakeCluster, job: dict):
        self.cluster = cluster
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        self.container = template["spec"]["containers"][0]
        self.grace = template["spec"].get("terminationGracePeriodSeconds", 30)
        self.obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{secrets.token_hex(3)}",
                "namespace": job["metadata"]["namespace"],
                "creationTimestamp": _now(),
                "uid": str(uuid.uuid4()),
                "labels": {
                    **template["metadata"].get("labels", {}),
                    "job-name": name,
                    "batch.kubernetes.io/job-name": name,
                },
            },
            "spec": template["spec"],
            "status": {
                "phase": "Running",
                "containerStatuses": [self._container_status({"running": {"startedAt": _now()}})],
            },
        }
        env = {e["name"]: e["value"] for e in self.container.get("env", []) if "value" in e}
        user = env.get("JUPYTERHUB_USER", "jovyan")
        home = cluster.homes / user
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            HOME=str(home),
            HOSTNAME=self.obj["metadata"]["name"],
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.log_path = cluster.logs / f"{self.obj['metadata']['name']}.log"
        self.log_path.touch()
        self.tree: set[psutil.Process] = set()
        self.reason: str | None = None  # set when we killed it (OOMKilled, DeadlineExceeded)
        self.proc = None
        if cluster.unschedulable:  # no node fits: the pod waits, nothing runs
            self.obj["status"] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": cluster.unschedulable,
                    }
                ],
            }
            return
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.container["command"], *self.container.get("args", [])],
                env=env,
                cwd=home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _container_status(self, state: dict) -> dict:
        return {
            "name": self.container["name"],
            "image": self.container.get("image", ""),
            "imageID": "",
            "ready": "running" in state,
            "restartCount": 0,
            "state": state,
        }

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_tree(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self.tree |= {
                psutil.Process(self.proc.pid),
                *psutil.Process(self.proc.pid).children(recursive=True),
            }

    def signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill_all(self) -> None:
        self.remember_tree()
        for p in self.tree:
            with contextlib.suppress(psutil.Error):
                p.kill()

    def ended(self, rc: int) -> None:
        reason = self.reason or ("Completed" if rc == 0 else "Error")
        self.obj["status"] = {
            "phase": "Succeeded" if rc == 0 else "Failed",
            "containerStatuses": [
                self._container_status(
                    {
                        "terminated": {
                            "exitCode": rc if rc >= 0 else 128 - rc,
                            "reason": reason,
                            "finishedAt": _now(),
                        }
                    }
                )
            ],
        }


class FakeCluster:
    def __init__(self, homes: Path, workdir: Path):
        self.homes = Path(homes)
        self.logs = Path(workdir) / "pod-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = Path(workdir) / "kubeconfig"
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: dict[str, Pod] = {}  # by job name
        self.deadlines: dict[str, float] = {}
        self.stopping: dict[str, float] = {}  # job name -> when to SIGKILL its pod
        self.created: list[dict] = []  # every Job manifest as submitted
        self.requests: list[tuple[str, str]] = []
        self.unschedulable: str | None = None  # set: new pods stay Pending with this message
        self.refuse: tuple[int, str, str] | None = None  # set: Job creation fails with this Status
        self.lock = threading.RLock()
        self.port = None
        self._loop = None
        self._ready = threading.Event()

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> FakeCluster:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "fake", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        app = web.Application(
            [
                (r"/apis/batch/v1/namespaces/([^/]+)/jobs", JobsHandler, {"cluster": self}),
                (r"/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)", JobHandler, {"cluster": self}),
                (r"/api/v1/namespaces/([^/]+)/pods", PodsHandler, {"cluster": self}),
                (r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", PodLogHandler, {"cluster": self}),
            ]
        )
        server = app.listen(0, address="127.0.0.1")
        self.port = next(iter(server._sockets.values())).getsockname()[1]
        self._server = server

        async def kubelet():
            while True:
                self.step()
                await asyncio.sleep(0.1)

        loop.create_task(kubelet())
        self._ready.set()
        loop.run_forever()

    def stop(self) -> None:
        with self.lock:
            for pod in self.pods.values():
                pod.kill_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._server.stop)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- what a kubelet and the job controller would do ----------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        with self.lock:
            for (ns, name), job in list(self.jobs.items()):
                pod = self.pods.get(name)
                if pod is None:
                    continue
                if pod.proc is None:  # pending: only a deadline or a deletion ends it
                    if job["obj"]["metadata"].get("deletionTimestamp"):
                        del self.jobs[(ns, name)]
                        self.pods.pop(name, None)
                    elif (
                        name in self.deadlines and now > self.deadlines[name] and "done" not in job
                    ):
                        job["done"] = True
                        job["obj"]["status"].update(
                            failed=1,
                            conditions=[
                                {
                                    "type": "Failed",
                                    "status": "True",
                                    "reason": "DeadlineExceeded",
                                    "message": "Job was active longer than specified deadline",
                                }
                            ],
                        )
                    continue
                if pod.proc.poll() is None:
                    pod.remember_tree()
                    if name in self.stopping and now > self.stopping[name]:
                        pod.kill_all()
                    elif (
                        name in self.deadlines
                        and now > self.deadlines[name]
                        and "finished" not in job
                    ):
                        pod.reason = "DeadlineExceeded"
                        job["finished"] = "DeadlineExceeded"
                        pod.signal(signal.SIGTERM)
                        self.stopping[name] = now + pod.grace
                    continue
                if "done" not in job:
                    job["done"] = True
                    pod.ended(pod.proc.returncode)
                    for p in pod.tree:  # what the pod's process left behind dies with its pod
                        with contextlib.suppress(psutil.Error):
                            p.kill()
                    status = job["obj"]["status"]
                    status["startTime"] = status.get("startTime") or _now()
                    if job.get("finished") == "DeadlineExceeded":
                        status.update(
                            failed=1,
                            conditions=[
                                {
                                    "type": "Failed",
                                    "status": "True",
                                    "reason": "DeadlineExceeded",
                                    "message": "Job was active longer than specified deadline",
                                }
                            ],
                        )
                    elif pod.proc.returncode == 0:
                        status.update(
                            succeeded=1,
                            completionTime=_now(),
                            conditions=[{"type": "Complete", "status": "True"}],
                        )
                    else:
                        status.update(
                            failed=1,
                            conditions=[
                                {
                                    "type": "Failed",
                                    "status": "True",
                                    "reason": "BackoffLimitExceeded",
                                    "message": "Job has reached the specified backoff limit",
                                }
                            ],
                        )
                if job["obj"]["metadata"].get("deletionTimestamp"):  # foreground deletion completes
                    del self.jobs[(ns, name)]
                    self.pods.pop(name, None)

    # -- for tests -----------------------------------------------------------------------------

    def oom_kill(self, run_id: str) -> None:
        """What the kernel's OOM killer does to a container over its memory limit."""
        with self.lock:
            pod = next(p for n, p in self.pods.items() if n.endswith(run_id))
            pod.reason = "OOMKilled"
            pod.kill_all()

    def pod_env(self, run_id: str) -> dict:
        with self.lock:
            return next(p.env for n, p in self.pods.items() if n.endswith(run_id))

    def job_names(self) -> list[str]:
        with self.lock:
            return [name for (_, name) in self.jobs]

    def calls_and_role(self) -> tuple[set, set]:
        """``(used, allowed)``: the (API group, resource, verb) of every call made to this
        cluster, and what the shipped Role (hub_config/deploy/jobs-rbac.yaml) grants."""
        import re

        import yaml

        rbac = Path(__file__).resolve().parents[1] / "hub_config" / "deploy" / "jobs-rbac.yaml"
        role = next(d for d in yaml.safe_load_all(rbac.read_text()) if d["kind"] == "Role")
        allowed = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        verbs = {"POST": "create", "DELETE": "delete"}
        used = set()
        for method, uri in self.requests:
            m = re.match(r"/apis?/(?:(batch)/)?v1/namespaces/[^/]+/(\w+)(/[^/?]+)?(/log)?", uri)
            assert m, uri
            group, resource, name, sub = m.group(1) or "", m.group(2), m.group(3), m.group(4)
            used.add(
                (group, resource + (sub or ""), verbs.get(method) or ("get" if name else "list"))
            )
        return used, allowed

    def alive_processes(self) -> list[psutil.Process]:
        with self.lock:
            return [p for pod in self.pods.values() for p in pod.tree if p.is_running()]


class _Base(web.RequestHandler):
    def initialize(self, cluster: FakeCluster):
        self.cluster = cluster

    def prepare(self):
        self.cluster.requests.append((self.request.method, self.request.uri))
        if self.request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.fail(401, "Unauthorized", "Unauthorized")

    def fail(self, code: int, reason: str, message: str):
        self.set_status(code)
        self.finish(_status(code, reason, message))
        raise web.Finish()

    def send(self, obj: dict, code: int = 200):
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj))


class JobsHandler(_Base):
    def get(self, ns):
        selector = self.get_argument("labelSelector", "")
        with self.cluster.lock:
            items = [
                j["obj"]
                for (n, _), j in self.cluster.jobs.items()
                if n == ns and _matches(j["obj"]["metadata"].get("labels", {}), selector)
            ]
        self.send({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items})

    def post(self, ns):
        if self.cluster.refuse:
            self.fail(*self.cluster.refuse)
        obj = json.loads(self.request.body)
        name = obj.get("metadata", {}).get("name")
        if obj.get("kind") != "Job" or not name:
            self.fail(422, "Invalid", "a Job with metadata.name is required")
        if obj["metadata"].get("namespace", ns) != ns:
            self.fail(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )
        with self.cluster.lock:
            if (ns, name) in self.cluster.jobs:
                self.fail(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            self.cluster.created.append(json.loads(self.request.body))
            obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
            obj["status"] = {"active": 1, "startTime": _now()}
            job = {"obj": obj}
            self.cluster.jobs[(ns, name)] = job
            self.cluster.pods[name] = Pod(self.cluster, obj)
            deadline = obj["spec"].get("activeDeadlineSeconds")
            if deadline:
                self.cluster.deadlines[name] = time.monotonic() + deadline
        self.send(obj, 201)


class JobHandler(_Base):
    def get(self, ns, name):
        with self.cluster.lock:
            job = self.cluster.jobs.get((ns, name))
        if job is None:
            self.fail(404, "NotFound", f'jobs.batch "{name}" not found')
        self.send(job["obj"])

    def delete(self, ns, name):
        options = json.loads(self.request.body) if self.request.body else {}
        policy = self.get_argument(
            "propagationPolicy", options.get("propagationPolicy", "Background")
        )
        grace = self.get_argument("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        with self.cluster.lock:
            job = self.cluster.jobs.get((ns, name))
            if job is None:
                self.fail(404, "NotFound", f'jobs.batch "{name}" not found')
            pod = self.cluster.pods.get(name)
            if pod is not None and pod.running():
                pod.signal(signal.SIGTERM)
                wait = pod.grace if grace is None else int(grace)
                self.cluster.stopping[name] = min(
                    self.cluster.stopping.get(name, float("inf")), time.monotonic() + wait
                )
            if policy == "Foreground" and pod is not None and pod.running():
                job["obj"]["metadata"].update(
                    deletionTimestamp=_now(), finalizers=["foregroundDeletion"]
                )
            else:
                del self.cluster.jobs[(ns, name)]
                if pod is not None and not pod.running():
                    self.cluster.pods.pop(name, None)
        self.send({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})


class PodsHandler(_Base):
    def get(self, ns):
        selector = self.get_argument("labelSelector", "")
        with self.cluster.lock:
            items = [
                p.obj
                for p in self.cluster.pods.values()
                if p.obj["metadata"]["namespace"] == ns
                and _matches(p.obj["metadata"]["labels"], selector)
            ]
        self.send({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})


class PodLogHandler(_Base):
    def get(self, ns, name):
        with self.cluster.lock:
            pod = next(
                (p for p in self.cluster.pods.values() if p.obj["metadata"]["name"] == name), None
            )
        if pod is None:
            self.fail(404, "NotFound", f'pods "{name}" not found')
        self.set_header("Content-Type", "text/plain")
        self.finish(pod.log_path.read_bytes())
