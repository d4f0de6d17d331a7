"""Signing in as oneself, in Chromium: a new person signs up with a password of their own, cannot
sign in until an admin approves them, then can; nobody else can sign in under their name."""

import re

import pytest

pytestmark = pytest.mark.browser


def sign_in(page, hub, user, password):
    page.goto(hub.at("/hub/login"))
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state()


def test_sign_up_approval_and_nobody_else_under_that_name(hub_factory, browser, artifacts):
    hub = hub_factory({})
    contexts = [browser.new_context(viewport={"width": 1280, "height": 800}) for _ in range(3)]
    alice, bob, admin = (c.new_page() for c in contexts)
    try:
        # alice signs up at the hub's own page
        alice.goto(hub.at("/hub/signup"))
        alice.fill("#username_input", "alice")
        alice.fill("#password_input", "alices-own-passphrase")
        alice.fill("#password_confirmation_input", "alices-own-passphrase")
        alice.click("#signup_submit")
        alice.get_by_text("Your information has been sent to the admin").wait_for()
        alice.screenshot(path=str(artifacts / "signin-signed-up.png"), full_page=True)

        # not approved yet: her own password does not let her in, and the page says why
        sign_in(alice, hub, "alice", "alices-own-passphrase")
        assert "/hub/login" in alice.url
        alice.get_by_text(
            "alice has signed up, but an admin has not approved the account yet"
        ).wait_for()

        # bob cannot take the name, nor sign in under it
        bob.goto(hub.at("/hub/signup"))
        bob.fill("#username_input", "alice")
        bob.fill("#password_input", "bobs-passphrase-1")
        bob.fill("#password_confirmation_input", "bobs-passphrase-1")
        bob.click("#signup_submit")
        bob.get_by_text(re.compile("username is already in use")).wait_for()

        # the admin, with the password hubml made at first start, approves her (a form, not a link)
        admin_password = (hub.data_dir / "admin-password").read_text().strip()
        sign_in(admin, hub, "admin", admin_password)
        admin.goto(hub.at("/hub/authorize"))
        admin.locator("tr#alice a", has_text="Authorize").click()
        admin.get_by_role("heading", name="Approve alice?").wait_for()
        admin.screenshot(path=str(artifacts / "signin-approve.png"), full_page=True)
        admin.get_by_role("button", name="Approve alice").click()
        admin.wait_for_url(re.compile(r".*/hub/authorize$"))
        assert admin.locator("tr#alice td").nth(2).inner_text().strip() == "Yes"

        # bob's guesses fail; alice's own password works
        for guess in ("bobs-passphrase-1", "alice", "", "ALICES-OWN-PASSPHRASE"):
            sign_in(bob, hub, "alice", guess)
            assert "/hub/login" in bob.url, guess
            assert bob.get_by_text("Invalid username or password.").count() == 1, guess
        sign_in(alice, hub, "alice", "alices-own-passphrase")
        alice.wait_for_url(re.compile(r".*/hub/spawn.*"))
        alice.screenshot(path=str(artifacts / "signin-alice-in.png"), full_page=True)
        assert hub.api("GET", "users/alice").status_code == 200
        assert hub.api("GET", "users/bob").status_code == 404  # bob never got in as anyone
    finally:
        for c in contexts:
            c.close()
