"""The hub's REST API as a hubml service sees it: async, with the service's own token."""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import quote

from tornado import httpclient

log = logging.getLogger("hubml.hub")


class HubUnavailable(RuntimeError):
    """The hub does not answer, or answers that it cannot now (it is restarting): what was asked
    is to be tried again, not refused."""


def hub_down(code: int) -> bool:
    """Whether a status from :meth:`HubAPI.request` means the hub itself is not there now."""
    return code == 599 or code in (502, 503, 504)


class HubAPI:
    """``await hub.request("GET", "users/alice")`` → ``(status, JSON body)``.

    Never raises for an HTTP status; a hub that does not answer gives status 599 with the reason
    in ``message``, so callers decide what a person is told.
    """

    def __init__(self, api_url: str | None = None, token: str | None = None, timeout: float = 30):
        self.api_url = (api_url or os.environ.get("JUPYTERHUB_API_URL", "")).rstrip("/")
        self.token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout
        self.http = httpclient.AsyncHTTPClient()

    async def request(self, method: str, path: str, body=None, timeout: float | None = None):
        try:
            resp = await self.http.fetch(
                f"{self.api_url}/{path.lstrip('/')}",
                method=method,
                raise_error=False,
                allow_nonstandard_methods=True,
                request_timeout=timeout or self.timeout,
                headers={
                    "Authorization": f"token {self.token}",
                    "Content-Type": "application/json",
                },
                body=json.dumps(body) if body is not None else None,
            )
        except (OSError, httpclient.HTTPClientError) as e:
            # (a connection the hub closed, as when it is killed, is HTTPStreamClosedError)
            return 599, {"message": f"the hub did not answer ({e})"}
        try:
            data = json.loads(resp.body) if resp.body else {}
        except ValueError:
            data = {"message": resp.body[:300].decode(errors="replace")}
        if resp.code == 599:
            data.setdefault("message", f"the hub did not answer ({resp.error})")
        return resp.code, data

    # -- the calls services make --------------------------------------------------------------

    async def user(self, name: str, strict: bool = False) -> dict | None:
        """The user's model, None if there is none (or the hub did not answer); with
        ``strict``, a hub that does not answer raises :class:`HubUnavailable` instead."""
        code, model = await self.request("GET", f"users/{quote(name)}")
        if strict and hub_down(code):
            raise HubUnavailable(f"cannot ask about {name}: {model.get('message') or code}")
        return model if code == 200 else None

    async def groups_of(self, name: str) -> set[str]:
        model = await self.user(name)
        return set(model.get("groups", [])) if model else set()

    async def mint_token(
        self, user: str, scopes: list[str], expires_in: int, note: str
    ) -> dict | None:
        """A new token of ``user`` with ``scopes`` (``{"id", "token"}``), or None if refused;
        :class:`HubUnavailable` when the hub does not answer (try again later)."""
        code, model = await self.request(
            "POST",
            f"users/{quote(user)}/tokens",
            {"expires_in": int(expires_in), "note": note, "scopes": scopes},
        )
        if hub_down(code):
            raise HubUnavailable(f"no token for {user}: {model.get('message') or code}")
        if code not in (200, 201):
            log.warning("the hub refused a token for %s (%s): %s", user, code, model.get("message"))
            return None
        return {"id": model["id"], "token": model["token"]}

    async def revoke_token(self, user: str, token_id: str) -> bool:
        code, model = await self.request("DELETE", f"users/{quote(user)}/tokens/{quote(token_id)}")
        if code not in (204, 404):
            log.warning(
                "could not revoke token %s of %s (%s): %s",
                token_id,
                user,
                code,
                model.get("message"),
            )
        return code in (204, 404)


async def active_users(hub: HubAPI):
    """The model of every user with a running or starting server (all pages of the hub's list);
    OSError when the hub does not answer it."""
    offset = 0
    while True:
        code, page = await hub.request("GET", f"users?state=active&offset={offset}&limit=200")
        if code != 200:
            raise OSError(f"the hub answered {code}: {page.get('message')}")
        users = page["items"] if isinstance(page, dict) else page
        for user in users:
            yield user
        if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
            return
        offset += len(users)
