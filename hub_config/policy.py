"""The ``hubml-policy`` hub service: stop servers that outlive their profile's policy.

Each catalog profile sets ``idle_timeout`` (stop after this long without activity) and
``max_runtime`` (stop after this long in total). The service asks the hub REST API for running
servers every ``hub.policy_interval`` seconds and stops those past either limit. It works the
same for local processes and Kubernetes pods because it only talks to the hub, like
jupyterhub-idle-culler, but with limits per profile.
"""

from __future__ import annotations

import logging
import signal
import sys
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
            return (
                f"ran {ran:.0f} s, past {profile.slug}'s maximum runtime of {profile.max_runtime} s"
            )
    if profile.idle_timeout and active:
        idle = (now - active).total_seconds()
        if idle >= profile.idle_timeout:
            return (
                f"idle {idle:.0f} s, past {profile.slug}'s idle timeout of {profile.idle_timeout} s"
            )
    return None


async def active_servers(hub):
    """(user name, server name, server model) of every running server."""
    from hubml.extensions.common.hub import active_users

    async for user in active_users(hub):
        for name, server in (user.get("servers") or {}).items():
            yield user["name"], name, server


async def enforce_once(hub, profiles: dict[str, Profile], default: Profile, now=None) -> list:
    now = now or datetime.now(UTC)
    stopped = []
    servers = [s async for s in active_servers(hub)]
    for user, name, server in servers:
        options = server.get("user_options") or {}
        if isinstance(options, dict) and options.get("app"):
            continue  # published apps have their own idle timeout, kept by the apps service
        slug = options.get("profile") if isinstance(options, dict) else None
        profile = profiles.get(slug) if slug else default
        reason = overdue_reason(server, profile, now)
        if reason:
            log.info("stopping %s/%s: %s", user, name, reason)
            path = (
                f"users/{quote(user)}/servers/{quote(name)}"
                if name
                else f"users/{quote(user)}/server"
            )
            code, answer = await hub.request("DELETE", path)
            if code in (202, 204):
                stopped.append((user, name, reason))
            else:
                log.warning(
                    "could not stop %s/%s: HTTP %s %s", user, name, code, answer.get("message")
                )
    return stopped


def main() -> int:
    import asyncio

    from hubml.extensions.common.app import load_service_settings, setup_logging
    from hubml.extensions.common.hub import HubAPI
    from hubml.extensions.common.parent import exit_with_parent

    setup_logging()
    # the hub stops its services with SIGINT (then SIGTERM): both end the loop at once, also
    # when SIGINT came in ignored (a hub started in the background hands that down, and Python
    # then raises no KeyboardInterrupt: the hub would wait out its timeouts, ~30 s)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        exit_with_parent("hubml-policy")
        settings = load_service_settings()
        profiles = {p.slug: p for p in settings.profiles}
        interval = settings.hub.policy_interval
        log.info("enforcing idle and runtime limits every %s s", interval)

        async def run():
            hub = HubAPI()
            while True:
                try:
                    await enforce_once(hub, profiles, settings.default_profile)
                except (OSError, ValueError, KeyError) as e:
                    log.warning("policy pass failed, will retry: %s", e)
                await asyncio.sleep(interval)

        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.info("hubml-policy: stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
