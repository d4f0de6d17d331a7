"""One job run: papermill executes the notebook, nbconvert renders it, the service gets the result.

A runner runs as the run's owner and never touches the platform's files: it fetches its run from
the jobs service and sends the output back (:mod:`.remote` describes the protocol). On one
machine the runner service (:mod:`.runnerd`) starts it as the owner's Unix account, forked from a
process that has papermill imported already, with two descriptors: the run's ``runner.lock``
(held for the whole run: the service knows the run is over exactly when the lock is free) and the
run's log. In a cluster it is a Kubernetes Job's pod (``--remote``), and the pod's log is the log.

The runner enforces the run's timeout itself (it stops the kernel and keeps the partial output)
and sends ``output.ipynb`` every few seconds while the notebook runs, so a runner that dies
keeps what it had; ``result.json`` goes last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

# what the runner wants to tell the service when it was stopped from outside
_stop_reason: dict[str, str] = {}


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().decode(errors="replace").rsplit(")", 1)[-1].split()
            if int(fields[1]) == pid:
                kids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def kill_kernels() -> None:
    """Kill the kernel(s) this runner started, with whatever they started (own sessions)."""
    for pid in children(os.getpid()):
        try:
            os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _stop(reason: str, message: str) -> None:
    if not _stop_reason:
        _stop_reason.update(status=reason, error=message)
        print(f"[hubml-jobs] {message}", flush=True)
        kill_kernels()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _render_html(output: Path, html: Path) -> None:
    import nbformat

    from hubml.extensions.common.nbhtml import notebook_html

    nb = nbformat.read(str(output), as_version=4)
    html.write_text(notebook_html(nb), encoding="utf-8")


def _find_mlflow_run(run_id: str) -> str | None:
    """The MLflow run the notebook's plain ``mlflow`` calls made, found by its job-run tag."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN", "")
    if not uri.startswith("http"):
        return None
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = uri.rstrip("/") + "/api/2.0/mlflow"
    try:
        exps = requests.post(
            f"{base}/experiments/search", json={"max_results": 1000}, headers=headers, timeout=10
        )
        ids = [e["experiment_id"] for e in exps.json().get("experiments", [])]
        if not ids:
            return None
        found = requests.post(
            f"{base}/runs/search",
            json={
                "experiment_ids": ids,
                "filter": f"tags.`hubml.job_run_id` = '{run_id}'",
                "max_results": 1,
            },
            headers=headers,
            timeout=10,
        ).json()
    except (requests.RequestException, ValueError) as e:
        print(f"[hubml-jobs] could not look up the MLflow run: {e}", flush=True)
        return None
    found_runs = found.get("runs") or []
    return found_runs[0]["info"]["run_id"] if found_runs else None


def execute(spec: dict) -> dict:
    """Run the notebook described by ``spec``; return the result written to result.json."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir = Path(spec["run_dir"])
    output = run_dir / "output.ipynb"
    started = time.time()
    timer = threading.Timer(
        spec["timeout_s"],
        _stop,
        args=("timed_out", f"timed out after {spec['timeout_s']} s: the kernel was stopped"),
    )
    timer.daemon = True
    timer.start()
    status, error = "succeeded", None
    # notebooks written by tools rather than JupyterLab may not name their kernel or language
    with open(spec["input"], encoding="utf-8") as f:
        meta = json.load(f).get("metadata", {})
    kernel = spec.get("kernel_name") or (meta.get("kernelspec") or {}).get("name") or "python3"
    language = (
        (meta.get("kernelspec") or {}).get("language")
        or (meta.get("language_info") or {}).get("name")
        or "python"
    )
    try:
        with _without_shutdown_interrupt_line():
            papermill.execute_notebook(
                spec["input"],
                str(output),
                parameters=spec["parameters"],
                kernel_name=kernel,
                language=language,
                cwd=spec["cwd"],
                log_output=True,
                progress_bar=False,
                request_save_on_cell_execute=True,
            )
    except PapermillExecutionError as e:
        status = "failed"
        error = f"cell {e.cell_index} (In [{e.exec_count}]) raised {e.ename}: {e.evalue}"
    except BaseException as e:  # a dead kernel, a missing kernel, an unreadable notebook
        status, error = "failed", f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        timer.cancel()
    if _stop_reason:
        status, error = _stop_reason["status"], _stop_reason["error"]
    if output.exists():
        try:
            _render_html(output, run_dir / "output.html")
        except Exception as e:
            print(f"[hubml-jobs] HTML rendering failed: {e}", flush=True)
    mlflow_run_id = _find_mlflow_run(spec["run_id"])
    result = {
        "status": status,
        "error": error,
        "mlflow_run_id": mlflow_run_id,
        "runner_seconds": round(time.time() - started, 3),
    }
    print(
        f"[hubml-jobs] run {spec['run_id']} {status}" + (f": {error}" if error else ""), flush=True
    )
    return result


def warm_up() -> None:
    """Import what a run needs, and render once (templates, filters: ~0.4 s), ahead of runs."""
    import nbconvert  # noqa: F401
    import nbformat  # noqa: F401
    import papermill  # noqa: F401
    import requests  # noqa: F401

    from hubml.extensions.common.nbhtml import notebook_html

    notebook_html(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))


# ---------------------------------------------------------------------------------------------
# the run comes from the jobs service and its output goes back to it


class _Service:
    """The jobs service's runner endpoints for one run, with the run's secret."""

    def __init__(self):
        import requests

        self.base = (
            os.environ["HUBML_JOBS_URL"].rstrip("/")
            + f"/api/runs/{os.environ['HUBML_JOB_RUN_ID']}/runner/"
        )
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"hubml-run {os.environ.pop('HUBML_RUN_TOKEN', '')}"

    def call(self, method: str, name: str, data: bytes | None = None, patience_s: float = 120):
        """One request, retried while the service is unreachable or restarting (5xx)."""
        import requests

        delay, deadline = 1.0, time.monotonic() + patience_s
        while True:
            try:
                r = self.session.request(method, self.base + name, data=data, timeout=60)
                if r.status_code < 500:
                    return r
                problem = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                problem = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the jobs service did not answer {method} {name}: {problem}")
            print(f"[hubml-jobs] {method} {name}: {problem}; retrying in {delay:.0f} s", flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 15)

    def send(self, path: Path) -> None:
        if path.exists():
            r = self.call("PUT", path.name, path.read_bytes())
            if r.status_code != 204:
                print(
                    f"[hubml-jobs] the service refused {path.name}: {r.status_code} {r.text}",
                    flush=True,
                )


# jupyter_client interrupts a kernel before every shutdown request, and ipykernel logs that
# interrupt as an error: every run's log would end in it, succeeded or not
_SHUTDOWN_NOISE = b"KeyboardInterrupt caught in kernel"


@contextlib.contextmanager
def _without_shutdown_interrupt_line():
    """While the notebook runs, this process's stderr (which its kernel inherits) goes through a
    pipe that drops the kernel's line about the shutdown interrupt and passes everything else."""
    sys.stderr.flush()
    read, write = os.pipe()
    real = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb", buffering=0) as lines:
            for line in iter(lines.readline, b""):
                if _SHUTDOWN_NOISE not in line:
                    os.write(real, line)

    pumping = threading.Thread(target=pump, name="hubml-stderr", daemon=True)
    pumping.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe ends once the kernel, which holds a copy, has gone
        pumping.join(10)
        os.close(real)


