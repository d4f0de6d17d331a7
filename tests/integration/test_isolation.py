"""One machine, many people: from bob's own kernel nothing of alice's or of the platform's can be
read, reached or changed, and everything of a person's runs as their own account.

As root (CI is root) the hub gives every person a Unix account of their own. Not as root it
cannot, and every page says that all users share one trust domain: that is what is checked then.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import time
from pathlib import Path

import pytest
import requests

from hubml.hub_config import accounts
from hubml.hub_config.gpus import ledger_path
from tests.accountsutil import as_account
from tests.integration.test_apps import GREETER, Apps
from tests.jobsutil import JobsAPI, notebook
from tests.kernelclient import ServerKernel

pytestmark = pytest.mark.integration

ISOLATED = os.geteuid() == 0
A100 = "NVIDIA A100-SXM4-40GB"
UID_APP = (
    "import os\nimport gradio as gr\n\n"
    "def who(_):\n    return str(os.getuid())\n\n"
    "demo = gr.Interface(who, 'text', 'text')\n"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    hub = start_hub(
        tmp_path_factory.mktemp("isolation"),
        {
            "tracking": {"enabled": True},
            "jobs": {"enabled": True},
            "apps": {"enabled": True},
            "auth": {"groups": {"gpu-users": ["alice"]}},
            "gpus": {"inventory": [{"index": 0, "model": A100}]},
        },
    )
    try:
        JobsAPI(hub, hub.token).wait_up()
        wait_for_mlflow(hub, hub.token)
        yield hub
    finally:
        hub.stop()


def processes() -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                out[int(entry)] = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
    return out


def environ_of(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def platform_processes(hub) -> dict[str, int]:
    """The hub's own processes, found as root: hub, proxy, services, the private MLflow server."""
    found = {"hub": hub.proc.pid, "proxy": int((hub.data_dir / "proxy.pid").read_text())}
    data = str(hub.data_dir)
    for pid, cmd in processes().items():
        for name, marker in [
            ("mlflow service", "hubml.extensions.tracking.service"),
            ("jobs service", "hubml.extensions.jobs.service"),
            ("apps service", "hubml.extensions.apps.service"),
            ("policy service", "hubml.hub_config.policy"),
            ("runner service", "hubml.extensions.jobs.runnerd"),
            ("mlflow server", "mlflow server --app-name hubml"),
            ("mlflow uvicorn", "uvicorn --log-config"),
        ]:
            if marker in cmd:
                try:
                    if environ_of(pid).get("HUBML_DATA_DIR", data) == data or name.startswith(
                        "mlflow"
                    ):
                        found.setdefault(name, pid)
                except OSError:
                    pass
    return found


PROBE = """
import json, os, socket, urllib.request
data = json.loads(%r)
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "SUCCEEDED"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"[:160]
def read(p):
    return os.listdir(p) if os.path.isdir(p) else open(p, "rb").read(1)
attempt("read alice's file", lambda: open(data["alice_file"]).read())
attempt("list alice's home", lambda: os.listdir(data["alice_home"]))
attempt("list the homes", lambda: os.listdir(data["homes"]))
for p in data["platform_files"]:
    attempt("read " + p, lambda p=p: read(p))
for name, pid in data["pids"].items():
    attempt(f"environ of {name}", lambda pid=pid: open(f"/proc/{pid}/environ", "rb").read())
    attempt(f"signal {name}", lambda pid=pid: os.kill(pid, 0))
attempt("environ of alice's server", lambda: open(f"/proc/{data['alice_server']}/environ", "rb").read())
attempt("signal alice's server", lambda: os.kill(data["alice_server"], 0))
attempt("memory of alice's kernel", lambda: open(f"/proc/{data['alice_kernel']}/mem", "rb").read(1))
cmdlines = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            cmdlines.append(open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace"))
        except OSError:
            pass
out["cmdlines seen"] = len(cmdlines)
out["secrets on command lines"] = sorted(n for n, s in data["secrets"].items() if any(s in c for c in cmdlines))
base = f"http://127.0.0.1:{data['mlflow_port']}/services/mlflow/api/2.0/mlflow/"
attempt("GET from the private MLflow server", lambda: urllib.request.urlopen(base + "experiments/search?max_results=5", timeout=10).read())
req = urllib.request.Request(base + "runs/delete", data=json.dumps({"run_id": data["alice_run"]}).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
attempt("POST runs/delete of alice's run to the private MLflow server", lambda: urllib.request.urlopen(req, timeout=10).read())
for name in ("app_socket", "inline_socket", "runner_socket"):
    def connect(path=data[name], kind=socket.SOCK_SEQPACKET if name == "runner_socket" else socket.SOCK_STREAM):
        s = socket.socket(socket.AF_UNIX, kind)
        s.connect(path)
    attempt("connect " + name, connect)
attempt("write the GPU ledger", lambda: open(data["ledger"], "w").write("{}"))
attempt("replace the GPU ledger", lambda: os.rename(data["ledger"], data["ledger"] + ".x"))
print("PROBE" + json.dumps(out))
"""


