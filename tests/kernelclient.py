"""Run code in a kernel of a user's real single-user server, as a notebook would.

Creates the notebook through the contents API, opens a session on it (so the kernel gets the
notebook's path, as JupyterLab's kernels do), executes code over the kernel websocket and
returns the text outputs.
"""

from __future__ import annotations

import json
import uuid

import requests
import websocket


class ServerKernel:
    def __init__(self, hub, user: str, token: str, path: str, cells: list[str] | None = None):
        self.base = hub.user_url(user)
        self.headers = {"Authorization": f"token {token}"}
        self.path = path
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "source": src,
                    "outputs": [],
                    "execution_count": None,
                }
                for src in (cells or [])
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        r = requests.put(
            f"{self.base}api/contents/{path}",
            json={"type": "notebook", "content": nb},
            headers=self.headers,
            timeout=30,
        )
        r.raise_for_status()
        r = requests.post(
            f"{self.base}api/sessions",
            json={"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}},
            headers=self.headers,
            timeout=60,
        )
        r.raise_for_status()
        self.session = r.json()
        self.kernel_id = self.session["kernel"]["id"]
        ws_url = self.base.replace("http", "ws", 1) + f"api/kernels/{self.kernel_id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {token}"], timeout=120
        )

    def execute(self, code: str, timeout: float = 120) -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out, error = [], None
        self.ws.settimeout(timeout)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(f"cell failed: {error}\n{''.join(out)}")
        return "".join(out)

    def close(self):
        self.ws.close()
        requests.delete(
            f"{self.base}api/sessions/{self.session['id']}", headers=self.headers, timeout=30
        )
