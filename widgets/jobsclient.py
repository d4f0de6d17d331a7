"""The jobs service's client for notebooks: the kernel's hub credentials, plain-words errors."""

from __future__ import annotations

import os


class JobsAPIError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class JobsClient:
    """Small client of the jobs service, with the kernel's hub credentials."""

    def __init__(self, base_url: str | None = None, token: str | None = None):
        base = base_url or os.environ.get("HUBML_JOBS_URL", "")
        if not base:
            tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
            base = (
                tracking.rsplit("/services/", 1)[0] + "/services/jobs"
                if "/services/" in tracking
                else ""
            )
        self.base = base.rstrip("/") + "/api/"
        self.token = (
            token
            or os.environ.get("MLFLOW_TRACKING_TOKEN")
            or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        )

    def request(self, method: str, path: str, body=None, params=None) -> dict:
        import requests

        from ._http import call

        if not self.base.startswith("http"):
            raise JobsAPIError(
                0, "no jobs service is configured for this server (HUBML_JOBS_URL is not set)"
            )
        try:
            status, data, reason = call(
                method, self.base + path, self.token, body=body, params=params, timeout=60
            )
        except requests.RequestException as e:
            raise JobsAPIError(0, f"the jobs service did not answer ({type(e).__name__})") from None
        if status >= 400:
            raise JobsAPIError(status, data.get("message", reason))
        return data
