"""What a run's runner gets, wherever it runs: the same protocol on one machine and in a cluster.

A runner never reads the platform's files. It is started (as its owner's Unix account by the
runner service on one machine, as a Kubernetes Job's pod in a cluster) with four values: the
jobs service's URL, the job and run ids and a per-run secret. With the secret it fetches its run
(``GET api/runs/<id>/runner/spec``: the notebook snapshot, parameters, timeout, environment) and
sends back ``output.ipynb`` (while it runs too), ``output.html`` and, last, ``result.json``
(``PUT api/runs/<id>/runner/<file>``). The service keeps only the secret's SHA-256, and accepts
it only while the run is running.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

TOKEN_FILE = "runner-token.sha256"
REMOTE_SPEC = "remote-spec.json"
# env a run's spec carries that is the service's business only
SPEC_FIELDS = ("run_id", "job_id", "parameters", "timeout_s", "notebook")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically, readable by this account only."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def prepare(run_dir: Path, spec: dict, env: dict) -> str:
    """Keep what the runner will fetch (the spec, with the run's environment ``env``) and the
    hash of a new per-run secret in ``run_dir``; returns the secret, for the runner only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    remote = {k: spec[k] for k in SPEC_FIELDS}
    write_private(run_dir / REMOTE_SPEC, json.dumps({**remote, "input": spec["input"], "env": env}))
    write_private(run_dir / TOKEN_FILE, token_hash(token))
    return token
