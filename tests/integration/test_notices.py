"""What the hub says about identity and isolation when they are weaker, on real pages."""

from __future__ import annotations

import os

import pytest

from tests.hubprocess import _xsrf

pytestmark = pytest.mark.integration


def page_of(hub, user: str, password: str) -> str:
    s = hub.browser_session()
    form = s.get(f"{hub.url}hub/login", timeout=30)
    r = s.post(
        f"{hub.url}hub/login",
        data={"username": user, "password": password, "_xsrf": _xsrf(form.text)},
        timeout=30,
    )
    assert r.status_code == 200 and "/hub/login" not in r.url, r.text[-500:]
    return s.get(f"{hub.url}hub/home", timeout=30).text


def test_a_shared_trust_domain_is_said_at_start_and_on_every_page(hub_factory):
    hub = hub_factory({"hub": {"isolation": "shared"}})
    notice = "All users share one trust domain"
    assert notice in hub.log()  # at start
    login = hub.session.get(f"{hub.url}hub/login", timeout=30).text
    assert notice in login  # before anyone signs in
    home = page_of(hub, "admin", (hub.data_dir / "admin-password").read_text().strip())
    assert notice in home
    # and it is true: the server runs as the hub's own user
    token = hub.user_token("alice")
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    assert os.stat(f"/proc/{hub.server_state('alice')['pid']}").st_uid == os.getuid()


def test_a_shared_password_is_a_demo_with_no_identity_on_every_page(hub_factory):
    hub = hub_factory({"auth": {"authenticator": "shared-password"}})
    assert "Demo mode, no identity" in hub.session.get(f"{hub.url}hub/login", timeout=30).text
    # anybody who knows the password is anybody: that is what the label says
    assert "Demo mode, no identity" in page_of(hub, "anyone-at-all", hub.password)
