"""A user's file, read from the user's own server with the user's authority.

Services never open ``<data_dir>/homes/<user>``: on one machine homes belong to their users'
accounts, and on Kubernetes a home is the user's own volume in the user's pod. When a request
does not bring the file with it (a notebook panel sends it; a REST client may not), the service
asks the user's running server for it through the Jupyter contents API, with a token minted for
the user that can reach only that server and expires in two minutes (revoked right after).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, urlsplit

from tornado import httpclient

from . import urls
from .errors import APIError
from .hub import HubUnavailable

log = logging.getLogger("hubml.userfiles")

TOKEN_LIFETIME_S = 120


def clean_path(path, what: str = "file", suffix: str | None = None) -> str:
    """``path`` as a path relative to the user's home (as JupyterLab shows it), or APIError 400."""
    if not isinstance(path, str) or not path.strip():
        raise APIError(
            400,
            f"{what}: give its path relative to your home, as JupyterLab shows it (e.g. 'train.ipynb')",
        )
    if "\x00" in path or "\\" in path:
        raise APIError(400, f"{what}: the path contains a NUL or backslash character")
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if path.startswith("/") or any(p == ".." for p in parts) or not parts:
        raise APIError(
            400, f"{what}: {path!r} must be a path inside your home, relative to it, without '..'"
        )
    clean = "/".join(parts)
    if suffix and not clean.endswith(suffix):
        raise APIError(400, f"{what}: {path!r} is not a {suffix} file")
    return clean


async def server_running(ctx, user: str) -> bool:
    """Whether ``user``'s default server is ready; HubUnavailable when the hub cannot say."""
    model = await ctx.hub.user(user, strict=True)
    server = ((model or {}).get("servers") or {}).get("")
    return bool(server and server.get("ready"))


async def fetch_from_server(
    ctx, user: str, path: str, what: str = "file", max_bytes: int = 50 * 1024**2
) -> bytes:
    """The saved bytes of ``path`` in ``user``'s home, from their running server.

    APIError 409 when the server is not running (saying what to do instead), 404 when the file
    does not exist there, 413 past ``max_bytes``, 503 (with Retry-After) when the hub does not
    answer, as while it restarts.
    """
    try:
        return await _fetch(ctx, user, path, what, max_bytes)
    except HubUnavailable as e:
        raise APIError(
            503,
            f"{what}: the hub is not answering (it may be restarting), so {path} cannot be read "
            f"now; try again in a few seconds ({e})",
            headers={"Retry-After": "5"},
        ) from None


async def _fetch(ctx, user: str, path: str, what: str, max_bytes: int) -> bytes:
    if not await server_running(ctx, user):
        raise APIError(
            409,
            f"{what}: {user}'s server is not running, so {path} cannot be read from it; start the "
            "server, or send the file's content with the request",
        )
    minted = await ctx.hub.mint_token(
        user,
        [f"access:servers!server={user}/"],
        TOKEN_LIFETIME_S,
        f"hubml {ctx.name}: read {path}"[:100],
    )
    if minted is None:
        raise APIError(
            502, f"{what}: the hub would not let the {ctx.name} service read {path} for {user}"
        )
    try:
        target = (
            urls.user_server_url(user)
            + "api/contents/"
            + quote(path)
            + "?type=file&format=text&content=1"
        )
        resp = await fetch_public(
            target, headers={"Authorization": f"token {minted['token']}"}, timeout=60
        )
    finally:
        await ctx.hub.revoke_token(user, minted["id"])
    if resp.code == 404:
        raise APIError(404, f"{what}: {path!r} does not exist in {user}'s home")
    if resp.code != 200:
        raise APIError(502, f"{what}: {user}'s server did not give {path} (HTTP {resp.code})")
    try:
        model = json.loads(resp.body)
    except ValueError:
        raise APIError(
            502, f"{what}: {user}'s server gave an unreadable answer for {path}"
        ) from None
    if model.get("type") == "directory":
        raise APIError(400, f"{what}: {path!r} is a folder, not a file")
    content = model.get("content")
    if not isinstance(content, str):
        raise APIError(400, f"{what}: {path!r} is not a text file")
    data = content.encode()
    if len(data) > max_bytes:
        raise APIError(
            413,
            f"{what}: {path!r} is {len(data) // 1024**2} MiB; at most {max_bytes // 1024**2} MiB",
        )
    return data


async def fetch_public(
    url: str, *, method: str = "GET", headers=None, body=None, timeout: float = 30
):
    """Fetch a URL on one of the hub's public origins from inside the platform: the request goes
    to the proxy (``HUBML_PROXY_URL``) with the origin's host name, which the proxy routes on."""
    import os

    parts = urlsplit(url)
    proxy = urlsplit(os.environ.get("HUBML_PROXY_URL") or urls.hub_public_url())
    inner = parts._replace(scheme=proxy.scheme, netloc=proxy.netloc).geturl()
    all_headers = {**(headers or {}), "Host": parts.netloc}
    return await httpclient.AsyncHTTPClient().fetch(
        inner,
        method=method,
        headers=all_headers,
        body=body,
        raise_error=False,
        request_timeout=timeout,
        follow_redirects=False,
    )
