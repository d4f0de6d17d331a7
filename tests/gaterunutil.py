"""MLflow models for gate-probe tests (saved to folders, or logged to a tracking server), and
the runner service that runs gate probes as their publishers' accounts.

``save_code_model`` and ``log_code_model`` use MLflow's models-from-code: the model is a source
file copied into the model directory and executed where the model is loaded, so the sandboxed
child needs nothing of the test module. Saving executes the file's top level in the test
process (not ``predict``: passing ``pip_requirements`` spares MLflow's requirement inference,
which would predict), so keep misbehaviour inside ``predict``.
"""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from pathlib import Path

# one double column in, one long per row out
EXAMPLE_ROWS = 3
MODEL_TEMPLATE = """\
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Candidate(PythonModel):
    # the type hints spare a warning that MLflow emits each time the class is defined
    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[int]:
{body}


mlflow.models.set_model(Candidate())
"""


def _code_model(folder: Path, predict_body: str) -> dict:
    """The arguments of ``save_model``/``log_model`` for a models-from-code candidate."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "candidate.py"
    body = textwrap.indent(textwrap.dedent(predict_body).strip("\n"), " " * 8)
    code.write_text(MODEL_TEMPLATE.replace("{body}", body))
    return {
        "python_model": str(code),
        "input_example": pd.DataFrame({"x": [float(i) for i in range(EXAMPLE_ROWS)]}),
        "signature": ModelSignature(Schema([ColSpec("double", "x")]), Schema([ColSpec("long")])),
        "pip_requirements": ["mlflow"],
    }


def save_code_model(folder: Path, predict_body: str) -> str:
    """Save a pyfunc model whose ``predict(self, context, model_input, params)`` runs
    ``predict_body`` (Python source, unindented), with an input example of ``EXAMPLE_ROWS``
    rows and a signature declaring one long output per row; return its directory."""
    import mlflow.pyfunc

    model_dir = folder / "model"
    args = _code_model(folder, predict_body)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        mlflow.pyfunc.save_model(str(model_dir), **args)
    return str(model_dir)


def log_code_model(folder: Path, predict_body: str, *, user: str, accuracy: float = 0.99) -> str:
    """Log such a model as the artifacts ``model/`` of a new run of the current experiment, with
    an ``accuracy`` metric; return the run id. (Saved, then uploaded: ``log_model`` would call
    ``predict`` on the input example to validate it, and a hanging candidate would hang here.)"""
    import mlflow

    model_dir = save_code_model(folder, predict_body)
    with mlflow.start_run(tags={"hubml.user": user}) as run:
        mlflow.log_metric("accuracy", accuracy)
        mlflow.log_artifacts(model_dir, artifact_path="model")
    return run.info.run_id


def save_sklearn_model(folder: Path, rows: int = 5) -> str:
    """A logistic regression on iris with an input example of ``rows`` rows."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    model_dir = folder / "sklearn-model"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        mlflow.sklearn.save_model(
            model, str(model_dir), input_example=X.head(rows), pip_requirements=["scikit-learn"]
        )
    return str(model_dir)


def report_in(stderr: str, tag: str):
    """The JSON a test model printed to stderr as ``<tag> {...}``."""
    lines = [line for line in stderr.splitlines() if line.startswith(tag + " ")]
    assert lines, f"the model printed no {tag} line; its stderr: {stderr[-2000:]}"
    return json.loads(lines[-1].removeprefix(tag + " "))


def live_processes(pids: set[int], pgid: int) -> list[int]:
    """Processes (zombies aside) among ``pids`` or in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if state != "Z" and (int(entry) in pids or int(pgrp) == pgid):
            found.append(int(entry))
    return found


class RunningRunners:
    """A runner service (``hubml.extensions.jobs.runnerd``) on its own data dir."""

    def __init__(self, proc, data_dir: Path, socket: Path):
        self.proc, self.data_dir, self.socket = proc, data_dir, socket

    def log(self) -> str:
        return (self.data_dir / "runnerd.log").read_text(errors="replace")

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_runners(data_dir: Path, timeout: float = 60) -> RunningRunners:
    """The runner service for gate probes only (no warm job runner), as the hub starts it:
    as root, with the data dir's modes and the platform account ``prepare_host`` makes. Its
    warm gate process starts with it (~10 s); probes sent before that wait for it."""
    import subprocess
    import sys
    import time

    from hubml.extensions.jobs.runnerd import socket_path
    from hubml.hub_config.settings import load_settings

    data_dir.mkdir(parents=True, exist_ok=True)
    settings_file = data_dir / "settings.yaml"
    settings_file.write_text("gpus: {inventory: none}\njobs: {warm_runners: 0}\n")
    settings = load_settings(settings_file, environ={"HUBML_DATA_DIR": str(data_dir)})
    if os.geteuid() == 0:
        from hubml.hub_config.configurer import prepare_host

        umask = os.umask(0o022)
        try:
            prepare_host(settings)
        finally:
            os.umask(umask)
    env = {**os.environ, "HUBML_SETTINGS_JSON": settings.model_dump_json(), "PYTHONUNBUFFERED": "1"}
    with open(data_dir / "runnerd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubml.extensions.jobs.runnerd"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    runners = RunningRunners(proc, data_dir, socket_path(data_dir))
    deadline = time.monotonic() + timeout
    while not runners.socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            runners.stop()
            raise RuntimeError(f"the runner service did not start:\n{runners.log()[-3000:]}")
        time.sleep(0.1)
    return runners
