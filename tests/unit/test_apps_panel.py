"""The apps panel's logic with a stand-in for the apps service (the real one: integration and
browser tiers)."""

from __future__ import annotations

import time

from hubml.widgets.apps import AppsAPIError, AppsPanel, apps_html


class FakeApps:
    def __init__(self):
        self.calls, self.fail = [], None
        self.listing = {"apps": [], "shared_with_me": []}

    def request(self, method, path, body=None):
        self.calls.append((method, path, body))
        if self.fail and method != "GET":
            raise self.fail
        if path == "apps" and method == "GET":
            return self.listing
        if path == "apps":
            return {
                "name": body["name"],
                "url": f"http://alice.localhost:8000/user/alice/app-{body['name']}/",
                "status": "running",
            }
        if path.endswith("/shares"):
            return {"shares": [{"id": 1, "kind": "user", "target": u} for u in body["users"]]}
        return {}


def panel_with(fake) -> AppsPanel:
    panel = AppsPanel(source="app.py", name="demo", client=fake)
    deadline = time.monotonic() + 5
    while ("GET", "apps", None) not in fake.calls:  # the first listing loads in the background
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return panel


def test_publish_sends_the_app_read_here_and_share_sends_what_the_user_typed(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text("demo = 1\n")
    (tmp_path / "requirements.txt").write_text("scikit-learn\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    fake = FakeApps()
    panel = panel_with(fake)
    app = panel.publish()
    assert app["url"] == "http://alice.localhost:8000/user/alice/app-demo/"
    files = {"app.py": "demo = 1\n", "requirements.txt": "scikit-learn\n"}
    assert (
        "POST",
        "apps",
        {"name": "demo", "source": "app.py", "model": None, "files": files},
    ) in fake.calls
    assert "hubml-published-link" in panel.status.value
    panel.share_users.value = "bob,  carol "
    panel.expiry_h.value = 2
    panel.share()
    assert (
        "POST",
        "apps/demo/shares",
        {"users": ["bob", "carol"], "groups": [], "expires_in_s": 7200},
    ) in fake.calls


def test_a_file_that_cannot_be_read_is_said_and_nothing_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    fake = FakeApps()
    panel = panel_with(fake)
    assert panel.publish() is None
    assert "Could not read app.py" in panel.status.value
    assert not [c for c in fake.calls if c[0] == "POST"]


def test_a_crash_at_start_shows_the_message_and_the_log_tail(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text("demo = 1\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    fake = FakeApps()
    panel = panel_with(fake)
    fake.fail = AppsAPIError(
        422, "the app 'demo' crashed while starting", "RuntimeError: <weights> missing"
    )
    assert panel.publish() is None
    assert "crashed while starting" in panel.status.value
    assert "RuntimeError: &lt;weights&gt; missing" in panel.status.value  # escaped, shown in full


def test_listing_escapes_names_and_says_who_has_access():
    listing = {
        "apps": [
            {
                "name": "demo",
                "owner": "alice",
                "url": "/user/alice/app-demo/",
                "status": "running",
                "access": {"users": ["bob"], "groups": ["reviewers"]},
                "shares": [{"kind": "link"}],
                "last_used_by": "<b>bob</b>",
                "last_used_at": "2026-11-24T10:00:00Z",
            }
        ],
        "shared_with_me": [
            {"name": "other", "owner": "dan", "url": "/user/dan/app-other/", "status": "stopped"}
        ],
    }
    out = apps_html(listing)
    assert "bob, group reviewers, 1 link(s)" in out and "&lt;b&gt;bob&lt;/b&gt;" in out
    assert "/user/dan/app-other/" in out and "stopped" in out
    assert apps_html({"apps": [], "shared_with_me": []}) == "<i>No apps yet.</i>"


def test_only_gpu_apps_past_their_limit_stop_and_exempt_ones_run_on():
    import datetime as dt
    from types import SimpleNamespace

    from hubml.extensions.apps.lifecycle import past_max_runtime
    from hubml.hub_config.settings import load_settings

    settings = load_settings(None, environ={})  # gpu-a100: 8 h; cpu-small: 12 h
    now = dt.datetime(2026, 12, 3, 12)

    def app(profile, ran_h, name="demo"):
        return SimpleNamespace(
            owner="alice", name=name, profile=profile, started_at=now - dt.timedelta(hours=ran_h)
        )

    assert past_max_runtime(settings, app("gpu-a100", 7.9), now) is None
    reason = past_max_runtime(settings, app("gpu-a100", 8), now)
    assert reason.startswith("stopped after 8 h on NVIDIA A100 40GB") and "exempt" in reason
    assert past_max_runtime(settings, app("cpu-small", 30), now) is None  # CPU apps: idle only
    exempt = settings.model_copy(
        update={"apps": settings.apps.model_copy(update={"runtime_exempt": ["alice/*"]})}
    )
    assert past_max_runtime(exempt, app("gpu-a100", 30), now) is None
    assert past_max_runtime(settings, app("gone-profile", 30), now) is None
