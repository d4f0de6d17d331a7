"""The REST contract of spawning, against a real hub, proxy and single-user servers."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from hubml.hub_config.gpus import Device, GPULedger, ledger_path
from tests.hubprocess import ROOT, free_port

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-40GB"


def gpu_settings(n_a100=1):
    return {
        "auth": {"groups": {"gpu-users": ["alice", "bob", "dave"]}},
        "gpus": {"inventory": [{"index": i, "model": A100} for i in range(n_a100)]},
    }


def environ_of(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def ledger_of(hub, n=1):
    return GPULedger(ledger_path(hub.data_dir), [Device(i, A100) for i in range(n)])


@pytest.fixture
def hub(hub_factory):
    return hub_factory(gpu_settings(1))


def test_cpu_small_spawns_behind_the_proxy_with_its_profile(hub):
    token = hub.user_token("alice")
    r = hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    pid = hub.server_state("alice")["pid"]
    env = environ_of(pid)
    assert env["HUBML_PROFILE"] == "cpu-small"
    assert env["HUBML_PRICE_PER_HOUR"] == "0.0971"
    assert env["HUBML_GPU"] == "none" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["MEM_LIMIT"] == str(8 * 1024**3)
    assert env["HOME"] == str(hub.data_dir / "homes" / "alice")
    # the server really answers through the proxy
    status = requests.get(
        hub.at("/user/alice/api/status"), headers={"Authorization": f"token {token}"}, timeout=10
    )
    assert status.status_code == 200, status.text


def test_unknown_slug_is_400_and_nothing_runs(hub):
    token = hub.user_token("alice")
    r = hub.spawn("alice", {"profile": "gpu-z9000"}, token=token)
    assert r.status_code == 400
    assert r.json()["message"] == (
        "Unknown profile 'gpu-z9000'. Valid profiles: cpu-small, cpu-large, gpu-t4, gpu-a10g, gpu-a100, gpu-h100."
    )
    assert hub.api("GET", "users/alice").json()["servers"] == {}


def test_profile_of_another_group_is_403(hub):
    token = hub.user_token("carol")  # not in gpu-users
    r = hub.spawn("carol", {"profile": "gpu-a100"}, token=token)
    assert r.status_code == 403
    assert r.json()["message"].startswith(
        "Profile 'gpu-a100' is limited to members of gpu-users; carol may use:"
    )
    assert hub.api("GET", "users/carol").json()["servers"] == {}


def test_busy_gpu_is_refused_with_the_holder_and_alternatives(hub):
    alice = hub.user_token("alice")
    bob = hub.user_token("bob")
    assert hub.spawn("alice", {"profile": "gpu-a100"}, token=alice).status_code in (201, 202)
    hub.wait_ready("alice")
    assert environ_of(hub.server_state("alice")["pid"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert hub.server_state("alice")["gpu_devices"] == [0]

    r = hub.spawn("bob", {"profile": "gpu-a100"}, token=bob)
    assert r.status_code == 409
    assert r.json()["message"] == (
        "Cannot start NVIDIA A100 40GB: no free A100: 1 needed, 0 of 1 free (GPU 0 is in use by "
        "alice's server). Try again when it is released, or choose one of: Small CPU, Large CPU."
    )
    assert (
        hub.api("GET", "users/bob").json()["servers"] == {}
    )  # no silent fallback, nothing half-started
    # a refusal is one line in the hub's log, not a traceback
    lines = hub.log().splitlines()
    at = [i for i, line in enumerate(lines) if "refused (409)" in line]
    assert len(at) == 1 and "alice's server" in lines[at[0]], at
    assert "Traceback" not in lines[at[0] + 1], lines[at[0] : at[0] + 3]

    hub.stop_server("alice")
    assert ledger_of(hub).availability("A100") == (1, 1)
    assert hub.spawn("bob", {"profile": "gpu-a100"}, token=bob).status_code in (201, 202)
    hub.wait_ready("bob")
    assert environ_of(hub.server_state("bob")["pid"])["CUDA_VISIBLE_DEVICES"] == "0"


def test_two_users_never_hold_the_same_gpu(hub_factory):
    hub = hub_factory(gpu_settings(2))
    users = ["alice", "bob", "dave"]
    tokens = {u: hub.user_token(u) for u in users}
    with ThreadPoolExecutor(3) as pool:
        codes = dict(
            zip(
                users,
                pool.map(
                    lambda u: (
                        hub.spawn(
                            u, {"profile": "gpu-a100"}, token=tokens[u], wait=False
                        ).status_code
                    ),
                    users,
                ),
                strict=True,
            )
        )
    winners = [u for u, c in codes.items() if c in (201, 202)]
    assert sorted(codes.values()).count(409) == 1 and len(winners) == 2, codes
    devices = []
    for u in winners:
        hub.wait_ready(u)
        devices.append(environ_of(hub.server_state(u)["pid"])["CUDA_VISIBLE_DEVICES"])
    assert sorted(devices) == ["0", "1"]
    holders = {h["owner"] for h in ledger_of(hub, 2).holdings().values()}
    assert holders == {f"server:{u}/" for u in winners}


def test_a_dead_server_frees_its_gpu_at_once(hub):
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    hub.spawn("alice", {"profile": "gpu-a100"}, token=alice)
    hub.wait_ready("alice")
    os.kill(hub.server_state("alice")["pid"], signal.SIGKILL)
    time.sleep(0.5)
    r = hub.spawn("bob", {"profile": "gpu-a100"}, token=bob)
    assert r.status_code in (201, 202), r.text


def test_hub_restart_leaves_no_gpu_allocated(hub_factory, tmp_path):
    hub = hub_factory(gpu_settings(1))
    hub.spawn("alice", {"profile": "gpu-a100"}, token=hub.user_token("alice"))
    hub.wait_ready("alice")
    assert ledger_of(hub).availability("A100") == (0, 1)
    hub.stop()
    assert ledger_of(hub).availability("A100") == (1, 1)
    again = hub_factory(gpu_settings(1), data_dir=hub.data_dir)  # same data dir, same ledger
    assert again.api("GET", "users/alice").json()["servers"] == {}
    assert again.spawn(
        "bob", {"profile": "gpu-a100"}, token=again.user_token("bob")
    ).status_code in (201, 202)
    again.wait_ready("bob")
    assert again.server_state("bob")["gpu_devices"] == [0]


# the hub dies at the worst moment of a GPU spawn: the server process runs, the ledger still
# names the hub as the holder (the server's PID was never recorded)
CRASH_BEFORE_ATTACH = """
import os, signal
from hubml.hub_config import configure, gpus
configure(c)
def attach(self, owner, pid):
    if owner.startswith("server:"):
        os.kill(os.getpid(), signal.SIGKILL)
