"""Where things are: public URLs for people, internal URLs for processes.

People's browsers see one origin per kind of author (JupyterHub's ``subdomain_host``): the hub at
``HUBML_PUBLIC_URL`` (``http://localhost:8000`` on one machine), each user's servers and apps at
``http://<user>.localhost:8000``, each service at ``http://<service>--service.localhost:8000``. A
page script on one of them cannot read another's pages or use its cookies.

Processes (kernels, job runners, app servers, services) reach services directly at the URLs in
``HUBML_SERVICES`` (a JSON object name → base URL); those are the services' own front doors,
which authenticate every request, so nothing is skipped by not going through the proxy.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit


def hub_public_url() -> str:
    """The hub's public origin, without a trailing slash."""
    return os.environ.get("HUBML_PUBLIC_URL", "http://localhost:8000").rstrip("/")


def origin(name: str, kind: str, public_url: str = "") -> str:
    """The public origin of a user's (``kind="user"``) or a service's (``"service"``) content
    (under ``public_url``, by default the hub's, :func:`hub_public_url`)."""
    from jupyterhub.utils import subdomain_hook_idna

    public = urlsplit(public_url or hub_public_url())
    host = subdomain_hook_idna(name, public.hostname or "localhost", kind)
    return f"{public.scheme}://{host}" + (f":{public.port}" if public.port else "")


def user_server_url(owner: str, server: str = "") -> str:
    """Absolute URL of ``owner``'s server (``server`` names a named server such as ``app-demo``)."""
    path = f"/user/{quote(owner, safe='@~')}/" + (f"{quote(server)}/" if server else "")
    return origin(owner, "user") + path


def service_public_url(name: str, public_url: str = "") -> str:
    """Absolute URL of a service as people open it, with a trailing slash."""
    return f"{origin(name, 'service', public_url)}/services/{name}/"


def service_internal_url(name: str) -> str:
    """Base URL (trailing slash) where processes reach service ``name``; '' when it is not on."""
    try:
        urls = json.loads(os.environ.get("HUBML_SERVICES", "{}"))
    except ValueError:
        urls = {}
    url = urls.get(name, "")
    return url if not url or url.endswith("/") else url + "/"
