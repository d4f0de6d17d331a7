"""Notebook jobs: hubml's jobs service against jupyter-scheduler 2.12.1, both measured in one run.

Both run the same trivial notebook (a parameters cell and ``x = 1``) and write an ``.ipynb`` and
an HTML output. Measured on each:

* "run now" to a final status: the POST that asks for a run, then polling every 50 ms until the
  run is observed finished; median of ``samples`` sequential runs after one warm-up run. Samples
  alternate between the two and each starts on a quiet machine (hubml's warm runner has
  finished importing; jupyter-scheduler's job processes are gone).
* 20 runs asked for at once, until all 20 are observed finished (hubml: one job with
  ``concurrency: queue`` and the service's default ``max_concurrent_runs: 2``; jupyter-scheduler:
  20 jobs, one process each, no cap).
* scheduled-start delay of a ``* * * * *`` schedule, two slots each, at the same time:
  hubml's ``started_at - scheduled_for``; jupyter-scheduler's job creation and start times
  against the minute it was due (its task runner polls every ``poll_interval`` seconds).

jupyter-scheduler is installed (once) into its own virtualenv under ``.bench-venvs/`` and runs as
a ``jupyter server`` with its own config, data and runtime dirs in a temp dir.
Goals: hubml/jupyter-scheduler run-now ratio <= 0.5x; hubml scheduled start <= 1 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from tests.hubprocess import ROOT, free_port, start_hub
from tests.jobsutil import JobsAPI, notebook, write_notebook

JS_VERSION = "2.12.1"
VENV = ROOT / ".bench-venvs" / "jupyter-scheduler"
NOTEBOOK = "bench.ipynb"
POLL_S = 0.05
QUEUED = 20
ACTIVE = ("queued", "running")
SCHEDULE_WAIT_S = 170  # two "* * * * *" slots, jupyter-scheduler's 10 s poll and the runs


def _ts(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def js_final(job: dict) -> bool:
    """A jupyter-scheduler job has ended. A new job reads STOPPED (the ORM's default) until its
    process marks it IN_PROGRESS, so STOPPED counts only once the job has started."""
    return job["status"] in ("COMPLETED", "FAILED") or (
        job["status"] == "STOPPED" and bool(job.get("start_time"))
    )


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------
# processes we start, and everything they start


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


def _reap(procs: list[psutil.Process], timeout: float = 10) -> None:
    """Terminate what is left of ``procs`` (psutil checks each is still the process we saw)."""
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _idle(procs: list[psutil.Process], window: float = 0.3) -> bool:
    """No CPU used by any of ``procs`` during ``window`` seconds."""

    def cpu():
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    before = cpu()
    time.sleep(window)
    return cpu() == before


# ---------------------------------------------------------------------------------------------
# hubml


class Hubml:
    def __init__(self, tmp: Path):
        self.hub = start_hub(
            tmp / "hub", {"jobs": {"enabled": True}, "tracking": {"enabled": False}}
        )
        self.api = JobsAPI(self.hub, self.hub.user_token("bench"))
        self.api.wait_up(timeout=90)

    def create(self, **body) -> dict:
        return self.api.create(notebook=NOTEBOOK, content=notebook("x = 1", params="n = 0"), **body)

    def runs(self, job_id: str) -> dict[str, dict]:
        return {r["id"]: r for r in self.api.runs(job_id)}

    def post_run(self, job_id: str) -> str:
        r = self.api("POST", f"jobs/{job_id}/runs")
        if r.status_code != 201:
            raise RuntimeError(f"hubml run now: {r.status_code} {r.text}")
        return r.json()["id"]

    def wait_final(
        self, job_id: str, run_ids: list[str], t0: float, timeout: float = 300
    ) -> dict[str, dict]:
        """Poll until every run in ``run_ids`` is final; each gets ``observed_s`` (since ``t0``)."""
        done: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(run_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"hubml runs not finished in {timeout}s: {set(run_ids) - set(done)}"
                )
            runs = self.runs(job_id)
            now = time.perf_counter()
            for rid in run_ids:
                run = runs.get(rid)
                if rid not in done and run and run["status"] not in ACTIVE:
                    if run["status"] != "succeeded":
                        raise RuntimeError(
                            f"hubml run {rid} {run['status']}: {run['error']}\n{self.log(rid)}"
                        )
                    done[rid] = {**run, "observed_s": now - t0}
            if len(done) < len(run_ids):
                time.sleep(POLL_S)
        return done

    def log(self, run_id: str) -> str:
        r = self.api("GET", f"runs/{run_id}/log")
        return r.text if r.status_code == 200 else f"(no log: {r.status_code})"

    def result(self, run: dict) -> dict:
        path = (
            self.hub.data_dir
            / "jobs"
            / "runs"
            / run["owner"]
            / run["job_id"]
            / run["id"]
            / "result.json"
        )
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        return {}

    def run_now(self, job_id: str) -> dict:
        t0 = time.perf_counter()
        rid = self.post_run(job_id)
        run = self.wait_final(job_id, [rid], t0)[rid]
        created, started, finished = (
            _ts(run[k]) for k in ("created_at", "started_at", "finished_at")
        )
        runner = self.result(run).get("runner_seconds")
        return {
            "total_s": run["observed_s"],
            "queued_s": started - created,  # POST to the scheduler claiming the run
            "runner_s": runner,  # papermill + HTML inside the runner
            # hand-over to the runner, its set-up and writing result.json, until the service noticed
            "finish_s": (finished - started - runner) if runner is not None else None,
            "service_s": finished - started,
            "run_id": rid,
        }

    def wait_quiet(self, timeout: float = 20) -> None:
        """Until the runner service has finished importing (no CPU) and no run is going."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            procs = _descendants(self.hub.proc.pid)
            spares = [p for p in procs if "hubml.extensions.jobs.runnerd" in " ".join(_cmdline(p))]
            if spares and _idle(spares):
                return
            time.sleep(0.1)
        print(f"warning: hubml's warm runner not idle after {timeout} s", file=sys.stderr)

    def stop(self) -> None:
        procs = _descendants(self.hub.proc.pid)
        self.hub.stop()
        _reap(procs)


def _status(p: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        return p.status()
    return None


def _cmdline(p: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return p.cmdline()
    return []


# ---------------------------------------------------------------------------------------------
# jupyter-scheduler


def ensure_venv() -> Path:
    """The virtualenv with jupyter-scheduler (created and installed on first use)."""
    python = VENV / "bin" / "python"
    marker = VENV / f".jupyter-scheduler-{JS_VERSION}"
    if not marker.exists():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        print(
            f"installing jupyter-scheduler {JS_VERSION} into {VENV} ...",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"jupyter-scheduler=={JS_VERSION}",
                "jupyter_server",
                "ipykernel",
            ],
            check=True,
        )
        marker.touch()
    return VENV


def js_poll_interval(venv: Path) -> tuple[int | None, str]:
    """TaskRunner's default poll interval, read from the installed source."""
    [path] = venv.glob("lib/python*/site-packages/jupyter_scheduler/task_runner.py")
    m = re.search(
        r"poll_interval\s*=\s*traitlets\.Integer\(\s*default_value=(\d+)", path.read_text()
    )
    return (
        int(m.group(1)) if m else None
    ), "jupyter_scheduler/task_runner.py: BaseTaskRunner.poll_interval"


class JupyterScheduler:
    def __init__(self, tmp: Path):
        venv = ensure_venv()
        self.poll_interval, self.poll_source = js_poll_interval(venv)
        base = tmp / "jupyter-scheduler"
        root = base / "root"
        write_notebook(root, NOTEBOOK, "x = 1", params="n = 0")
        port, self.token = free_port(), secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{port}/"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "JPY_"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        }
        env.update(
            PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "/usr/bin:/bin")]),
            VIRTUAL_ENV=str(venv),
            JUPYTER_CONFIG_DIR=str(base / "config"),
            JUPYTER_DATA_DIR=str(base / "data"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            IPYTHONDIR=str(base / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        self.log_path = base / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(venv / "bin" / "jupyter"),
                    "server",
                    "--no-browser",
                    "--allow-root",
                    "--ServerApp.ip=127.0.0.1",
                    f"--ServerApp.port={port}",
                    "--ServerApp.port_retries=0",
                    f"--ServerApp.root_dir={root}",
                    f"--IdentityProvider.token={self.token}",
                    f"--SchedulerApp.db_url=sqlite:///{base / 'scheduler.sqlite'}",
                ],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"
        try:
            self.environment = self._wait_up()
        except BaseException:
            self.stop()
            raise

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.url + path.lstrip("/"), timeout=60, **kw)

    def _wait_up(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter server exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            with contextlib.suppress(requests.ConnectionError):
                r = self("GET", "scheduler/runtime_environments")
                if r.status_code == 200 and r.json():
                    return r.json()[0]["name"]
            time.sleep(0.3)
        raise TimeoutError(f"jupyter-scheduler did not answer in {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def body(self, name: str, **extra) -> dict:
        return {
            "input_uri": NOTEBOOK,
            "input_filename": NOTEBOOK,
            "runtime_environment_name": self.environment,
            "output_formats": ["ipynb", "html"],
            "name": name,
            **extra,
        }

    def post_job(self, name: str) -> str:
        r = self("POST", "scheduler/jobs", json=self.body(name))
        if r.status_code != 200:
            raise RuntimeError(f"jupyter-scheduler create job: {r.status_code} {r.text}")
        return r.json()["job_id"]

    def _check(self, job: dict) -> None:
        if job["status"] != "COMPLETED":
            raise RuntimeError(
                f"jupyter-scheduler job {job['job_id']} {job['status']}: {job.get('status_message')}"
            )

    def run_now(self, name: str) -> dict:
        t0 = time.perf_counter()
        job_id = self.post_job(name)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = self("GET", f"scheduler/jobs/{job_id}").json()
            if js_final(job):
                total = time.perf_counter() - t0
                self._check(job)
                return {
                    "total_s": total,
                    "queued_s": (job["start_time"] - job["create_time"]) / 1000,
                    "service_s": (job["end_time"] - job["start_time"]) / 1000,
                    "job_id": job_id,
                }
            time.sleep(POLL_S)
        raise TimeoutError(f"jupyter-scheduler job {job_id} not finished")

    def list_jobs(self, **query) -> list[dict]:
        r = self("GET", "scheduler/jobs", params={"max_items": 1000, **query})
        r.raise_for_status()
        return r.json().get("jobs", [])

    def job_processes(self) -> list[psutil.Process]:
        """The server's job processes and kernels (not multiprocessing's resource tracker,
        which lives as long as the server, nor exited ones it has not reaped yet)."""
        return [
            p
            for p in _descendants(self.proc.pid)
            if "resource_tracker" not in " ".join(_cmdline(p))
            and _status(p) != psutil.STATUS_ZOMBIE
        ]

    def wait_quiet(self, timeout: float = 30) -> None:
        """Until the job processes (and their kernels) have exited."""
        deadline = time.monotonic() + timeout
        while self.job_processes():
            if time.monotonic() > deadline:
                print(f"warning: jupyter-scheduler still busy after {timeout} s", file=sys.stderr)
                return
            time.sleep(0.1)

    def stop(self) -> None:
        procs = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _reap(procs)
        self.session.close()


# ---------------------------------------------------------------------------------------------
# the measurements


def queued_hubml(ours: Hubml, job_id: str) -> dict:
    t0 = time.perf_counter()
    ids = [ours.post_run(job_id) for _ in range(QUEUED)]
    posted = time.perf_counter() - t0
    runs = ours.wait_final(job_id, ids, t0)
    return {
        "total_s": max(r["observed_s"] for r in runs.values()),
        "post_s": posted,
        "runner_s_median": _median(ours.result(r).get("runner_seconds") for r in runs.values()),
    }


def queued_js(theirs: JupyterScheduler) -> dict:
    prefix = f"queue{secrets.token_hex(3)}-"
    t0 = time.perf_counter()
    for i in range(QUEUED):
        theirs.post_job(f"{prefix}{i:02d}")
    posted = time.perf_counter() - t0
    deadline = time.monotonic() + 600
    peak = 0
    while time.monotonic() < deadline:
        jobs = theirs.list_jobs(name=prefix)
        peak = max(peak, len(theirs.job_processes()))
        if len(jobs) == QUEUED and all(js_final(j) for j in jobs):
            total = time.perf_counter() - t0
            for j in jobs:
                theirs._check(j)
            return {
                "total_s": total,
                "post_s": posted,
                "peak_processes": peak,
                "service_s_median": _median((j["end_time"] - j["start_time"]) / 1000 for j in jobs),
            }
        time.sleep(POLL_S * 2)
    raise TimeoutError("jupyter-scheduler: 20 jobs not finished in 600 s")


def scheduled(ours: Hubml, theirs: JupyterScheduler) -> dict:
    """Both on ``* * * * *`` at once; two slots each (or what came in SCHEDULE_WAIT_S)."""
    job = ours.create(schedule="* * * * *", name="bench-scheduled", timeout_s=300)
    r = theirs(
        "POST",
        "scheduler/job_definitions",
        json=theirs.body("bench-scheduled", schedule="* * * * *", timezone="UTC"),
    )
    if r.status_code != 200:
        raise RuntimeError(f"jupyter-scheduler create job definition: {r.status_code} {r.text}")
    definition = r.json()["job_definition_id"]
    deadline = time.monotonic() + SCHEDULE_WAIT_S
    try:
        while time.monotonic() < deadline:
            ours_done = [
                r
                for r in ours.api.runs(job["id"])
                if r["trigger"] == "schedule" and r["status"] not in ACTIVE
            ]
            theirs_done = [j for j in theirs.list_jobs(job_definition_id=definition) if js_final(j)]
            if len(ours_done) >= 2 and len(theirs_done) >= 2:
                break
            time.sleep(0.5)
    finally:
        ours.api("PATCH", f"jobs/{job['id']}", json={"paused": True})
        theirs("PATCH", f"scheduler/job_definitions/{definition}", json={"active": False})
    hub_runs = sorted(ours_done, key=lambda r: r["scheduled_for"])[:2]
    for run in hub_runs:
        if run["status"] != "succeeded":
            raise RuntimeError(f"hubml scheduled run {run['id']} {run['status']}: {run['error']}")
    js_jobs = sorted(theirs_done, key=lambda j: j["create_time"])[:2]
    for j in js_jobs:
        theirs._check(j)

    def js_slot(j):  # the minute it was due (it is created within one poll interval of it)
        return j["create_time"] // 60000 * 60000

    return {
        "hubml_start_delay_s": [_ts(r["started_at"]) - _ts(r["scheduled_for"]) for r in hub_runs],
        "hubml_slot_to_done_s": [_ts(r["finished_at"]) - _ts(r["scheduled_for"]) for r in hub_runs],
        "js_create_delay_s": [(j["create_time"] - js_slot(j)) / 1000 for j in js_jobs],
        "js_start_delay_s": [(j["start_time"] - js_slot(j)) / 1000 for j in js_jobs],
        "js_slot_to_done_s": [(j["end_time"] - js_slot(j)) / 1000 for j in js_jobs],
    }


def run(samples: int = 5) -> dict:
    ours = theirs = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ours = Hubml(Path(tmp))
            theirs = JupyterScheduler(Path(tmp))
            # one job for every "run now" and the 20 queued runs; created without a schedule, it
            # runs once at creation: that is the warm-up
            job = ours.create(
                schedule=None, concurrency="queue", name="bench-run-now", timeout_s=300
            )
            ours.wait_final(job["id"], [job["last_run"]["id"]], time.perf_counter())
            theirs.run_now("warm-up")
            hub_samples, js_samples = [], []
            for i in range(samples):
                ours.wait_quiet()
                theirs.wait_quiet()
                hub_samples.append(ours.run_now(job["id"]))
                ours.wait_quiet()
                theirs.wait_quiet()
                js_samples.append(theirs.run_now(f"sample-{i}"))
            ours.wait_quiet()
            theirs.wait_quiet()
            hub_queued = queued_hubml(ours, job["id"])
            ours.wait_quiet()
            theirs.wait_quiet()
            js_queued = queued_js(theirs)
            theirs.wait_quiet()
            ours.wait_quiet()
            sched = scheduled(ours, theirs)
        finally:
            for server in (ours, theirs):
                if server is not None:
                    server.stop()
    result = {
        "hubml_median_s": _median(s["total_s"] for s in hub_samples),
        "js_median_s": _median(s["total_s"] for s in js_samples),
        "hubml_breakdown_median_s": {
            k: _median(s[k] for s in hub_samples)
            for k in ("queued_s", "runner_s", "finish_s", "service_s")
        },
        "js_breakdown_median_s": {
            k: _median(s[k] for s in js_samples) for k in ("queued_s", "service_s")
        },
        "hubml_samples": hub_samples,
        "js_samples": js_samples,
        "hubml_queued": hub_queued,
        "js_queued": js_queued,
        "scheduled": sched,
        "js_poll_interval_s": theirs.poll_interval,
        "js_poll_interval_source": theirs.poll_source,
    }
    result["ratio"] = result["hubml_median_s"] / result["js_median_s"]
    result["queued_ratio"] = hub_queued["total_s"] / js_queued["total_s"]
    return result


def report(result: dict) -> str:
    def secs(values):
        return ", ".join(f"{v:.2f}" for v in values) or "none"

    hb, jb, s = (
        result["hubml_breakdown_median_s"],
        result["js_breakdown_median_s"],
        result["scheduled"],
    )
    hq, jq = result["hubml_queued"], result["js_queued"]
    late = max(s["hubml_start_delay_s"], default=float("inf"))
    return "\n".join(
        [
            f"notebook jobs, run now -> finished (trivial notebook, poll 50 ms, median of {len(result['hubml_samples'])}):",
            f"  hubml jobs service        {result['hubml_median_s']:.2f} s"
            f"  (POST->claimed {hb['queued_s']:.2f}, runner {hb['runner_s']:.2f},"
            f" hand-over+finish {hb['finish_s']:.2f}; claimed->finished {hb['service_s']:.2f})",
            f"  jupyter-scheduler {JS_VERSION}  {result['js_median_s']:.2f} s"
            f"  (created->started {jb['queued_s']:.2f}, started->completed {jb['service_s']:.2f})",
            f"  ratio hubml/jupyter-scheduler {result['ratio']:.2f}x  (goal <= 0.5x)",
            f"{QUEUED} runs asked for at once -> all finished:",
            f"  hubml (concurrency queue, 2 at a time)   {hq['total_s']:.2f} s",
            f"  jupyter-scheduler (one process each, peak {jq['peak_processes']} processes)  {jq['total_s']:.2f} s",
            f"  ratio hubml/jupyter-scheduler {result['queued_ratio']:.2f}x",
            "scheduled start, '* * * * *', seconds after the slot:",
            f"  hubml started_at - scheduled_for   {secs(s['hubml_start_delay_s'])}"
            f"  ({'meets' if late <= 1 else 'misses'} goal <= 1 s); slot -> finished {secs(s['hubml_slot_to_done_s'])}",
            f"  jupyter-scheduler job created {secs(s['js_create_delay_s'])}, started {secs(s['js_start_delay_s'])},"
            f" completed {secs(s['js_slot_to_done_s'])}"
            f"  (task runner polls every {result['js_poll_interval_s']} s: {result['js_poll_interval_source']})",
        ]
    )