def test_from_bobs_kernel_nothing_of_alice_or_of_the_platform_is_reachable(hub):
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    if not ISOLATED:
        page = hub.admin_session().get(f"{hub.url}hub/home", timeout=30).text
        assert "All users share one trust domain" in page
        assert "All users share one trust domain" in hub.log()
        return
    hub.spawn("alice", {"profile": "gpu-a100"}, token=alice)
    hub.spawn("bob", {"profile": "cpu-small"}, token=bob)
    hub.wait_ready("alice")
    hub.wait_ready("bob")
    ka = ServerKernel(hub, "alice", alice, "mine.ipynb")
    kb = ServerKernel(hub, "bob", bob, "probe.ipynb")
    try:
        # alice's things: a private file, an MLflow run, an inline demo, a published app
        out = ka.execute(
            "import os, mlflow\nopen('secret.txt', 'w').write('alice only')\n"
            "with mlflow.start_run() as r:\n    mlflow.log_param('p', 1)\nprint('RUN', r.info.run_id)\n"
            "from hubml.widgets import try_app\ndemo = try_app(lambda x: x)\n"
            "print('INLINE', demo.hubml_server.path, 'KERNEL', os.getpid())"
        )
        alice_run = re.search(r"RUN (\w+)", out).group(1)
        inline_socket, alice_kernel = re.search(r"INLINE (\S+) KERNEL (\d+)", out).groups()
        apps = Apps(hub, alice)
        r = apps(
            "POST", "apps", json={"name": "who", "source": "who.py", "files": {"app.py": UID_APP}}
        )
        assert r.status_code == 201, r.text
        app_socket = apps("GET", "apps/who/logs").text.split("Gradio on ", 1)[1].split(",", 1)[0]

        procs = platform_processes(hub)
        assert {
            "hub",
            "proxy",
            "mlflow service",
            "jobs service",
            "apps service",
            "policy service",
            "runner service",
            "mlflow server",
        } <= set(procs), procs
        secrets = {
            "admin token": hub.token,
            "cookie secret": (hub.data_dir / "jupyterhub_cookie_secret").read_text().strip(),
            "admin password": (hub.data_dir / "admin-password").read_text().strip(),
            "proxy token": environ_of(procs["proxy"])["CONFIGPROXY_AUTH_TOKEN"],
            "mlflow front door secret": environ_of(procs["mlflow server"])[
                "HUBML_MLFLOW_FRONT_DOOR_SECRET"
            ],
            "alice's server token": environ_of(hub.server_state("alice")["pid"])[
                "JUPYTERHUB_API_TOKEN"
            ],
        }
        for name in ("mlflow service", "jobs service", "apps service", "policy service"):
            secrets[f"{name} token"] = environ_of(procs[name])["JUPYTERHUB_API_TOKEN"]
        bob_home = hub.data_dir / "homes" / "bob"
        platform_files = sorted(
            str(p)
            for p in hub.data_dir.rglob("*")
            if not str(p).startswith(str(hub.data_dir / "homes")) and not p.is_symlink()
        )
        assert (
            len(platform_files) > 20
        )  # databases, secrets, logs, snapshots, the MLflow store, ...
        mlflow_port = int(re.search(r"--port (\d+)", processes()[procs["mlflow server"]]).group(1))
        data = {
            "alice_home": str(hub.data_dir / "homes" / "alice"),
            "alice_file": str(hub.data_dir / "homes" / "alice" / "secret.txt"),
            "homes": str(hub.data_dir / "homes"),
            "platform_files": platform_files,
            "pids": procs,
            "alice_server": hub.server_state("alice")["pid"],
            "alice_kernel": int(alice_kernel),
            "secrets": secrets,
            "mlflow_port": mlflow_port,
            "alice_run": alice_run,
            "app_socket": app_socket,
            "inline_socket": inline_socket,
            "runner_socket": str(hub.data_dir / "run" / "runners.sock"),
            "ledger": str(ledger_path(hub.data_dir)),
        }
        out = kb.execute(PROBE % json.dumps(data), timeout=300)
    finally:
        ka.close()
        kb.close()
    seen = json.loads(out.split("PROBE", 1)[1])
    assert seen.pop("cmdlines seen") > 10  # bob can see who runs what (as on any Linux machine) ...
    assert seen.pop("secrets on command lines") == []  # ... but no secret is on any command line
    succeeded = sorted(k for k, v in seen.items() if v == "SUCCEEDED")
    assert not succeeded, succeeded
    for name, outcome in seen.items():
        if name.startswith(
            ("read ", "list ", "environ", "memory", "connect", "write", "replace", "signal")
        ):
            assert outcome.startswith("PermissionError"), (name, outcome)
    # the private MLflow server answers its front door only
    assert seen["GET from the private MLflow server"] == "HTTPError: HTTP Error 403: Forbidden"
    assert (
        seen["POST runs/delete of alice's run to the private MLflow server"]
        == "HTTPError: HTTP Error 403: Forbidden"
    )
    print(
        f"{len(seen)} attempts from bob's kernel, all refused ({len(platform_files)} platform files)"
    )
    assert bob_home.stat().st_uid == pwd.getpwnam(accounts.unix_name("bob")).pw_uid

    # what alice runs runs as alice: her server, a job run, her app
    alice_uid = pwd.getpwnam(accounts.unix_name("alice")).pw_uid
    assert os.stat(f"/proc/{hub.server_state('alice')['pid']}").st_uid == alice_uid
    jobs = JobsAPI(hub, alice)
    job = jobs.create(
        notebook="uid.ipynb",
        content=notebook("import os\nprint('UID', os.getuid(), os.getgid())"),
        profile="cpu-small",
    )
    [run] = jobs.wait_runs(job["id"])
    out = jobs("GET", f"runs/{run['id']}/output.ipynb").json()
    printed = "".join(
        "".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", [])
    )
    assert f"UID {alice_uid} " in printed, printed
    from gradio_client import Client

    client = Client(
        hub.user_url("alice", "app-who"), headers={"Authorization": f"token {alice}"}, verbose=False
    )
    assert client.predict("?", api_name="/who") == str(alice_uid)
    assert Apps(hub, alice)("DELETE", "apps/who").status_code == 204


