"""MLflow run-context provider: every run started in the platform describes itself.

Registered through MLflow's ``mlflow.run_context_provider`` entry point (pyproject.toml), so it
tags plain ``mlflow.start_run()`` calls too, in notebooks, jobs and scripts. Only active where
the platform environment is present (``HUBML_USER`` or ``JUPYTERHUB_USER``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def notebook_path(environ=None, ask_server: bool = True) -> str | None:
    """The calling notebook, relative to the home folder as jobs name it.

    A job names its notebook (``HUBML_NOTEBOOK_PATH``). A kernel asks its server (the bridge's
    kernel-context: the session's path now, so it follows renames), else falls back to
    ``JPY_SESSION_NAME`` (the path when the kernel started, which jupyter_server gives as an
    absolute path), made relative to the home folder."""
    env = os.environ if environ is None else environ
    if env.get("HUBML_NOTEBOOK_PATH"):
        return env["HUBML_NOTEBOOK_PATH"]
    if ask_server and env.get("JUPYTERHUB_SERVICE_URL"):
        try:
            from hubml.kernels.context import ContextUnavailable, notebook

            return notebook(with_content=False, timeout=2)["path"]
        except (ContextUnavailable, KeyError, ImportError):
            pass
    path = env.get("JPY_SESSION_NAME") or None
    home = (env.get("HOME") or "").rstrip("/")
    if path and home and os.path.isabs(path) and path.startswith(home + "/"):
        path = os.path.relpath(path, home)
    return path


def git_state(path: str | None) -> dict[str, str]:
    """Commit and dirty flag of the git repository holding ``path``, if any."""
    if not path:
        return {}
    folder = Path(path).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    if not folder.exists():
        return {}
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "hubml.git_commit": commit.stdout.strip(),
        "hubml.git_dirty": str(bool(dirty.stdout.strip())).lower(),
    }


def platform_tags(environ=None) -> dict[str, str]:
    """The DESIGN.md run tags for this process, from the platform environment."""
    env = os.environ if environ is None else environ
    user = env.get("HUBML_USER") or env.get("JUPYTERHUB_USER")
    if not user:
        return {}
    tags = {"mlflow.user": user, "hubml.user": user}
    path = notebook_path(env, ask_server=environ is None)
    if path:
        tags["mlflow.source.name"] = path
        tags["mlflow.source.type"] = "NOTEBOOK"
        tags["hubml.notebook_path"] = path
    for key, var in [
        ("hubml.profile", "HUBML_PROFILE"),
        ("hubml.gpu", "HUBML_GPU"),
        ("hubml.price_per_hour", "HUBML_PRICE_PER_HOUR"),
        ("hubml.job_id", "HUBML_JOB_ID"),
        ("hubml.job_run_id", "HUBML_JOB_RUN_ID"),
    ]:
        if env.get(var):
            tags[key] = env[var]
    if environ is None and path:
        home = env.get("HOME") or str(Path.home())
        tags.update(git_state(path if os.path.isabs(path) else os.path.join(home, path)))
    return tags


class HubmlRunContext:
    """The provider MLflow instantiates (duck-typed to ``RunContextProvider``)."""

    def in_context(self) -> bool:
        return bool(os.environ.get("HUBML_USER") or os.environ.get("JUPYTERHUB_USER"))

    def tags(self) -> dict[str, str]:
        tags = platform_tags()
        # features fetched (hubml.features.store()) before this run started, in this process
        features = sys.modules.get("hubml.extensions.features.client")
        if features is not None:
            tags.update(features.pending_tags())
        return tags
