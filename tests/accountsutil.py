"""Run a piece of a test as another Unix account (the platform's, a user's), as their processes would."""

from __future__ import annotations

import json
import os
import pwd

from hubml.hub_config import accounts


def as_account(name: str | None, fn):
    """``{"ok": fn()}`` or ``{"error": "..."}``, with ``fn`` run in a child process that became
    account ``name`` for good (``None``: this process's own account)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if name is not None:
                accounts.drop_privileges(pwd.getpwnam(name))
            result = {"ok": fn()}
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(result, default=str).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    os.close(r)
    return json.loads(data)
