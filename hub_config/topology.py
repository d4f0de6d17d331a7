"""Where everything is: the hub's public origin, the services' addresses, the shared constants.

One module that the configurer, the spawners and the offline Kubernetes builders import, so a
settings object flows one way (settings → topology → hub configuration and spawners).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .settings import Settings

# every single-user server loads hubml's server extension (the kernel <-> server bridge)
SERVER_EXTENSION_ARG = "--ServerApp.jpserver_extensions=hubml.extensions.bridge=True"
ADMIN_SERVICE = "hubml-admin"
# hubml's services on Kubernetes: fixed ports on the hub's Service, where the proxy (its own pod)
# and users' pods reach them; deploy/values.yaml opens the same ports (hub.service.extraPorts)
SERVICE_PORTS = {
    "mlflow": 8091,
    "jobs": 8092,
    "apps": 8093,
    "home": 8094,
    "cost": 8095,
    "features": 8096,
}
SERVICES = tuple(SERVICE_PORTS)
# the hub's own loopback parts on one machine (hub.internal_ports), kept per data dir
INTERNAL_PORTS = ("hub_api", "proxy_api", *SERVICES)
PORTS_FILE = "ports.json"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def internal_ports(settings: Settings) -> dict[str, int]:
    """The loopback port of each of the hub's parts (:data:`INTERNAL_PORTS`): the number the
    settings give, else the one this data dir used before (``ports.json``), else a free one,
    then remembered. The same ports at every start are what let a restarted hub find its proxy
    and services, and users' servers reach the hub and services they were started with."""
    chosen = settings.hub.internal_ports.model_dump()
    path = settings.data_dir / PORTS_FILE if settings.hub.data_dir else None
    kept: dict = {}
    if path is not None:
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = {}  # none yet, or garbled: picked again below
        if not isinstance(kept, dict):
            kept = {}
    taken = {settings.hub.port, *(p for p in chosen.values() if p)}
    ports: dict[str, int] = {}
    for name in INTERNAL_PORTS:
        port = chosen.get(name) or 0
        if not port:
            old = kept.get(name)
            if isinstance(old, int) and 1024 <= old <= 65535 and old not in taken:
                port = old
            else:
                port = free_port()
                while port in taken:
                    port = free_port()
        taken.add(port)
        ports[name] = port
    if path is not None and ports != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PORTS_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(ports, indent=1) + "\n")
        os.replace(tmp, path)
    return ports


def in_cluster(settings: Settings) -> bool:
    return settings.hub.spawner == "kubernetes"


def gates_in_cluster(settings: Settings) -> bool:
    """Whether the registry's gates probe candidates in Kubernetes Jobs (``tracking.gate_executor``)."""
    chosen = settings.tracking.gate_executor
    if chosen == "auto":
        return in_cluster(settings) or settings.jobs.executor == "kubernetes"
    return chosen == "kubernetes"


def public_url(settings: Settings) -> str:
    """The origin people open (no trailing slash); users and services live on subdomains of it."""
    return settings.hub.public_url or f"http://localhost:{settings.hub.port}"


def announce_when_ready(settings: Settings, timeout: float = 300) -> threading.Thread:
    """Say on stdout, once, when the hub answers through its proxy (``hubml up``): the first
    seconds after start answer 404 or refuse, and people should know when to open the URL."""
    import http.client

    url = public_url(settings) + "/"
    host = urlsplit(url).netloc

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", settings.hub.port, timeout=5)
            try:
                conn.request("GET", "/hub/api/", headers={"Host": host})
                if conn.getresponse().status == 200:
                    print(f"\nhubml is ready: open {url}\n", flush=True)
                    atexit.register(say_what_keeps_running, settings)
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.5)
        print(f"\nhubml: the hub did not answer at {url} in {timeout:.0f} s; see the log above\n")

    thread = threading.Thread(target=wait, name="hubml-ready", daemon=True)
    thread.start()
    return thread


def say_what_keeps_running(settings: Settings) -> None:
    """The last line of ``hubml up``: what a stop (Ctrl+C) left running, and why."""
    if settings.hub.stop_servers_on_exit:
        print("\nhubml stopped, with everyone's servers and apps.\n", flush=True)
        return
    print(
        "\nhubml stopped. People's servers, apps and job runs, and the proxy, keep running: the\n"
        "next start (make run) adopts them and nobody loses work. To stop them with the hub, set\n"
        "hub.stop_servers_on_exit: true.\n",
        flush=True,
    )


def catalog_trait(settings: Settings) -> list[dict]:
    """The compute catalog as the spawners' ``catalog`` trait (plain dicts)."""
    return [p.model_dump(mode="json") for p in settings.profiles]


@dataclass
class Topology:
    """The addresses of one hub start."""

    public_url: str
    # where processes (kernels, job runs, app servers, services) send requests meant for a
    # public origin: the proxy itself, with the origin's name in the Host header
    proxy_url: str
    # name -> where the proxy and processes reach the service (its front door), no trailing slash
    service_urls: dict[str, str] = field(default_factory=dict)
    # the hub's own ports (:data:`INTERNAL_PORTS`): hub_api, proxy_api and each service's
    ports: dict[str, int] = field(default_factory=dict)

    def service_base(self, name: str) -> str:
        """Base URL of a service for processes: ``http://127.0.0.1:<port>/services/<name>/``."""
        return f"{self.service_urls[name]}/services/{name}/"


def make_topology(settings: Settings, cluster: bool | None = None) -> Topology:
    """Addresses for this start: the chart's fixed ports in a cluster (``cluster``, default:
    whether the settings say Kubernetes), this data dir's loopback ports on one machine."""
    if in_cluster(settings) if cluster is None else cluster:
        hub = settings.kubernetes.hub_service
        urls = {name: f"http://{hub}:{port}" for name, port in SERVICE_PORTS.items()}
        proxy = settings.kubernetes.proxy_url
        ports = {"hub_api": 8081, "proxy_api": 8001, **SERVICE_PORTS}
    else:
        ports = internal_ports(settings)
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
        proxy = f"http://{settings.hub.ip}:{settings.hub.port}"
    return Topology(
        public_url=public_url(settings), proxy_url=proxy, service_urls=urls, ports=ports
    )
