"""Serve a Gradio app on a Unix socket in a private folder, behind a front door.

``demo.launch()`` would listen on a loopback TCP port, which every account on the machine can
connect to, skipping the front door's authentication. Here the app is mounted on its own FastAPI
application and served by uvicorn on ``<folder>/app.sock``, where ``<folder>`` is the owner's
own 0700 folder (a short path: a socket's path may not exceed 107 bytes): only the owner's
processes (the front door among them) can reach it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path


class SocketServer:
    """A running Gradio app on a Unix socket; ``close()`` stops it."""

    def __init__(self, demo, folder: Path, root_path: str):
        import fastapi
        import gradio as gr
        import uvicorn

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.path = str(self.folder / "app.sock")
        app = gr.mount_gradio_app(
            fastapi.FastAPI(),
            demo,
            path="",
            root_path=root_path.rstrip("/"),
            ssr_mode=False,
            show_error=True,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, uds=self.path, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="gradio-uds")

    def start(self, timeout: float = 60) -> SocketServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the Gradio app did not start on {self.path}")
            time.sleep(0.02)
        os.chmod(self.path, 0o600)
        return self

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def private_folder() -> Path:
    """A new 0700 folder of this account's, with a path short enough for a socket."""
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="hubml-", dir=base if len(base) < 60 else "/tmp"))


def serve(demo, root_path: str, folder: Path | None = None) -> SocketServer:
    """Start ``demo`` on a socket in ``folder`` (a new private folder by default)."""
    return SocketServer(demo, Path(folder) if folder else private_folder(), root_path).start()
