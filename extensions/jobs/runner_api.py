"""The service's side of the runner protocol (:mod:`.remote`): ``api/runs/<id>/runner/<file>``."""

from __future__ import annotations

import hmac
import json
import os
import re
from pathlib import Path

from sqlalchemy import select

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

from .db import runs
from .remote import REMOTE_SPEC, TOKEN_FILE, token_hash


class RunnerHandler(ServiceHandler):
    """What a run's runner fetches and sends back (:mod:`.remote`), on one machine and in a cluster.

    Authenticated by the run's own secret (``Authorization: hubml-run <secret>``), never by a
    hub token: only that run's runner has it, and only while the run is running.
    """

    public = True
    FILES = {"output.ipynb", "output.html", "result.json"}
    STATUSES = {"succeeded", "failed", "timed_out"}

    def _run(self, run_id: str):
        scheme, _, secret = self.request.headers.get("Authorization", "").partition(" ")
        with self.ctx.engine.connect() as conn:
            run = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        path = self.ctx.scheduler.run_dir(run) / TOKEN_FILE if run is not None else None
        expected = path.read_text() if path is not None and path.exists() else ""
        if (
            scheme != "hubml-run"
            or not expected
            or not hmac.compare_digest(token_hash(secret), expected)
        ):
            raise APIError(
                403,
                "this endpoint is for a run's own runner: Authorization: hubml-run <the run's secret>",
            )
        if run.status != "running":
            raise APIError(409, f"run {run_id} is {run.status}, no longer running")
        return run

    async def get(self, run_id, name):
        if name != "spec":
            raise APIError(405, f"GET {name}: only spec can be read here")
        run = self._run(run_id)
        spec = json.loads((self.ctx.scheduler.run_dir(run) / REMOTE_SPEC).read_text())
        spec["input"] = json.loads(Path(spec["input"]).read_text(encoding="utf-8"))
        self.send(spec)

    async def put(self, run_id, name):
        if name not in self.FILES:
            raise APIError(404, f"PUT {name}: a run sends {', '.join(sorted(self.FILES))}")
        run = self._run(run_id)
        body = self.request.body
        if name != "output.html":
            try:
                data = json.loads(body)
            except ValueError as e:
                raise APIError(400, f"{name} is not JSON: {e}") from None
            if name == "output.ipynb" and not (
                isinstance(data, dict) and isinstance(data.get("cells"), list)
            ):
                raise APIError(400, "output.ipynb is not a notebook (no cells)")
            if name == "result.json":
                body = self._result(data)
        run_dir = self.ctx.scheduler.run_dir(run)
        tmp = run_dir / f".{name}.upload"
        tmp.write_bytes(body)
        os.replace(tmp, run_dir / name)
        if name == "result.json":
            self.ctx.scheduler.wake.set()
        self.set_status(204)
        self.finish()

    def _result(self, data) -> bytes:
        if not isinstance(data, dict) or data.get("status") not in self.STATUSES:
            raise APIError(
                400, f"result.json needs status one of {', '.join(sorted(self.STATUSES))}"
            )
        error, mlflow_id = data.get("error"), data.get("mlflow_run_id")
        if not (error is None or isinstance(error, str)) or not (
            mlflow_id is None
            or isinstance(mlflow_id, str)
            and re.fullmatch(r"[0-9A-Za-z_-]{1,64}", mlflow_id)
        ):
            raise APIError(
                400,
                "result.json: error must be a string or null, mlflow_run_id an MLflow run id or null",
            )
        seconds = data.get("runner_seconds")
        if not (
            seconds is None or isinstance(seconds, int | float) and not isinstance(seconds, bool)
        ):
            raise APIError(400, "result.json: runner_seconds must be a number or null")
        return json.dumps(
            {
                "status": data["status"],
                "error": error and error[:4000],
                "mlflow_run_id": mlflow_id,
                "runner_seconds": seconds,
            }
        ).encode()
