"""Forward a tornado request to a local HTTP server, streaming the answer (Gradio's SSE queue).

The servers behind hubml's front doors (a published app's Gradio, a kernel's inline demo)
listen on Unix sockets in their owner's private folders, not on loopback ports: no other account
on the machine can reach them except through the front door, which authenticates every request.
"""

from __future__ import annotations

import socket

from tornado import httpclient, netutil, web

HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "authorization",
    "cookie",
    "date",
    "server",
}
_clients: dict[str, httpclient.AsyncHTTPClient] = {}


class UnixResolver(netutil.Resolver):
    """Every host name resolves to one Unix socket."""

    def initialize(self, path: str):
        self.path = path

    async def resolve(self, host, port, family=socket.AF_UNSPEC):
        return [(socket.AF_UNIX, self.path)]


def unix_client(path: str) -> httpclient.AsyncHTTPClient:
    """An HTTP client whose every request goes to the server on the Unix socket ``path``."""
    if path not in _clients:
        # Gradio holds one SSE stream open per browser tab: allow many at once
        _clients[path] = httpclient.AsyncHTTPClient(
            force_instance=True,
            resolver=UnixResolver(path=path),
            max_clients=256,
            max_body_size=1024**3,
        )
    return _clients[path]


async def forward(handler: web.RequestHandler, socket_path: str, path: str) -> None:
    """Send ``handler``'s request to ``path`` on the server at ``socket_path`` and stream the
    response back, flushing each chunk."""
    url = "http://localhost" + path
    started = {"done": False}

    def on_header(line: str) -> None:
        line = line.rstrip("\r\n")
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            handler.set_status(int(parts[1]), parts[2] if len(parts) > 2 else None)
            handler.clear_header("Content-Type")
            handler.clear_header("Server")
        elif ":" in line:
            name, value = line.split(":", 1)
            if name.strip().lower() not in HOP:
                handler.add_header(name.strip(), value.strip())

    def on_chunk(chunk: bytes) -> None:
        started["done"] = True
        handler.write(chunk)
        handler.flush()

    headers = {k: v for k, v in handler.request.headers.get_all() if k.lower() not in HOP}
    headers["Host"] = handler.request.host
    headers["X-Forwarded-Proto"] = handler.request.protocol
    body = (
        handler.request.body
        if handler.request.method in ("POST", "PUT", "PATCH", "DELETE")
        else None
    )
    request = httpclient.HTTPRequest(
        url,
        method=handler.request.method,
        headers=headers,
        body=body,
        allow_nonstandard_methods=True,
        follow_redirects=False,
        decompress_response=False,
        header_callback=on_header,
        streaming_callback=on_chunk,
        connect_timeout=10,
        request_timeout=24 * 3600,
    )
    try:
        await unix_client(socket_path).fetch(request, raise_error=False)
    except httpclient.HTTPClientError as e:  # pragma: no cover - raise_error=False
        if not started["done"]:
            raise web.HTTPError(502, f"the app did not answer ({e})") from None
    except OSError as e:
        if not started["done"]:
            raise web.HTTPError(502, f"the app did not answer ({e})") from None
    handler.finish()
