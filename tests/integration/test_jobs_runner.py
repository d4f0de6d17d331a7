"""The runner service: each run becomes its owner's account, gets only its own environment and
descriptors, and only the jobs service may ask for runs or stop them.

The runner service (``hubml.extensions.jobs.runnerd``) runs for real; its runners run the real
runner, papermill and kernels. They fetch their run from a small stand-in for the jobs service's
runner endpoints (``GET spec``, ``PUT <file>``), which the end-to-end jobs tests cover for real.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time

import pytest

from hubml.extensions.jobs.runnerd import RunnersClient, socket_path
from hubml.extensions.tracking.gaterun import make_child_env
from hubml.extensions.tracking.gatesandbox import probe_via_runner
from hubml.hub_config import accounts
from hubml.hub_config.settings import load_settings
from tests.accountsutil import as_account
from tests.gaterunutil import live_processes, report_in, save_code_model, save_sklearn_model
from tests.jobsutil import notebook

pytestmark = pytest.mark.integration

ISOLATED = os.geteuid() == 0
PROBE = """
import os, json
files = set()
for fd in os.listdir('/proc/self/fd'):
    try:
        files.add(os.readlink('/proc/self/fd/' + fd))
    except OSError:
        pass
print('SEEN', json.dumps({'uid': os.getuid(), 'who': os.environ.get('WHO'), 'secret': os.environ.get('ONLY_A'),
                          'home': os.environ['HOME'], 'cwd': os.getcwd(), 'files': sorted(files)}))
"""


class StandIn(http.server.BaseHTTPRequestHandler):
    """The jobs service's runner endpoints, for the runs this test hands out."""

    runs: dict = {}
    received: dict = {}

    def do_GET(self):
        run_id = self.path.split("/")[-3]
        spec = self.runs.get(run_id)
        if spec is None or self.headers.get("Authorization") != f"hubml-run secret-{run_id}":
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps(spec).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        run_id, name = self.path.split("/")[-3], self.path.split("/")[-1]
        self.received.setdefault(run_id, {})[name] = self.rfile.read(
            int(self.headers["Content-Length"])
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("runners")
    settings_file = data / "settings.yaml"
    settings_file.write_text("gpus: {inventory: none}\n")
    settings = load_settings(settings_file, environ={"HUBML_DATA_DIR": str(data)})
    if ISOLATED:
        from hubml.hub_config.configurer import prepare_host

        umask = os.umask(0o022)
        try:
            prepare_host(settings)  # the platform account, the data dir's modes (and umask 077)
        finally:
            os.umask(umask)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "HUBML_SETTINGS_JSON": settings.model_dump_json(), "PYTHONUNBUFFERED": "1"}
    log = open(data / "runnerd.log", "wb")  # noqa: SIM115 (the service's output, open while it runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubml.extensions.jobs.runnerd"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    path = socket_path(data)
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (
            data / "runnerd.log"
        ).read_text()
        time.sleep(0.1)
    try:
        yield settings, data, f"http://127.0.0.1:{server.server_port}/", path
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        log.close()


def as_platform(fn):
    """Run ``fn`` with the jobs service's identity (the platform account)."""
    return as_account(accounts.PLATFORM_ACCOUNT if ISOLATED else None, fn)


