"""What browser tests do as people do: sign in with the hub's own form."""


def login(page, hub, user: str) -> None:
    """Sign ``user`` up (with an admin's approval) unless done, then sign in with the hub's form."""
    password = hub.passwords.get(user) or hub.sign_up(user)
    page.goto(hub.at("/hub/login"))
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state()
