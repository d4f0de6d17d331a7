"""Which outbound URLs a service may call for a user (webhooks), decided after DNS resolution.

A webhook is a request the platform makes on a user's behalf from inside its own network, so by
default only public hosts are allowed: no loopback, private, link-local (cloud metadata), shared
or reserved addresses, whatever name leads there. Operators may allow named hosts (for example
an internal chat relay) with a settings list of host names or ``*.suffix`` patterns.

The check runs when the URL is set (a clear 400) and again when the request is sent, through a
resolver that only hands out the addresses it checked, so a name that starts resolving to
``127.0.0.1`` later is refused then too.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from urllib.parse import urlsplit

from tornado import netutil


class URLNotAllowed(ValueError):
    """Says what was wrong with the URL and what is allowed."""


WHAT_IS_ALLOWED = (
    "webhooks go to public http(s) hosts only (operators may allow more with "
    "jobs.webhook_allowed_hosts)"
)


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a public one, or None when it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for test, what in (
        ("is_unspecified", "an unspecified"),
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_private", "a private"),
        ("is_multicast", "a multicast"),
        ("is_reserved", "a reserved"),
    ):
        if getattr(ip, test):
            return f"{address} is {what} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def host_allowed(host: str, allowed_hosts) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed_hosts or ())


def check_url_syntax(url) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or URLNotAllowed."""
    if not isinstance(url, str) or len(url) > 2000 or any(c.isspace() for c in url):
        raise URLNotAllowed(
            "must be an http:// or https:// URL of at most 2000 characters, or null"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise URLNotAllowed(f"{url[:80]!r} is not an http:// or https:// URL; {WHAT_IS_ALLOWED}")
    if parts.username or parts.password:
        raise URLNotAllowed(
            "must not carry a user name or password; put secrets in the receiving end's URL path"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise URLNotAllowed(f"{url[:80]!r} has an invalid port") from None
    return parts.scheme, parts.hostname, port


def resolve_checked(host: str, port: int, allowed_hosts=()) -> list[tuple]:
    """The addresses ``host`` resolves to, if every one may be called; URLNotAllowed otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise URLNotAllowed(f"{host} does not resolve ({e}); {WHAT_IS_ALLOWED}") from None
    if host_allowed(host, allowed_hosts):
        return infos
    for *_, sockaddr in infos:
        problem = address_problem(sockaddr[0])
        if problem:
            named = "" if host == sockaddr[0] else f"{host} resolves to "
            raise URLNotAllowed(f"{named}{problem}; {WHAT_IS_ALLOWED}")
    return infos


def check_url(url, allowed_hosts=()) -> str:
    """``url`` if a service may call it now; URLNotAllowed saying why not."""
    _, host, port = check_url_syntax(url)
    resolve_checked(host, port, allowed_hosts)
    return url


class CheckedResolver(netutil.Resolver):
    """A tornado resolver that only returns addresses :func:`resolve_checked` accepts."""

    def initialize(self, allowed_hosts=()):
        self.allowed_hosts = tuple(allowed_hosts)

    async def resolve(self, host, port, family=socket.AF_UNSPEC):
        import asyncio

        infos = await asyncio.get_running_loop().run_in_executor(
            None, resolve_checked, host, port, self.allowed_hosts
        )
        return [
            (af, sockaddr) for af, _t, _p, _c, sockaddr in infos if family in (socket.AF_UNSPEC, af)
        ]