gpus.GPULedger.attach = attach
"""


def test_a_hub_killed_while_handing_a_gpu_to_a_server_never_gives_it_twice(hub_factory, tmp_path):
    from hubml.hub_config.gpus import GPUUnavailable, lock_holders

    config = tmp_path / "crash_config.py"
    config.write_text(CRASH_BEFORE_ATTACH)
    hub = hub_factory(gpu_settings(1), config=config)
    data = hub.data_dir
    with contextlib.suppress(requests.RequestException):  # the hub dies answering
        hub.spawn("alice", {"profile": "gpu-a100"}, token=hub.user_token("alice"), wait=False)
    assert hub.proc.wait(30) == -signal.SIGKILL
    (holding,) = ledger_of(hub).holdings().values()
    orphans = lock_holders(holding["lock"])
    try:
        assert holding["owner"] == "server:alice/" and orphans, holding
        assert "CUDA_VISIBLE_DEVICES=0" in Path(f"/proc/{orphans[0]}/environ").read_text()
        # the hub that named itself is gone, the server that uses the device is not: it is kept
        with pytest.raises(GPUUnavailable, match="in use by alice's server"):
            ledger_of(hub).reserve("server:bob/", "A100", 1)

        # the next hub finds the server it had recorded not running, ends the process the
        # killed hub lost, and only then frees the device
        again = hub_factory(gpu_settings(1), data_dir=data)
        assert all(not Path(f"/proc/{p}").exists() for p in orphans), orphans
        assert "an earlier start of server:alice/ that the hub lost" in again.log()
        assert ledger_of(again).availability("A100") == (1, 1)
        assert again.spawn(
            "bob", {"profile": "gpu-a100"}, token=again.user_token("bob")
        ).status_code in (201, 202)
        again.wait_ready("bob")
        pid = again.server_state("bob")["pid"]
        assert environ_of(pid)["CUDA_VISIBLE_DEVICES"] == "0"
        (held,) = ledger_of(again).holdings().values()
        assert held["owner"] == "server:bob/" and lock_holders(held["lock"]) == [pid]
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_progress_tells_what_is_happening(hub):
    token = hub.user_token("alice")
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "r", hub.spawn("alice", {"profile": "gpu-a100"}, token=token, wait=False)
        )
    )
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        server = hub.api("GET", "users/alice").json()["servers"].get("")
        if server:
            break
        time.sleep(0.05)
    messages = []
    with hub.api("GET", "users/alice/server/progress", token=token, stream=True) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    thread.join(60)
    assert "Reserving 1 × A100 (GPU 0)" in messages, messages
    assert "Starting your server" in messages


def test_bad_settings_stop_the_hub_with_one_line(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "profiles:\n  - slug: x\n    display_name: X\n    cpu: {guarantee: 1, limit: 1}\n"
        "    memory: {guarantee: 1G, limit: 1G}\n    gpu: {model: A100, count: -2}\n"
        "    price_per_hour: 1\n    image: i\n"
    )
    env = {
        **os.environ,
        "HUBML_SETTINGS": str(settings),
        "HUBML_DATA_DIR": str(tmp_path / "d"),
        "HUBML_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(ROOT / "jupyterhub_config.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hubml:")]
    assert lines == [
        f"hubml: invalid settings: {settings}:6: profiles[0].gpu.count: must be ≥ 0 (got -2)"
    ]


def test_hubml_up_says_when_the_hub_is_ready(hub_factory):
    hub = hub_factory(extra_env={"HUBML_ANNOUNCE_READY": "1"})
    ready = f"hubml is ready: open http://localhost:{hub.port}/"
    deadline = time.monotonic() + 30
    while ready not in hub.log():
        assert time.monotonic() < deadline, hub.log()[-2000:]
        time.sleep(0.2)
    log = hub.log()
    # said once, after JupyterHub itself is up behind its proxy
    assert log.count(ready) == 1 and log.index("JupyterHub is now running") < log.index(ready)
