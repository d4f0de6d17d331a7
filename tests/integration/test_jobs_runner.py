"""Warm runners: one runner process takes run after run, and nothing of one run reaches the next."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hubml.extensions.jobs.executor import LocalExecutor, runner_alive
from tests.jobsutil import write_notebook

pytestmark = pytest.mark.integration

CODE = "import os, json\nprint(json.dumps({'pid': os.getppid(), 'cwd': os.getcwd(), 'who': os.environ.get('WHO'), " \
       "'secret': os.environ.get('ONLY_A'), 'home': os.environ['HOME']}))"


def spec(tmp: Path, name: str, env: dict) -> dict:
    home = tmp / "homes" / name
    write_notebook(home, "nb.ipynb", CODE)
    return {"run_id": f"run{name}", "job_id": "job", "run_dir": str(tmp / "runs" / name), "input": str(home / "nb.ipynb"),
            "parameters": {}, "cwd": str(home), "timeout_s": 120, "env": {"HOME": str(home), **env}}


def wait(pred, timeout=60, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def seen(run: dict) -> dict:
    nb = json.loads((Path(run["run_dir"]) / "output.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for o in nb["cells"][0]["outputs"])
    return json.loads(text)


def test_a_warm_runner_takes_the_next_run_with_nothing_left_from_the_last(tmp_path):
    ex = LocalExecutor(warm_spares=1)
    ex.notify = lambda: None
    try:
        ex.maintain()
        wait(lambda: ex.spares[0].poll_ready(), what="the spare never became ready")
        a = spec(tmp_path, "alice", {"WHO": "alice", "ONLY_A": "alice's token"})
        pid_a = ex.launch(a)
        wait(lambda: (Path(a["run_dir"]) / "result.json").exists() and not runner_alive(Path(a["run_dir"])),
             what="run a did not end")
        assert json.loads((Path(a["run_dir"]) / "result.json").read_text())["status"] == "succeeded"
        wait(lambda: (ex.maintain(), ex.spares and ex.spares[0].ready)[1], what="the runner did not come back")

        b = spec(tmp_path, "bob", {"WHO": "bob"})
        pid_b = ex.launch(b)
        assert pid_b == pid_a  # the same warm process: no imports paid again
        wait(lambda: (Path(b["run_dir"]) / "result.json").exists() and not runner_alive(Path(b["run_dir"])),
             what="run b did not end")
        out_a, out_b = seen(a), seen(b)
        assert out_a == {"pid": pid_a, "cwd": a["cwd"], "who": "alice", "secret": "alice's token", "home": a["cwd"]}
        # bob's kernel has bob's env, home and folder, and none of alice's
        assert out_b == {"pid": pid_a, "cwd": b["cwd"], "who": "bob", "secret": None, "home": b["cwd"]}
        log_b = (Path(b["run_dir"]) / "log").read_text()
        assert "runbob" in log_b and "runalice" not in log_b  # each run's log is its own
    finally:
        ex.close()
        for s in ex.busy + ex.spares:
            s.discard()
