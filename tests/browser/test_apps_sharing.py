"""Three people, one app: A publishes from a notebook and shares with B; B uses it; C is
refused; A revokes and B is refused on the next load, with the very page C saw. A also makes a
share link (absolute, copied with one click) and deletes the app after confirming."""

import re
import time

import pytest
import requests

from tests.browserutil import login

pytestmark = pytest.mark.browser

APP = (
    "import gradio as gr\n\n"
    "def shout(text):\n"
    "    return text.upper() + '!'\n\n"
    "demo = gr.Interface(shout, gr.Textbox(label='text'), gr.Textbox(label='shouted'), title='Shouter')\n"
)


def open_app(page, url, artifacts=None, who=""):
    page.goto(url)
    # the first visit asks the visitor to confirm; the page says plainly what the app may do
    consent = page.locator("button:has-text('Open the app')")
    if consent.count():
        text = page.locator("#hubml-consent-what").inner_text()
        assert "cannot read your hub pages" in text and "cannot act as you anywhere else" in text, (
            text
        )
        if artifacts is not None:
            page.screenshot(path=str(artifacts / f"apps-consent-{who}.png"), full_page=True)
        consent.first.click()
    page.wait_for_load_state()


def test_publish_share_use_refuse_revoke(hub_factory, browser, artifacts):
    hub = hub_factory({"apps": {"enabled": True}})
    deadline = time.monotonic() + 60
    while (
        requests.get(
            hub.at("/services/apps/api/apps"),
            headers={"Authorization": f"token {hub.token}"},
            timeout=10,
        ).status_code
        != 200
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    for user in ("alice", "bob", "carol"):
        hub.ensure_user(user)
    home = hub.data_dir / "homes" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "shouter.py").write_text(APP)

    contexts = {
        u: browser.new_context(viewport={"width": 1280, "height": 860})
        for u in ("alice", "bob", "carol")
    }
    contexts["alice"].grant_permissions(["clipboard-read", "clipboard-write"])
    pages = {u: c.new_page() for u, c in contexts.items()}
    for p in pages.values():
        p.set_default_timeout(90_000)
    try:
        a = pages["alice"]
        login(a, hub, "alice")
        a.wait_for_url(re.compile(r".*/hub/spawn.*"))
        a.click("input[type=submit], button[type=submit]")
        a.wait_for_url(re.compile(r".*/user/alice/lab.*"))
        a.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
        a.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for()
        a.locator(".jp-Notebook .jp-Cell .cm-content").last.click()
        a.keyboard.insert_text(
            "from hubml.widgets import AppsPanel\nAppsPanel(source='shouter.py', name='shouter')"
        )
        a.keyboard.press("Shift+Enter")
        panel = a.locator(".hubml-apps-panel")
        panel.wait_for()
        panel.get_by_role("button", name="Publish").click()
        link = panel.locator("a.hubml-published-link")
        link.wait_for()
        app_url = link.get_attribute("href")
        users = panel.locator(".widget-text", has_text="Users").locator("input")
        users.fill("bob")
        panel.get_by_role("button", name="Share").click()
        panel.locator(".hubml-revoke").first.wait_for()
        # the app's address stays on the panel after sharing: the whole URL, to pass on
        assert panel.locator(".hubml-app-url input").input_value() == app_url
        assert app_url.startswith("http")

        # a link share: absolute, on the hub's origin, copied with one click
        users.fill("")
        panel.get_by_role("button", name="Share").click()
        share_link = panel.locator(".hubml-share-link input")
        share_link.wait_for()
        link_url = share_link.input_value()
        assert link_url.startswith(hub.public_url + "hub/accept-share?code="), link_url
        panel.locator(".hubml-share-link .hubml-copy").click()
        panel.locator(".hubml-share-link .hubml-copy", has_text="Copied").wait_for()
        assert a.evaluate("navigator.clipboard.readText()") == link_url
        a.screenshot(path=str(artifacts / "apps-panel-shared.png"), full_page=True)

        b = pages["bob"]
        login(b, hub, "bob")
        open_app(b, app_url, artifacts, "bob")
        b.get_by_label("text").first.fill("hello reviewers")
        b.get_by_role("button", name="Submit").click()
        try:
            b.wait_for_function(
                "() => [...document.querySelectorAll('textarea, input')].some(t => (t.value || '').includes('HELLO REVIEWERS!'))",
                timeout=60_000,
            )
        finally:
            b.screenshot(path=str(artifacts / "apps-bob-uses-app.png"), full_page=True)

        c = pages["carol"]
        login(c, hub, "carol")
        open_app(c, app_url)
        c.screenshot(path=str(artifacts / "apps-carol-refused.png"), full_page=True)
        assert "Shouter" not in c.content()
        # the hub refuses carol (never given the app) in plain words, not its stock 403
        never_shared = c.locator("#hubml-app-refused").inner_text()
        assert "shouter is not shared with you" in never_shared and "alice" in never_shared

        panel.locator(".hubml-revoke").first.click()
        panel.get_by_text("Access revoked.").wait_for()
        time.sleep(1.2)  # the app re-checks a visitor's scopes with the hub at most every second
        response = b.reload()
        b.wait_for_load_state()
        b.screenshot(path=str(artifacts / "apps-bob-after-revoke.png"), full_page=True)
        assert "Shouter" not in b.content()
        assert response.status == 403
        # the app's own refusal of a revoked share is the page carol saw at the hub
        assert b.locator("#hubml-app-refused").inner_text() == never_shared

        # Delete asks first; keeping it keeps it, confirming removes it
        panel.get_by_role("button", name="Delete").click()
        panel.get_by_role("button", name="Keep it").click()
        panel.locator(".hubml-confirm-delete").wait_for(state="detached")
        panel.get_by_role("button", name="Refresh").click()
        panel.locator(".hubml-app-row[data-app='shouter']").wait_for()
        panel.get_by_role("button", name="Delete").click()
        panel.locator(".hubml-confirm-delete").click()
        panel.get_by_text("shouter: deleted.").wait_for()
        panel.locator(".hubml-app-row[data-app='shouter']").wait_for(state="detached")
        panel.locator(".hubml-app-url").wait_for(state="detached")
    finally:
        for ctx in contexts.values():
            ctx.close()