def start_run(world, user: str, run_id: str, env_extra: dict, cells=(PROBE,)):
    settings, data, jobs_url, path = world
    home = data / "homes" / user
    run_dir = data / "jobs" / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    StandIn.runs[run_id] = {
        "run_id": run_id,
        "job_id": "j",
        "parameters": {},
        "timeout_s": 60,
        "notebook": "nb.ipynb",
        "input": notebook(*cells),
        "env": env_extra,
    }
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "USER": user,
        "HUBML_JOBS_URL": jobs_url,
        "HUBML_JOB_ID": "j",
        "HUBML_JOB_RUN_ID": run_id,
        "HUBML_RUN_TOKEN": f"secret-{run_id}",
    }
    if ISOLATED:  # what the jobs service (the platform account) may open: its own run folders
        platform = pwd.getpwnam(accounts.PLATFORM_ACCOUNT)
        for p in (data / "jobs", data / "jobs" / "runs", run_dir):
            os.chown(p, platform.pw_uid, platform.pw_gid)

    def ask():
        lock = os.open(run_dir / "runner.lock", os.O_RDONLY | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        log = os.open(run_dir / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return RunnersClient(path).start(user, str(home), env, lock, log)
        finally:
            os.close(lock)
            os.close(log)

    answer = as_platform(ask)
    assert "ok" in answer, answer
    return answer["ok"], run_dir


def wait_result(run_id: str, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while "result.json" not in StandIn.received.get(run_id, {}):
        assert time.monotonic() < deadline, f"run {run_id} sent no result"
        time.sleep(0.1)
    return json.loads(StandIn.received[run_id]["result.json"])


def seen(run_id: str) -> dict:
    nb = json.loads(StandIn.received[run_id]["output.ipynb"])
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    return json.loads(text.split("SEEN ", 1)[1])


def test_each_run_is_its_owner_with_its_own_environment_and_nothing_else(world):
    settings, data, _, _ = world
    pid_a, dir_a = start_run(world, "alice", "runa", {"WHO": "alice", "ONLY_A": "alice's token"})
    assert wait_result("runa")["status"] == "succeeded"
    pid_b, dir_b = start_run(world, "bob", "runb", {"WHO": "bob"})
    assert wait_result("runb")["status"] == "succeeded"
    a, b = seen("runa"), seen("runb")
    assert pid_a != pid_b  # a process per run, forked from the warm service
    homes = data / "homes"
    if ISOLATED:
        assert a["uid"] == pwd.getpwnam(accounts.unix_name("alice")).pw_uid
        assert b["uid"] == pwd.getpwnam(accounts.unix_name("bob")).pw_uid != a["uid"]
        assert a["uid"] >= 1000 and b["uid"] >= 1000
    assert a == {
        **a,
        "who": "alice",
        "secret": "alice's token",
        "home": str(homes / "alice"),
        "cwd": str(homes / "alice"),
    }
    # bob's kernel has bob's env, home and folder, and none of alice's
    assert b == {
        **b,
        "who": "bob",
        "secret": None,
        "home": str(homes / "bob"),
        "cwd": str(homes / "bob"),
    }
    # the kernel holds none of the platform's files (not the run's lock): only its own run's log
    platform = [
        f for f in b["files"] if f.startswith(str(data)) and not f.startswith(str(homes / "bob"))
    ]
    assert platform == [str(dir_b / "log")], b["files"]
    log_b = (dir_b / "log").read_text()
    assert "runb" in log_b and "runa" not in log_b  # each run's log is its own


def test_only_the_platform_may_ask_and_never_for_root_or_a_stranger(world):
    settings, data, _, path = world
    if ISOLATED:
        # a user's process cannot even reach the socket (the run folder is root's and the platform's)
        alice = pwd.getpwnam(accounts.unix_name("alice"))
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect({str(path)!r})",
            ],
            # as alice entirely: her uid, her group, no group of root's
            user=alice.pw_uid,
            group=alice.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Permission denied" in probe.stderr
    for user, why in [
        ("../root", "not a hub user name"),
        ("a b", "not a hub user name"),
        ("", "not a hub user name"),
    ]:

        def ask(user=user):
            lock = os.open(os.devnull, os.O_RDONLY)
            log = os.open(os.devnull, os.O_WRONLY)
            try:
                return RunnersClient(path).start(user, str(data / "homes" / user), {}, lock, log)
            finally:
                os.close(lock)
                os.close(log)

        answer = as_platform(ask)
        assert "error" in answer and why in answer["error"], answer
    # a home that is not the user's own is refused too
    answer = as_platform(
        lambda: RunnersClient(path).start(
            "alice", "/root", {}, os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY)
        )
    )
    assert "error" in answer and "starts in" in answer["error"], answer


def test_a_runner_is_signalled_only_by_who_holds_its_lock(world):
    pid, run_dir = start_run(
        world,
        "alice",
        "runc",
        {},
        cells=("print('go', flush=True)", "import time\ntime.sleep(120)"),
    )
    deadline = time.monotonic() + 30
    while "Executing Cell 2" not in (run_dir / "log").read_text():
        assert time.monotonic() < deadline, (run_dir / "log").read_text()
        time.sleep(0.1)
    other = run_dir.parent / "other.lock"
    other.touch()

    def signal_with(lock_path):
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            return RunnersClient(world[3]).signal(pid, "TERM", fd)
        finally:
            os.close(fd)

    assert as_platform(lambda: signal_with(other)) == {
        "ok": False
    }  # not that run's lock: untouched
    assert os.path.exists(f"/proc/{pid}")
    assert as_platform(lambda: signal_with(run_dir / "runner.lock")) == {"ok": True}
    result = wait_result("runc")
    assert result["status"] == "failed" and "stopped from outside" in result["error"]
    # the run is over: its lock is free once the runner has exited (it sends its result first)
    deadline = time.monotonic() + 30
    with open(run_dir / "runner.lock") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the runner's lock is still held"
                time.sleep(0.1)


# -- gate probes: a registry gate's candidate model, run as its publisher's account -----------

GATE_TIMEOUT_S = 5 if ISOLATED else 25  # a fresh interpreter (no warm process) needs ~10 s


def platform_model(world, name: str, predict_body: str | None = None) -> str:
    """A model in the platform's store, owned by the platform account as the mlflow service's
    downloads are."""
    _, data, _, _ = world
    store = data / "mlflow" / "gate-models"
    folder = store / name
    model_dir = (
        save_code_model(folder, predict_body) if predict_body else save_sklearn_model(folder)
    )
    if ISOLATED:
        platform = pwd.getpwnam(accounts.PLATFORM_ACCOUNT)
        for p in [data / "mlflow", store, *store.rglob("*")]:
            os.lchown(p, platform.pw_uid, platform.pw_gid)
    return model_dir


def gate(world, user: str, model_dir: str, trials: int = 3, **kw) -> dict:
    """What the mlflow service (the platform account) gets when it asks for a probe."""
    limits = {"timeout_s": 30, "memory_mb": 1024, **kw}
    answer = as_platform(
        lambda: probe_via_runner(world[3], user, model_dir, trials, **limits).to_dict()
    )
    assert "ok" in answer, answer
    return answer["ok"]


def raw_gate(world, request: dict) -> list[dict]:
    """The runner service's answers to a gate request sent as the platform, to the last."""

    def ask():
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.connect(str(world[3]))
            socket.send_fds(conn, [json.dumps(request).encode()], [out_w, err_w])
            os.close(out_w)
            os.close(err_w)
            conn.settimeout(60)
            answers = [json.loads(conn.recv(65536))]
            while not {"error", "exit"} & set(answers[-1]):
                answers.append(json.loads(conn.recv(65536)))
        os.close(out_r)
        os.close(err_r)
        return answers

    answer = as_platform(ask)
    assert "ok" in answer, answer
    return answer["ok"]


def test_a_gate_probe_runs_as_the_publisher_in_a_private_copy_of_the_model(world):
    _, data, _, _ = world
    # the platform's own copy of the model (only the platform may read it)
    original = data / "mlflow" / "gate-models" / "whoami" / "model" / "MLmodel"
    model_dir = platform_model(
        world,
        "whoami",
        f"""
        import json, os, sys
        seen = {{"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                "cwd": os.getcwd(), "home": os.environ["HOME"], "env": sorted(os.environ)}}
        for key, path in [("platform_copy", {str(original)!r}),
                          ("parent_environ", f"/proc/{{os.getppid()}}/environ")]:
            try:
                with open(path, "rb") as f:
                    seen[key] = "read " + str(len(f.read())) + " bytes"
            except OSError as e:
                seen[key] = type(e).__name__
        print("SEEN " + json.dumps(seen), file=sys.stderr, flush=True)
        return [0] * len(model_input)
        """,
    )
    assert os.path.join(model_dir, "MLmodel") == str(original)

    probe = gate(world, "alice", model_dir)

    assert probe["ok"], probe["reason"]
    seen = report_in(probe["stderr_tail"], "SEEN")
    assert seen["cwd"] == seen["home"] and not seen["cwd"].startswith(str(data))
    assert not os.path.exists(seen["cwd"])  # removed afterwards
    assert seen["env"] == sorted(make_child_env("/x"))
    if ISOLATED:
        alice = pwd.getpwnam(accounts.unix_name("alice"))
        assert (seen["uid"], seen["gid"], seen["groups"]) == (
            alice.pw_uid,
            alice.pw_gid,
            [alice.pw_gid],
        )
        assert probe["resources"]["uid"] == alice.pw_uid
        # neither the platform's files nor its supervisor's (root's) environment
        assert seen["platform_copy"] == "PermissionError"
        assert seen["parent_environ"] == "PermissionError"


def test_a_gate_probe_never_runs_as_root_or_a_system_account(world):
    _, data, _, _ = world
    model_dir = platform_model(world, "plain-refused")
    for user in ("../root", "", "a b", None):
        probe = gate(world, user, model_dir)
        assert not probe["ok"]
        assert probe["reason"].startswith("the runner service refused the gate probe: ")
        assert "not a hub user name" in probe["reason"], probe["reason"]
    if not ISOLATED:
        return
    # a system account with a hubml name (uid < 1000) is nobody's user account
    accounts.ensure_account("hubml-gatesys", data / accounts.RUN_DIR, system=True)
    probe = gate(world, "gatesys", model_dir)
    assert not probe["ok"] and "not a hubml user account" in probe["reason"], probe["reason"]
    # the model is read with the caller's permissions: a folder only root may read is refused
    secret = data / "root-only-model"
    secret.mkdir(mode=0o700, exist_ok=True)
    (secret / "MLmodel").write_text("flavors: {}\n")
    request = {
        "op": "gate",
        "user": "alice",
        "model_dir": str(secret),
        "trials": 1,
        "timeout_s": 30,
        "memory_mb": 1024,
    }
    answers = raw_gate(world, request)
    assert len(answers) == 1 and "PermissionError" in answers[0]["error"], answers
    # limits out of range are refused before anything runs
    answers = raw_gate(world, {**request, "model_dir": model_dir, "memory_mb": 10})
    assert len(answers) == 1 and "memory_mb" in answers[0]["error"], answers


def test_a_gate_probe_is_killed_at_its_timeout_with_its_whole_group(world):
    model_dir = platform_model(
        world,
        "sleeper",
        """
        import json, os, subprocess, sys, time
        helper = subprocess.Popen(["sleep", "1000"])
        pids = {"pid": os.getpid(), "pgid": os.getpgid(0), "helper": helper.pid}
        print("PIDS " + json.dumps(pids), file=sys.stderr, flush=True)
        time.sleep(10**6)
        """,
    )

    probe = gate(world, "alice", model_dir, timeout_s=GATE_TIMEOUT_S)

    assert not probe["ok"]
    assert probe["reason"] == f"predict did not return within {GATE_TIMEOUT_S} s"
    pids = report_in(probe["stderr_tail"], "PIDS")
    assert pids["pgid"] == pids["pid"]
    assert live_processes({pids["pid"], pids["helper"]}, pids["pgid"]) == []


def test_a_gate_probe_is_killed_when_its_caller_hangs_up(world):
    model_dir = platform_model(
        world,
        "hung",
        """
        import json, os, sys, time
        print("PIDS " + json.dumps({"pid": os.getpid()}), file=sys.stderr, flush=True)
        time.sleep(10**6)
        """,
    )
    request = {
        "op": "gate",
        "user": "alice",
        "model_dir": model_dir,
        "trials": 1,
        "timeout_s": 300,
        "memory_mb": 1024,
    }

    def ask_and_hang_up():
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(str(world[3]))
        socket.send_fds(conn, [json.dumps(request).encode()], [out_w, err_w])
        os.close(out_w)
        os.close(err_w)
        conn.settimeout(60)
        started = json.loads(conn.recv(65536))
        stderr = b""
        while b"PIDS " not in stderr or not stderr.endswith(b"\n"):
            chunk = os.read(err_r, 65536)
            assert chunk, stderr
            stderr += chunk
        conn.close()  # the mlflow service gave up (or died): the probe must go
        while os.read(err_r, 65536):  # its group is killed: every write end closes
            pass
        return {"started": started, "stderr": stderr.decode()}

    answer = as_platform(ask_and_hang_up)

    assert "ok" in answer, answer
    pid = report_in(answer["ok"]["stderr"], "PIDS")["pid"]
    assert answer["ok"]["started"] == {"started": pid}
    deadline = time.monotonic() + 10
    while live_processes({pid}, pid):
        assert time.monotonic() < deadline, f"probe {pid} outlived its caller"
        time.sleep(0.1)
