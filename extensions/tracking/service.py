"""The ``mlflow`` hub service: a real MLflow tracking server behind JupyterHub authentication.

JupyterHub starts this process as a managed service at ``/services/mlflow/`` (as the platform's
account when the hub is root). It starts ``mlflow server`` on a private loopback port (one
worker, background jobs off, proxied artifact store, answering only requests that carry this
start's secret: :mod:`.internal`) and serves the front door (:mod:`.frontdoor`, its rules in
:mod:`.access`) and the registry API (:mod:`.registry.handlers`) on the service port.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from tornado import httpclient, ioloop

from hubml.extensions.common.app import (
    ServiceContext,
    load_service_settings,
    make_app,
    serve,
    setup_logging,
)
from hubml.hub_config.topology import free_port

from .internal import SECRET_ENV

log = logging.getLogger("hubml.tracking")


def _pdeathsig():
    """Make the child die with us even if we are killed with SIGKILL (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class MLflowServer:
    """The ``mlflow server`` child process, restarted if it dies.

    Store locations travel in its environment (MLflow reads ``MLFLOW_BACKEND_STORE_URI`` and
    ``MLFLOW_ARTIFACTS_DESTINATION``), never on its command line, which every account can read:
    a PostgreSQL URL carries a password.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_destination: str,
        prefix: str,
        workers: int = 1,
        data_dir: Path | None = None,
        warm_spare: bool = False,
    ):
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.prefix = prefix.rstrip("/")
        self.workers = workers
        self.port = free_port()
        self.secret = secrets.token_urlsafe(32)
        self.proc: subprocess.Popen | None = None
        # where the store marker lives (:mod:`.store`); None: no check (tests' own servers)
        self.data_dir = data_dir
        self.refused: str | None = None  # why MLflow is not started: its store is unavailable
        self._store_known = False
        # a pre-imported next server (:mod:`.mlflowspare`), made once this one has settled
        self.warm_spare = warm_spare
        self.spare: subprocess.Popen | None = None
        self._started_at = 0.0
        self.stopped = False  # the service is stopping: the supervisor starts nothing more

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "hubml",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--static-prefix",
            self.prefix,
            "--allowed-hosts",
            f"127.0.0.1:{self.port},localhost:{self.port}",
        ]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "HUBML_"))}
        env.update(
            {
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # no telemetry to MLflow's servers, and no prompt about it in the UI
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
                "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts_destination,
                SECRET_ENV: self.secret,
            }
        )
        return env

    def start(self) -> bool:
        """Start ``mlflow server`` in a process group of its own, unless its store is not the
        one this hub used (``refused`` says why; the front door answers 503)."""
        from . import store

        if self.data_dir is not None:
            try:
                self._store_known = store.check(self.backend_store_uri, self.data_dir)
            except store.StoreUnavailable as e:
                if self.refused != str(e):
                    log.error("%s", e)
                self.refused = str(e)
                return False
        self.refused = None
        log.info(
            "starting mlflow server on %s (backend %s)",
            self.url,
            store.describe(self.backend_store_uri),
        )
        # its own process group: the server and its uvicorn workers stop together, and a
        # worker left behind by a killed server cannot keep the port
        spare, self.spare = self.spare, None
        if spare is not None and spare.poll() is None:
            try:
                spare.stdin.write(b"go\n")
                spare.stdin.flush()
                self.proc = spare
                log.info("the warm spare (pid %s) is the mlflow server now", spare.pid)
            except OSError:
                self._end(spare)
                spare = None
        else:
            spare = None
        if spare is None:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                preexec_fn=_pdeathsig,
                start_new_session=True,
            )
        self._started_at = time.monotonic()
        return True

    # a new spare waits this long after a start, so it never competes with the start for CPU
    SPARE_AFTER_S = 20.0

    def _make_spare(self) -> None:
        if not self.warm_spare or self.spare is not None or not self._store_known:
            return
        if time.monotonic() - self._started_at < self.SPARE_AFTER_S:
            return
        self.spare = subprocess.Popen(
            [sys.executable, "-m", "hubml.extensions.tracking.mlflowspare", *self.command()[3:]],
            env=self.environment(),
            stdin=subprocess.PIPE,
            preexec_fn=_pdeathsig,
            start_new_session=True,
        )

    @staticmethod
    def _end(proc: subprocess.Popen | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_store(self) -> None:
        """Once MLflow has made its tables, note that this hub's data lives there."""
        from . import store

        if self._store_known or self.data_dir is None or not self.alive():
            return
        try:
            if store.check(self.backend_store_uri, self.data_dir):
                store.remember(self.backend_store_uri, self.data_dir)
                self._store_known = True
        except store.StoreUnavailable:
            pass  # the next restart says so

    def kill_group(self, grace_s: float = 5.0) -> None:
        """End every process of the server's group (SIGKILL), waiting up to ``grace_s``."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            self.proc.wait(1)

    def restart_if_dead(self) -> None:
        """The supervisor's tick: a server that died (or never started) is started again,
        after the rest of its process group is gone; never once the service is stopping."""
        if self.stopped:
            return
        if self.alive():
            self.remember_store()
            if self.spare is not None and self.spare.poll() is not None:
                self.spare = None  # it died waiting: make another
            self._make_spare()
            return
        if self.proc is not None:
            log.warning("mlflow server exited with %s; restarting", self.proc.returncode)
            self.kill_group()
            self.proc = None
        self.start()

    def stop(self) -> None:
        self.stopped = True
        self._end(self.spare)
        self.spare = None
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        self.kill_group()


class TrackingContext(ServiceContext):
    """What the handlers share: the private MLflow server, an HTTP client, the registry."""

    def __init__(self, settings, mlflow: MLflowServer, **kw):
        super().__init__("mlflow", settings, **kw)
        self.mlflow = mlflow
        self.http = httpclient.AsyncHTTPClient(max_body_size=2 * 1024**3)
        self._registry = None

    async def mlflow_json(self, method: str, path: str, params: dict | None = None, body=None):
        from .frontdoor import mlflow_json

        return await mlflow_json(self, method, path, params, body)

    def registry(self):
        if self._registry is None:
            from mlflow import MlflowClient

            from .registry import AuditLog, RegistryService, default_audit_url

            audit_url = self.settings.tracking.audit_db_url or default_audit_url(
                self.settings.data_dir / "mlflow"
            )
            client = MlflowClient(tracking_uri=f"{self.mlflow.url}{self.prefix.rstrip('/')}")
            # candidates run as their publishers' accounts (runner service) or in a Job of
            # their own in the cluster, never in here
            gates = make_gates(self.settings)
            self._registry = RegistryService(client, AuditLog(audit_url), gates=gates)
        return self._registry

    def health(self) -> dict:
        state = (
            "up" if self.mlflow.alive() else "store unavailable" if self.mlflow.refused else "down"
        )
        return {**super().health(), "mlflow": state}


def make_gates(settings):
    """The registry's sandbox for candidate models: a Kubernetes Job per probe where the
    settings say so (:mod:`.gatekube`), else a child process (:mod:`.gatesandbox`)."""
    from hubml.hub_config.topology import gates_in_cluster

    if gates_in_cluster(settings):
        from hubml.extensions.common import urls

        from .gatekube import KubeGates

        return KubeGates.from_settings(settings, urls.service_internal_url("mlflow"))
    from .gatesandbox import GateSandbox

    return GateSandbox.from_settings(settings)


def routes() -> list:
    from .frontdoor import FrontDoorHandler
    from .gateexchange import ROUTES as GATE_POD_ROUTES
    from .registry.handlers import ROUTES
    from .registry.pages import PAGE_ROUTES

    return [*ROUTES, *PAGE_ROUTES, *GATE_POD_ROUTES, ("(.*)", FrontDoorHandler)]


def main() -> int:
    setup_logging()
    settings = load_service_settings()
    data = settings.data_dir / "mlflow"
    data.mkdir(parents=True, exist_ok=True)
    tracking = settings.tracking
    backend = tracking.backend_store_uri or f"sqlite:///{data / 'mlflow.db'}"
    artifacts = tracking.artifacts_destination or str(data / "artifacts")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/mlflow/")
    server = MLflowServer(
        backend,
        artifacts,
        prefix,
        workers=tracking.workers,
        data_dir=data,
        warm_spare=tracking.warm_spare,
    )
    # this process's own MLflow client (the registry) talks to the private server with the secret
    os.environ[SECRET_ENV] = server.secret
    server.start()
    ctx = TrackingContext(settings, server)
    app = make_app(ctx, routes(), max_body_size=2 * 1024**3)

    # a cheap check (a poll of its process): a dead server is noticed within a quarter second
    ioloop.PeriodicCallback(server.restart_if_dead, 250).start()
    try:
        serve(app, "mlflow", on_stop=server.stop, max_body_size=2 * 1024**3)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
