"""The ``hubml-policy`` hub service: stop servers that outlive their profile's policy.

Each catalog profile sets ``idle_timeout`` (stop after this long without activity) and
``max_runtime`` (stop after this long in total). The service asks the hub REST API for running
servers every ``hub.policy_interval`` seconds and stops those past either limit. It works the
same for local processes and Kubernetes pods because it only talks to the hub, like
jupyterhub-idle-culler, but with limits per profile.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from urllib.parse import quote

from .settings import Profile

log = logging.getLogger("hubml.policy")

# scopes the service's role needs, and nothing more
SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def overdue_reason(server: dict, profile: Profile | None, now: datetime) -> str | None:
    """Why ``server`` (a hub server model) should stop now, or None while it may run."""
    if profile is None or not server.get("ready"):
        return None
    started = _parse_time(server.get("started"))
    active = _parse_time(server.get("last_activity")) or started
    if profile.max_runtime and started:
        ran = (now - started).total_seconds()
        if ran >= profile.max_runtime:
            return f"ran {ran:.0f} s, past {profile.slug}'s maximum runtime of {profile.max_runtime} s"
    if profile.idle_timeout and active:
        idle = (now - active).total_seconds()
        if idle >= profile.idle_timeout:
            return f"idle {idle:.0f} s, past {profile.slug}'s idle timeout of {profile.idle_timeout} s"
    return None


class HubClient:
    def __init__(self, api_url: str, token: str):
        self.api_url, self.token = api_url.rstrip("/"), token

    def request(self, method: str, path: str):
        req = urllib.request.Request(
            f"{self.api_url}/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def active_servers(self):
        """(user name, server name, server model) of every running server."""
        offset = 0
        while True:
            page = self.request("GET", f"users?state=active&offset={offset}&limit=200")
            users = page["items"] if isinstance(page, dict) else page
            for user in users:
                for name, server in (user.get("servers") or {}).items():
                    yield user["name"], name, server
            if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
                return
            offset += len(users)


def enforce_once(client: HubClient, profiles: dict[str, Profile], default: Profile, now=None) -> list:
    now = now or datetime.now(UTC)
    stopped = []
    for user, name, server in list(client.active_servers()):
        options = server.get("user_options") or {}
        if isinstance(options, dict) and options.get("app"):
            continue  # published apps have their own idle timeout, kept by the apps service
        slug = options.get("profile") if isinstance(options, dict) else None
        profile = profiles.get(slug) if slug else default
        reason = overdue_reason(server, profile, now)
        if reason:
            log.info("stopping %s/%s: %s", user, name, reason)
            path = f"users/{quote(user)}/servers/{quote(name)}" if name else f"users/{quote(user)}/server"
            try:
                client.request("DELETE", path)
                stopped.append((user, name, reason))
            except urllib.error.HTTPError as e:
                log.warning("could not stop %s/%s: HTTP %s", user, name, e.code)
    return stopped


def main() -> int:
    from .settings import load_settings

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    settings = load_settings()
    profiles = {p.slug: p for p in settings.profiles}
    client = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    interval = settings.hub.policy_interval
    log.info("enforcing idle and runtime limits every %s s", interval)
    try:
        while True:
            try:
                enforce_once(client, profiles, settings.default_profile)
            except (urllib.error.URLError, OSError, ValueError) as e:
                log.warning("policy pass failed, will retry: %s", e)
            time.sleep(interval)
    except KeyboardInterrupt:  # the hub stops its services with SIGINT
        return 0


if __name__ == "__main__":
    sys.exit(main())
