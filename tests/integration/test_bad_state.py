"""A service whose store is corrupt stops alone, saying so in one line; the hub keeps working.

JupyterHub stops the whole hub when a managed service exits while the hub starts, so a garbage
header in the jobs database used to take every user's hub down (proxy and the other services
left running, 404 on every URL)."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    data = tmp_path_factory.mktemp("bad-state")
    (data / "jobs").mkdir()
    (data / "jobs" / "jobs.db").write_bytes(b"garbage header!!" + bytes(4080))
    hub = start_hub(data, {"jobs": {"enabled": True}, "apps": {"enabled": True}})
    try:
        yield hub
    finally:
        hub.stop()


def test_a_corrupt_jobs_store_stops_the_jobs_service_alone_with_one_line(hub):
    alice = hub.user_token("alice")
    headers = {"Authorization": f"token {alice}"}
    # the hub and the other services work
    assert hub.api("GET", "users/alice").status_code == 200
    r = requests.get(hub.at("/services/apps/api/apps"), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    # the jobs service says it cannot open its store, and changes nothing
    r = requests.get(hub.at("/services/jobs/api/jobs"), headers=headers, timeout=30)
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert "cannot open its store" in r.json()["message"]
    assert str(hub.data_dir) not in r.text
    r = requests.post(hub.at("/services/jobs/api/jobs"), json={}, headers=headers, timeout=30)
    assert r.status_code == 503
    health = requests.get(hub.at("/services/jobs/hubml/health"), timeout=30)
    assert health.json()["status"] == "store unavailable"
    lines = [line for line in hub.log().splitlines() if "the jobs store" in line]
    assert len(lines) == 1, lines
    assert "jobs.db cannot be opened (file is not a database)" in lines[0]
    assert "restore it from a backup" in lines[0]
    assert (hub.data_dir / "jobs" / "jobs.db").read_bytes().startswith(b"garbage header!!")


def test_a_hub_that_cannot_start_a_service_says_why_and_leaves_no_process(tmp_path):
    """The jobs service's port (pinned in the settings) is taken by another program: the service
    says so in one line, the hub exits, and neither its proxy nor its other services stay."""
    import socket

    from tests.hubprocess import start_hub
    from tests.integration.test_hub_restart import alive, hub_processes

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(RuntimeError, match="hub exited"):
            start_hub(
                tmp_path,
                {"jobs": {"enabled": True}, "hub": {"internal_ports": {"jobs": port}}},
                timeout=90,
            )
        log = (tmp_path / "hub.log").read_text()
        lines = [line for line in log.splitlines() if f"port {port} is taken" in line]
        assert len(lines) == 1 and "hub.internal_ports.jobs" in lines[0], lines
        proxy_pid = (
            int((tmp_path / "proxy.pid").read_text()) if (tmp_path / "proxy.pid").exists() else None
        )
        assert "the hub did not start; stopping its proxy" in log
        deadline = time.monotonic() + 10
        while any(hub_processes(tmp_path).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(hub_processes(tmp_path).values()), hub_processes(tmp_path)
        assert proxy_pid is None or not alive(proxy_pid)
    finally:
        squatter.close()
