"""The apps panel's logic with a stand-in for the apps service (the real one: integration and
browser tiers)."""

from __future__ import annotations

import time

from hubml.widgets.apps import AppsAPIError, AppsPanel, apps_html


class FakeApps:
    hub_path = ""

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
            return {"name": body["name"], "url": f"/user/alice/app-{body['name']}/", "status": "running"}
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


def test_publish_and_share_send_what_the_user_typed():
    fake = FakeApps()
    panel = panel_with(fake)
    app = panel.publish()
    assert app["url"] == "/user/alice/app-demo/"
    assert ("POST", "apps", {"name": "demo", "source": "app.py", "model": None}) in fake.calls
    assert "hubml-published-link" in panel.status.value
    panel.share_users.value = "bob,  carol "
    panel.expiry_h.value = 2
    panel.share()
    assert ("POST", "apps/demo/shares", {"users": ["bob", "carol"], "groups": [], "expires_in_s": 7200}) in fake.calls


def test_a_crash_at_start_shows_the_message_and_the_log_tail():
    fake = FakeApps()
    panel = panel_with(fake)
    fake.fail = AppsAPIError(422, "the app 'demo' crashed while starting", "RuntimeError: <weights> missing")
    assert panel.publish() is None
    assert "crashed while starting" in panel.status.value
    assert "RuntimeError: &lt;weights&gt; missing" in panel.status.value  # escaped, shown in full


def test_listing_escapes_names_and_says_who_has_access():
    listing = {
        "apps": [{"name": "demo", "owner": "alice", "url": "/user/alice/app-demo/", "status": "running",
                  "access": {"users": ["bob"], "groups": ["reviewers"]}, "shares": [{"kind": "link"}],
                  "last_used_by": "<b>bob</b>", "last_used_at": "2026-11-24T10:00:00Z"}],
        "shared_with_me": [{"name": "other", "owner": "dan", "url": "/user/dan/app-other/", "status": "stopped"}],
    }
    out = apps_html(listing)
    assert "bob, group reviewers, 1 link(s)" in out and "&lt;b&gt;bob&lt;/b&gt;" in out
    assert "/user/dan/app-other/" in out and "stopped" in out
    assert apps_html({"apps": [], "shared_with_me": []}) == "<i>No apps yet.</i>"