def test_services_run_as_the_platform_and_cannot_read_homes(hub):
    alice = hub.user_token("alice")
    if not ISOLATED:
        assert "All users share one trust domain" in hub.log()
        return
    platform = pwd.getpwnam(accounts.PLATFORM_ACCOUNT)
    procs = platform_processes(hub)
    for name in (
        "mlflow service",
        "jobs service",
        "apps service",
        "policy service",
        "mlflow server",
    ):
        assert os.stat(f"/proc/{procs[name]}").st_uid == platform.pw_uid, name
    assert (
        os.stat(f"/proc/{procs['runner service']}").st_uid == 0
    )  # the one that becomes each run's owner
    home = hub.data_dir / "homes" / "alice"
    home.mkdir(exist_ok=True)
    for probe in (lambda: os.listdir(home), lambda: (home / "secret.txt").read_text()):
        assert as_account(accounts.PLATFORM_ACCOUNT, probe)["error"].startswith("PermissionError")
    # and still, a job of a notebook on alice's server runs: it is read from the server itself
    hub.spawn("alice", {"profile": "cpu-small"}, token=alice)
    hub.wait_ready("alice")
    try:
        r = requests.put(
            hub.user_url("alice") + "api/contents/served.ipynb",
            headers={"Authorization": f"token {alice}"},
            json={"type": "notebook", "content": notebook("print('read from the server')")},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        jobs = JobsAPI(hub, alice)
        job = jobs.create(notebook="served.ipynb", profile="cpu-small")
        [run] = jobs.wait_runs(job["id"])
        assert run["status"] == "succeeded", run
        apps = Apps(hub, alice)
        kernel = ServerKernel(hub, "alice", alice, "publish.ipynb")
        try:
            kernel.execute(f"open('greeter.py', 'w').write({GREETER!r})")
        finally:
            kernel.close()
        r = apps("POST", "apps", json={"name": "served", "source": "greeter.py"})
        assert r.status_code == 201, r.text
        assert apps("DELETE", "apps/served").status_code == 204
    finally:
        hub.stop_server("alice")
    deadline = time.monotonic() + 5
    while hub.api("GET", "users/alice").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.1)
