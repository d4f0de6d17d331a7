"""Apps on a GPU obey their profile's maximum runtime, as servers do, unless an admin exempts
them; the owner sees why it stopped, and the GPU is free again."""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.test_apps import GREETER, Apps

pytestmark = pytest.mark.integration

A100 = "NVIDIA A100-SXM4-40GB"
PROFILES = [
    {
        "slug": "cpu-small",
        "display_name": "Small CPU",
        "cpu": {"guarantee": 0.5, "limit": 2},
        "memory": {"guarantee": "1G", "limit": "8G"},
        "price_per_hour": 0.0971,
        "image": "hubml/singleuser-cpu:0.1.0",
        "max_runtime": "12h",
        "default": True,
    },
    {
        "slug": "gpu-short",
        "display_name": "NVIDIA A100 (short)",
        "cpu": {"guarantee": 0.5, "limit": 2},
        "memory": {"guarantee": "1G", "limit": "8G"},
        "gpu": {"model": "A100", "count": 1},
        "price_per_hour": 3.67,
        "image": "hubml/singleuser-gpu:0.1.0",
        "max_runtime": "15s",
    },
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(
        tmp_path_factory.mktemp("appruntime"),
        {
            "apps": {"enabled": True, "runtime_exempt": ["alice/kept"]},
            "profiles": PROFILES,
            "gpus": {"inventory": [{"index": 0, "model": A100}, {"index": 1, "model": A100}]},
        },
    )
    try:
        yield hub
    finally:
        hub.stop()


def test_a_gpu_app_past_its_maximum_runtime_is_stopped_and_its_owner_told_why(hub):
    api = Apps(hub, hub.user_token("alice"))
    deadline = time.monotonic() + 60
    while api("GET", "apps").status_code != 200:
        assert time.monotonic() < deadline, "the apps service did not answer"
        time.sleep(0.3)
    for name in ("short", "kept"):
        r = api(
            "POST",
            "apps",
            json={
                "name": name,
                "source": "app.py",
                "files": {"app.py": GREETER},
                "profile": "gpu-short",
            },
        )
        assert r.status_code == 201, r.text
    try:
        deadline = time.monotonic() + 90
        while True:
            apps = {a["name"]: a for a in api("GET", "apps").json()["apps"]}
            if apps["short"]["status"] == "stopped":
                break
            assert time.monotonic() < deadline, apps["short"]
            time.sleep(0.5)
        reason = apps["short"]["stopped_reason"]
        assert reason.startswith("stopped after 15 s on NVIDIA A100 (short)"), reason
        assert "maximum runtime" in reason and "apps.runtime_exempt" in reason
        # the hub's server is gone with it, and its GPU free (the exempt app holds the other)
        assert "app-short" not in hub.api("GET", "users/alice").json()["servers"]
        # the exempt one ran past the limit too, and runs on
        started = apps["kept"]["started_at"]
        assert apps["kept"]["status"] == "running" and started
        time.sleep(6)  # past a sweep (every 5 s) after the limit: absence is the point
        kept = {a["name"]: a for a in api("GET", "apps").json()["apps"]}["kept"]
        assert kept["status"] == "running" and kept["started_at"] == started
        # the owner reads why in the gallery, and can start it again (a fresh runtime)
        gallery = requests.get(hub.service_url("apps"), headers=api.headers, timeout=30)
        assert gallery.status_code == 200 and "stopped after 15 s on NVIDIA A100" in gallery.text
        r = api("POST", "apps/short/start")
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
    finally:
        for name in ("short", "kept"):
            api("DELETE", f"apps/{name}")
