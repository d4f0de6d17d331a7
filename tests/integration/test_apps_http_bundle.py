"""Apps whose server cannot see the hub's data dir (as on Kubernetes): the launcher fetches its
bundle from the apps service and reports its log and visitors back, with its own server token.
A real hub with ``apps.bundle_delivery: http`` on the local spawner runs that path for real."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_apps import GREETER, Apps, app_get, token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(tmp_path_factory.mktemp("apps-http"), {"apps": {"enabled": True, "bundle_delivery": "http"}})
    try:
        deadline = time.monotonic() + 60
        while Apps(hub, hub.token)("GET", "apps").status_code != 200:
            assert time.monotonic() < deadline, "apps service did not answer"
            time.sleep(0.3)
        yield hub
    finally:
        hub.stop()
        for name in ("greeter2", "broken2"):
            shutil.rmtree(f"/tmp/hubml-app-alice-{name}", ignore_errors=True)


def test_the_app_fetches_its_bundle_and_reports_visitors_and_crashes_through_the_service(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    home = hub.data_dir / "homes" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "greeter.py").write_text(GREETER)
    api = Apps(hub, alice)
    r = api("POST", "apps", json={"name": "greeter2", "source": "greeter.py"})
    assert r.status_code == 201, r.text
    # the server runs from its own copy, fetched over HTTP, not from the hub's data dir
    fetched = Path("/tmp/hubml-app-alice-greeter2")
    assert (fetched / "app.py").read_text() == GREETER
    assert app_get(hub, "/user/alice/app-greeter2/", alice).status_code == 200

    from gradio_client import Client

    client = Client(f"{hub.url}user/alice/app-greeter2/", headers={"Authorization": f"token {alice}"}, verbose=False)
    assert client.predict("Ada", api_name="/greet") == "Hello Ada!"
    deadline = time.monotonic() + 20  # reported every 5 s
    while api("GET", "apps/greeter2").json().get("last_used_by") != "alice":
        assert time.monotonic() < deadline, api("GET", "apps/greeter2").json()
        time.sleep(0.5)
    assert "greeter2 is up" in api("GET", "apps/greeter2/logs").text  # the log came back too

    # the runtime endpoints answer only the owner
    other = Apps(hub, bob)
    assert other("GET", "apps/greeter2/runtime/bundle").status_code == 404
    assert other("PUT", "apps/greeter2/runtime/report", json={"usage": {}, "log": "x"}).status_code == 404

    # a crash at start is reported back before the process ends: the owner sees why
    (home / "broken.py").write_text("import gradio as gr\nraise RuntimeError('weights.bin is missing')\n")
    r = api("POST", "apps", json={"name": "broken2", "source": "broken.py"})
    assert r.status_code == 422, r.text
    assert "RuntimeError: weights.bin is missing" in r.json()["log_tail"]
    assert api("GET", "apps/broken2").status_code == 404
    assert not Path("/tmp/hubml-app-alice-broken2").exists()

    # stopping the app ends its process cleanly: its copy of the bundle goes with it
    assert api("POST", "apps/greeter2/stop").status_code == 200
    deadline = time.monotonic() + 20
    while fetched.exists():
        assert time.monotonic() < deadline, "the fetched bundle was left behind"
        time.sleep(0.2)
    assert requests.get(f"{hub.url}user/alice/app-greeter2/", timeout=10,
                        headers={"Authorization": f"token {alice}"}).status_code != 200
