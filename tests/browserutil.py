"""What browser tests do as people do: sign in with the hub's own form."""

import re

# anything but this machine (the hub and its services are on localhost and its subdomains)
PUBLIC_HOSTS = re.compile(r"^https?://(?!(?:[\w-]+\.)*localhost(?::\d+)?/|127\.0\.0\.1(?::\d+)?/)")


def login(page, hub, user: str) -> None:
    """Sign ``user`` up (with an admin's approval) unless done, then sign in with the hub's form."""
    password = hub.passwords.get(user) or hub.sign_up(user)
    page.goto(hub.at("/hub/login"))
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state()
