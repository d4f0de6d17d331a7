"""Who and where this kernel is: the platform environment plus what its server knows.

``notebook()`` asks the hubml server extension (``hubml.extensions.bridge``) for the calling
kernel's notebook path and saved content, with the server's own hub token: no guessing from
window titles or file timestamps.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass


class ContextUnavailable(RuntimeError):
    """The kernel is not running under a hubml single-user server (or its server is down)."""


@dataclass(frozen=True)
class Platform:
    user: str | None
    profile: str | None
    gpu: str | None
    price_per_hour: float | None
    tracking_uri: str | None

    @classmethod
    def from_env(cls, environ=None) -> Platform:
        env = os.environ if environ is None else environ
        price = env.get("HUBML_PRICE_PER_HOUR")
        return cls(
            user=env.get("HUBML_USER") or env.get("JUPYTERHUB_USER"),
            profile=env.get("HUBML_PROFILE"),
            gpu=env.get("HUBML_GPU"),
            price_per_hour=float(price) if price else None,
            tracking_uri=env.get("MLFLOW_TRACKING_URI"),
        )


def kernel_id() -> str:
    """This kernel's id, from its connection file name (``kernel-<id>.json``)."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception as e:  # not in a kernel
        raise ContextUnavailable(f"not running in a Jupyter kernel ({e})") from None
    m = re.match(r"kernel-(.+)\.json$", name)
    if not m:
        raise ContextUnavailable(f"cannot tell the kernel id from {name}")
    return m.group(1)


def _server_url() -> str:
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not url:
        raise ContextUnavailable(
            "JUPYTERHUB_SERVICE_URL is not set: this kernel is not in a hub server"
        )
    return url if url.endswith("/") else url + "/"


def _server_get(url: str, timeout: float, what: str) -> dict:
    req = urllib.request.Request(
        url, headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", e.reason)
        except ValueError:
            message = e.reason
        raise ContextUnavailable(f"{what}: {message}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ContextUnavailable(f"the notebook server did not answer ({e})") from None


def saved_text(path: str, timeout: float = 30) -> str:
    """The file ``path`` (relative to the server's root, as JupyterLab shows it) as last saved,
    read through this kernel's own server: what a panel sends to a service, which never reads
    homes itself."""
    from urllib.parse import quote

    url = f"{_server_url()}api/contents/{quote(path)}?type=file&format=text&content=1"
    model = _server_get(url, timeout, f"the server could not read {path}")
    if not isinstance(model.get("content"), str):
        raise ContextUnavailable(f"{path} is not a text file")
    return model["content"]


def notebook(with_content: bool = True, timeout: float = 10) -> dict:
    """The calling kernel's notebook: ``{"path", "name", "content", "last_modified"}``."""
    url = f"{_server_url()}hubml/api/kernel-context?kernel_id={kernel_id()}&content={int(with_content)}"
    return _server_get(url, timeout, "the server could not say which notebook this is")
