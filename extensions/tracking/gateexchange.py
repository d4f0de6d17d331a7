"""The service's side of a gate pod's calls (:mod:`.gatekube`): ``hubml/gates/<id>/...``.

The gates in flight, each with the SHA-256 of its per-gate secret (:class:`GateExchange`), and
the handler a gate's pod calls with that secret (``Authorization: hubml-gate <secret>``):
``GET spec``, ``GET model`` (the model directory as a tar) and ``PUT result`` (how its child ran,
checked field by field: :func:`child_run_from`). A secret opens only its own gate, and only
until its result is in or the service gave up on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from hubml.extensions.common.errors import APIError
from hubml.extensions.common.handlers import ServiceHandler

from .gateverdict import MAX_RESULT_BYTES, MAX_STDERR_BYTES, ChildRun

AUTH_SCHEME = "hubml-gate"
MAX_MESSAGES = 1000


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- what the service keeps about gates in flight ---------------------------------------------


@dataclasses.dataclass
class PendingGate:
    id: str
    secret_hash: str
    archive: Path
    spec: dict[str, Any]
    user: str
    started: float | None = None  # when its pod fetched the spec: its timeout counts from here
    result: dict[str, Any] | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class GateExchange:
    """The gates whose pods may call back, by id; thread-safe (the registry's worker threads
    open and close them, the service's IO loop serves the pods)."""

    def __init__(self):
        self._gates: dict[str, PendingGate] = {}
        self._lock = threading.Lock()

    def open(self, archive: Path, spec: dict, user: str) -> tuple[PendingGate, str]:
        secret = secrets.token_urlsafe(32)
        gate = PendingGate(secrets.token_hex(8), token_hash(secret), archive, spec, user)
        with self._lock:
            self._gates[gate.id] = gate
        return gate, secret

    def close(self, gate_id: str) -> None:
        with self._lock:
            self._gates.pop(gate_id, None)

    def authorized(self, gate_id: str, authorization: str) -> PendingGate:
        """The gate ``authorization`` (the request's header) is the pod's secret for; 403 else."""
        scheme, _, secret = authorization.partition(" ")
        with self._lock:
            gate = self._gates.get(gate_id)
        if (
            gate is None
            or scheme != AUTH_SCHEME
            or not hmac.compare_digest(token_hash(secret), gate.secret_hash)
        ):
            raise APIError(
                403,
                "this endpoint is for a gate's own pod: Authorization: hubml-gate <the gate's "
                "secret>, while the gate runs",
            )
        return gate

    def __len__(self) -> int:
        with self._lock:
            return len(self._gates)


def child_run_from(data: Any) -> ChildRun:
    """A pod's report (``PUT result``) as a :class:`ChildRun`; ``ValueError`` naming the field."""
    if not isinstance(data, dict):
        raise ValueError("the result must be a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise ValueError(f"messages must be a list of at most {MAX_MESSAGES} objects")
    messages = [m for m in messages if isinstance(m, dict)]
    stderr = data.get("stderr", "")
    if not isinstance(stderr, str):
        raise ValueError("stderr must be a string")
    returncode = data.get("returncode")
    if returncode is not None and (isinstance(returncode, bool) or not isinstance(returncode, int)):
        raise ValueError("returncode must be a whole number or null")
    flags = {}
    for key in ("timed_out", "overflow"):
        flags[key] = data.get(key, False)
        if not isinstance(flags[key], bool):
            raise ValueError(f"{key} must be true or false")
    wall_s = data.get("wall_s", 0.0)
    if isinstance(wall_s, bool) or not isinstance(wall_s, int | float) or wall_s < 0:
        raise ValueError("wall_s must be a number of seconds")
    refused = data.get("refused")
    if refused is not None and not isinstance(refused, str):
        raise ValueError("refused must be a string or null")
    return ChildRun(
        messages,
        stderr.encode()[-MAX_STDERR_BYTES:],
        returncode,
        flags["timed_out"],
        flags["overflow"],
        round(float(wall_s), 3),
        refused=refused and refused[:500],
    )


class GatePodHandler(ServiceHandler):
    """``hubml/gates/<id>/(spec|model|result)``: what a gate's pod fetches and sends back.
    Authenticated by the gate's own secret, never by a hub token (the pod has none)."""

    public = True

    def _gate(self, gate_id: str) -> PendingGate:
        gates = self.ctx.registry().gates
        exchange = getattr(gates, "exchange", None)
        if exchange is None:
            raise APIError(404, "gates do not run on Kubernetes here")
        return exchange.authorized(gate_id, self.request.headers.get("Authorization", ""))

    async def get(self, gate_id: str, what: str):
        gate = self._gate(gate_id)
        if what == "spec":
            if gate.started is None:
                gate.started = time.monotonic()
            self.send(gate.spec)
            return
        if what != "model":
            raise APIError(405, f"GET {what}: a gate's pod reads spec and model")
        self.set_header("Content-Type", "application/x-tar")
        self.set_header("Content-Length", str(gate.archive.stat().st_size))
        with open(gate.archive, "rb") as f:
            while chunk := f.read(1 << 20):
                self.write(chunk)
                await self.flush()
        self.finish()

    async def put(self, gate_id: str, what: str):
        gate = self._gate(gate_id)
        if what != "result":
            raise APIError(405, f"PUT {what}: a gate's pod sends its result")
        if gate.result is not None:
            raise APIError(409, "this gate's result is in already")
        if len(self.request.body) > MAX_RESULT_BYTES + 2 * MAX_STDERR_BYTES:
            raise APIError(413, "the result is larger than a gate's result may be")
        try:
            run = child_run_from(json.loads(self.request.body))
        except ValueError as e:
            raise APIError(400, f"bad gate result: {e}") from None
        gate.result = {"run": run}
        gate.done.set()
        self.set_status(204)
        self.finish()


ROUTES = [(r"hubml/gates/([0-9a-f]{16})/(spec|model|result)", GatePodHandler)]
