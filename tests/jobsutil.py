"""Helpers for jobs tests and benchmarks: notebooks, the jobs API, waiting.

A job's notebook travels with the request (``content``, as the schedule panel sends it) or is
read from the owner's running server; :func:`put_notebook` saves one through the server's
contents API, as JupyterLab does."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import requests

ACTIVE = ("queued", "running")


def notebook(*cells: str, params: str | None = None) -> dict:
    """A notebook (as JSON); ``params`` becomes the cell tagged ``parameters``."""
    nb_cells = []
    if params is not None:
        nb_cells.append(nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb_cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb = nbformat.v4.new_notebook(cells=nb_cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def put_notebook(hub, user: str, token: str, name: str, nb: dict) -> None:
    """Save ``nb`` as ``name`` in ``user``'s home through their running server."""
    r = requests.put(
        hub.user_url(user) + f"api/contents/{name}",
        json={"type": "notebook", "content": nb},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def write_notebook(home: Path, name: str, *cells: str, params: str | None = None) -> str:
    """A notebook file in ``home`` (for processes that run as its owner, not for services)."""
    home.mkdir(parents=True, exist_ok=True)
    nb = notebook(*cells, params=params)
    path = home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return name


class JobsAPI:
    def __init__(self, hub, token: str):
        self.base = hub.service_url("jobs") + "api/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.base + path.lstrip("/"), timeout=30, **kw)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self("GET", "jobs").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise TimeoutError("the jobs service did not answer")

    def create(self, **body) -> dict:
        r = self("POST", "jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def runs(self, job_id: str) -> list[dict]:
        r = self("GET", f"jobs/{job_id}/runs")
        assert r.status_code == 200, r.text
        return r.json()["runs"]

    def wait_runs(self, job_id: str, count: int = 1, timeout: float = 90) -> list[dict]:
        """Wait until the job has ``count`` runs and none is active; oldest first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(job_id)
            if len(runs) >= count and not any(r["status"] in ACTIVE for r in runs):
                return list(reversed(runs))
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id}: runs still going after {timeout}s: {self.runs(job_id)}")

    def wait_status(self, job_id: str, status: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(job_id):
                if run["status"] == status:
                    return run
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id}: no run reached {status}: {self.runs(job_id)}")
