"""A data dir made by the release before migrations opens after an upgrade, nothing lost: its
jobs with their run history, its apps with their shares, its registry audit log."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.jobsutil import JobsAPI

pytestmark = pytest.mark.integration

PREVIOUS = Path(__file__).resolve().parent.parent / "fixtures" / "release-0.1.0"


def test_a_previous_release_data_dir_opens_with_its_history(tmp_path):
    from tests.hubprocess import start_hub

    (tmp_path / "jobs").mkdir()
    (tmp_path / "apps").mkdir()
    shutil.copy(PREVIOUS / "jobs.db", tmp_path / "jobs" / "jobs.db")
    shutil.copy(PREVIOUS / "apps.db", tmp_path / "apps" / "apps.db")
    hub = start_hub(tmp_path, {"jobs": {"enabled": True}, "apps": {"enabled": True}})
    try:
        alice = JobsAPI(hub, hub.user_token("alice"))
        alice.wait_up()
        [job] = alice("GET", "jobs").json()["jobs"]
        assert job["name"] == "nightly retrain" and job["schedule"] == "0 2 * * *"
        assert job["keep_runs"] == 200  # what the old job did not say: the service's default
        runs = {r["id"]: r for r in alice.runs(job["id"])}
        old = [runs[f"run{i:09d}"]["status"] for i in range(3)]
        assert old == ["succeeded", "failed", "succeeded"]
        # its slots missed since (the fixture's next run is in the past) are caught up or
        # recorded skipped, as for any downtime
        assert all(r["trigger"] == "catch-up" for k, r in runs.items() if not k.startswith("run"))
        headers = {"Authorization": f"token {hub.user_token('alice')}"}
        r = requests.get(hub.at("/services/apps/api/apps/greeter"), headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        app = r.json()
        assert app["status"] == "stopped" and app["description"] == "says hello"
        assert [s["target"] for s in app["shares"]] == ["bob"]
    finally:
        hub.stop()
