"""A hub service ends when its hub does.

JupyterHub starts each managed service as its child and stops it on a clean exit. A hub killed
with SIGKILL (or by the OOM killer) cannot: its services would run on beside the copies the next
start makes, holding their ports and answering with a dead hub's tokens. Each service watches
its parent instead and stops itself, through its own SIGTERM handler, once the hub is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("hubml.service")


HUB_PID_ENV = "HUBML_HUB_PID"


def hub_parent() -> int | None:
    """The pid of the hub that started this process, when one did (``JUPYTERHUB_SERVICE_NAME``
    set); None otherwise. The hub names itself (``HUBML_HUB_PID``): a hub killed while this
    process was still starting has already handed it to init, and must still count as gone."""
    if not os.environ.get("JUPYTERHUB_SERVICE_NAME"):
        return None
    named = os.environ.get(HUB_PID_ENV, "")
    if named.isdigit():
        return int(named)
    parent = os.getppid()
    return None if parent == 1 else parent


def hub_gone(name: str, parent: int | None) -> bool:
    """Whether the hub ``parent`` has exited (this process was handed to another parent); says
    so in the log once it has."""
    if parent is None or os.getppid() == parent:
        return False
    log.warning(
        "%s: the hub that started this service (pid %s) is gone; stopping so the next hub "
        "start runs the only copy",
        name,
        parent,
    )
    return True


def exit_with_parent(name: str, interval_s: float = 0.5) -> threading.Thread | None:
    """Send this process SIGTERM within ``interval_s`` of its hub's exit (a thread), so its own
    SIGTERM handler stops it cleanly. For processes the hub started; returns the thread or None.
    (A process that forks keeps no threads: it polls :func:`hub_gone` in its own loop.)"""
    parent = hub_parent()
    if parent is None:
        return None
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval_s):
            if hub_gone(name, parent):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name=f"{name}-parent-watch", daemon=True)
    thread.start()
    return thread