def remote() -> int:
    """Run the run named by the environment (HUBML_JOBS_URL, HUBML_JOB_RUN_ID, HUBML_RUN_TOKEN)."""
    import shutil
    import tempfile

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
    every = float(os.environ.pop("HUBML_RUN_PROGRESS_S", "") or 10)
    service = _Service()
    r = service.call("GET", "spec")
    if r.status_code != 200:
        print(
            f"[hubml-jobs] the jobs service refused this run: {r.status_code} {r.text}", flush=True
        )
        return 1
    spec = r.json()
    work = Path(tempfile.mkdtemp(prefix="hubml-run-"))  # 0700, this account's
    (work / "input.ipynb").write_text(json.dumps(spec.pop("input")), encoding="utf-8")
    home = Path(os.environ.get("HOME") or Path.home())
    cwd = home / Path(spec["notebook"]).parent
    spec.update(
        run_dir=str(work), input=str(work / "input.ipynb"), cwd=str(cwd if cwd.is_dir() else home)
    )
    os.environ.update(spec["env"])
    os.chdir(spec["cwd"])
    # SIGTERM: cancelled, stopped by the service past the timeout, or the pod was deleted or evicted
    signal.signal(
        signal.SIGTERM,
        lambda *_: _stop(
            "failed", "stopped from outside (cancelled, past its timeout, or its machine went away)"
        ),
    )
    print(
        f"[hubml-jobs] run {spec['run_id']} of job {spec['job_id']} as {os.environ.get('USER', '?')} "
        f"on {os.environ.get('HOSTNAME') or os.uname().nodename} (pid {os.getpid()})",
        flush=True,
    )

    done = threading.Event()

    def progress():  # the output so far, every few seconds, so a runner that dies keeps some
        sent = 0.0
        while not done.wait(every):
            out = work / "output.ipynb"
            if out.exists() and out.stat().st_mtime > sent:
                sent = out.stat().st_mtime
                with contextlib.suppress(Exception):
                    service.send(out)

    threading.Thread(target=progress, daemon=True).start()
    try:
        result = execute(spec)
    except BaseException as e:
        result = {
            "status": "failed",
            "error": f"runner error: {type(e).__name__}: {e}",
            "mlflow_run_id": None,
        }
    done.set()
    _write_json(work / "result.json", result)
    try:
        for name in (
            "output.ipynb",
            "output.html",
            "result.json",
        ):  # the result last: it ends the run
            service.send(work / name)
    except RuntimeError as e:
        print(f"[hubml-jobs] {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubml.extensions.jobs.runner")
    parser.add_argument(
        "--remote",
        action="store_true",
        help="run the run the environment names (HUBML_JOBS_URL, HUBML_JOB_RUN_ID, HUBML_RUN_TOKEN)",
    )
    args = parser.parse_args(argv)
    if not args.remote:
        parser.error("--remote is the only mode: the run comes from the jobs service")
    return remote()


if __name__ == "__main__":
    sys.exit(main())
