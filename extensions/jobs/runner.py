"""One job run: papermill executes the notebook, nbconvert renders it, a result file says how.

The jobs service starts runners in their own session, so a runner outlives a service that is
killed and restarted. Liveness is an exclusive ``flock`` on the run's ``runner.lock``: the
service takes the lock, hands the locked file to the runner (inherited on a cold start, passed
over a Unix socket to a warm spare), and closes its own copy; the lock is free again exactly
when the runner is done with the run: it exited, or (a warm runner) wrote the result, stopped
any kernel and closed the lock. No PID bookkeeping can be fooled by PID reuse, and a service that dies
between claiming a run and handing it over leaves the lock free, so the run is known never to
have started.

Warm spares (``--spare FD``) import papermill and nbconvert ahead of time and wait for a run;
that saves the ~2.5 s of imports that dominate a short notebook's run time. A warm runner goes
back to the service after its run and takes another (up to ``RUNS_PER_RUNNER``), so a queue of
runs does not pay the imports either.

The runner writes, in the run's directory: ``output.ipynb`` (papermill saves it after every
cell, so a killed run keeps its partial output), ``output.html``, ``log`` and, last,
``result.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

# what the runner wants to tell the service when it was stopped from outside
_stop_reason: dict[str, str] = {}


def _children(pid: int) -> list[int]:
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
    for pid in _children(os.getpid()):
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
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(output), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html.write_text(body, encoding="utf-8")


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
        exps = requests.post(f"{base}/experiments/search", json={"max_results": 1000}, headers=headers, timeout=10)
        ids = [e["experiment_id"] for e in exps.json().get("experiments", [])]
        if not ids:
            return None
        found = requests.post(
            f"{base}/runs/search",
            json={"experiment_ids": ids, "filter": f"tags.`hubml.job_run_id` = '{run_id}'", "max_results": 1},
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
    language = (meta.get("kernelspec") or {}).get("language") or (meta.get("language_info") or {}).get("name") or "python"
    try:
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
    print(f"[hubml-jobs] run {spec['run_id']} {status}" + (f": {error}" if error else ""), flush=True)
    return result


def run(spec: dict) -> None:
    """Execute one run, its stdout and stderr going to the run's log, and leave the process as
    it found it (environment, working directory, descriptors, signal handler): a warm runner
    goes on to the next run."""
    run_dir = Path(spec["run_dir"])
    saved_fds, saved_streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    _stop_reason.clear()
    started = time.monotonic()
    log_fd = os.open(run_dir / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    # papermill logs the cells' output (log_output=True) through logging
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)

    def on_term(signum, frame):
        # the service sends SIGTERM to cancel (after writing the cancel file) or as the timeout's
        # backstop; anything else was meant for an earlier run of this runner
        if (run_dir / "cancel").exists():
            _stop("cancelled", "cancelled by request")
        elif time.monotonic() - started >= spec["timeout_s"]:
            _stop("timed_out", f"stopped by the jobs service after {spec['timeout_s']} s")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        os.environ.update(spec["env"])
        os.chdir(spec["cwd"])
        print(f"[hubml-jobs] run {spec['run_id']} of job {spec['job_id']} (pid {os.getpid()})", flush=True)
        try:
            result = execute(spec)
        except BaseException as e:
            result = {"status": "failed", "error": f"runner error: {type(e).__name__}: {e}", "mlflow_run_id": None}
        _write_json(run_dir / "result.json", result)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def _warm_up() -> None:
    import nbconvert  # noqa: F401
    import nbformat  # noqa: F401
    import papermill  # noqa: F401
    import requests  # noqa: F401
    from nbconvert import HTMLExporter

    # the first export loads templates and filters (~0.4 s): do it before a run needs it
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    HTMLExporter().from_notebook_node(nb)


# a warm runner takes this many runs, then makes way for a fresh one
RUNS_PER_RUNNER = 50


def spare(sock_fd: int) -> int:
    """Warm runner: take runs (a JSON spec plus the run's locked lock file) over ``sock_fd``.

    After each run it closes that run's lock (the service sees the run end) and says "ready"
    again; it exits when the service closes the socket (it went away, or has spares enough).
    """
    _warm_up()
    sock = socket.socket(fileno=sock_fd)
    try:
        sock.sendall(b"ready\n")
        for taken in range(1, RUNS_PER_RUNNER + 1):
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 1)
            if not msg or not fds:
                break  # the service went away, or does not need us
            lock_fd = fds[0]  # held for the whole run: it is the run's liveness
            os.set_inheritable(lock_fd, False)
            try:
                spec = json.loads(msg)
                sock.sendall(f"started {os.getpid()}\n".encode())
                run(spec)
                kill_kernels()  # none should be left; none may outlive the run's lock
                if taken < RUNS_PER_RUNNER:
                    sock.sendall(b"ready\n")  # before the lock: the service may queue the next run
            finally:
                os.close(lock_fd)
    except OSError:
        pass  # the service's end of the socket is gone
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter's teardown (~0.3 s with papermill loaded)


# ---------------------------------------------------------------------------------------------
# in a Kubernetes Job's pod: the run comes from the jobs service and its output goes back to it


class _Service:
    """The jobs service's runner endpoints for one run, with the run's secret."""

    def __init__(self):
        import requests

        self.base = os.environ["HUBML_JOBS_URL"].rstrip("/") + f"/api/runs/{os.environ['HUBML_JOB_RUN_ID']}/runner/"
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
                print(f"[hubml-jobs] the service refused {path.name}: {r.status_code} {r.text}", flush=True)


def remote() -> int:
    """Run the run named by the environment (HUBML_JOBS_URL, HUBML_JOB_RUN_ID, HUBML_RUN_TOKEN)."""
    import tempfile

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
    service = _Service()
    r = service.call("GET", "spec")
    if r.status_code != 200:
        print(f"[hubml-jobs] the jobs service refused this run: {r.status_code} {r.text}", flush=True)
        return 1
    spec = r.json()
    work = Path(tempfile.mkdtemp(prefix="hubml-run-"))
    (work / "input.ipynb").write_text(json.dumps(spec.pop("input")), encoding="utf-8")
    home = Path(os.environ.get("HOME") or Path.home())
    cwd = home / Path(spec["notebook"]).parent
    spec.update(run_dir=str(work), input=str(work / "input.ipynb"), cwd=str(cwd if cwd.is_dir() else home))
    os.environ.update(spec["env"])
    os.chdir(spec["cwd"])
    # SIGTERM: the Job was deleted (cancel, or the service's backstop) or the pod evicted
    signal.signal(signal.SIGTERM, lambda *_: _stop("failed", "stopped from outside: the pod was deleted or evicted"))
    print(f"[hubml-jobs] run {spec['run_id']} of job {spec['job_id']} in pod {os.environ.get('HOSTNAME', '?')}", flush=True)

    done = threading.Event()

    def progress():  # the output so far, every 10 s, so a pod that dies keeps some
        sent = 0.0
        while not done.wait(10):
            out = work / "output.ipynb"
            if out.exists() and out.stat().st_mtime > sent:
                sent = out.stat().st_mtime
                with contextlib.suppress(Exception):
                    service.send(out)

    threading.Thread(target=progress, daemon=True).start()
    try:
        result = execute(spec)
    except BaseException as e:
        result = {"status": "failed", "error": f"runner error: {type(e).__name__}: {e}", "mlflow_run_id": None}
    done.set()
    _write_json(work / "result.json", result)
    try:
        for name in ("output.ipynb", "output.html", "result.json"):  # the result last: it ends the run
            service.send(work / name)
    except RuntimeError as e:
        print(f"[hubml-jobs] {e}", flush=True)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubml.extensions.jobs.runner")
    parser.add_argument("--spec", help="cold start: path of the run spec (JSON)")
    parser.add_argument("--lock-fd", type=int, help="inherited, already locked runner.lock")
    parser.add_argument("--spare", type=int, metavar="FD", help="warm spare: wait for a run on this socket")
    parser.add_argument("--remote", action="store_true", help="in a Kubernetes Job: the run comes from the jobs service")
    args = parser.parse_args(argv)
    if args.remote:
        return remote()
    if args.spare is not None:
        return spare(args.spare)
    os.set_inheritable(args.lock_fd, False)
    run(json.loads(Path(args.spec).read_text()))
    # the lock is freed when we exit: exit without the interpreter's teardown (~0.3 s with
    # papermill loaded), so the service sees the run end at once
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
