"""The one page a person sees when an app is not theirs to open.

Two places refuse a visitor: the hub, when someone who was never given the app asks to sign in to
it (its OAuth step answers 403), and the app's own front door (:mod:`.launcher`), when a signed-in
visitor's share was revoked or expired. Both show this page, so a person cannot tell "revoked" from
"never shared" (nor should it matter to them): what the app is, whose it is, and what to do.
Standard library only: the hub renders it in its error template.
"""

from __future__ import annotations

import re
from html import escape

# the hub's OAuth refusal names the server: "You do not have permission to access Server at
# /user/<owner>/app-<name>/" (JupyterHub's description of a named server's OAuth client)
_APP_SERVER = re.compile(r"/user/(?P<owner>[^/\s]+)/app-(?P<app>[^/\s]+)/?")


def refusal_html(owner: str, app: str, hub_home: str) -> str:
    """The body of the refusal: the same words wherever it is shown."""
    return (
        "<div id='hubml-app-refused' style='max-width:40em;margin:2em auto;font-family:sans-serif'>"
        f"<h1>{escape(app)} is not shared with you</h1>"
        f"<p>{escape(app)} is an app that <b>{escape(owner)}</b> published with hubml. It has not "
        "been shared with you, or its share was taken back or has expired.</p>"
        f"<p>Ask <b>{escape(owner)}</b> to share it with you (by your user name, one of your "
        "groups, or a new link), then open the link again.</p>"
        f"<p><a href='{escape(hub_home, quote=True)}'>Back to the hub</a></p>"
        "</div>"
    )


def refusal_for_hub_message(message: str | None, hub_home: str) -> str:
    """The refusal for a hub error message about an app's server, or ``""`` for any other one
    (the hub's own error page applies then). Called from the hub's ``error.html``."""
    if not message or "permission to access" not in message:
        return ""
    found = _APP_SERVER.search(message)
    if not found:
        return ""
    return refusal_html(found["owner"], found["app"], hub_home)
