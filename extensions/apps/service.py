"""The ``apps`` hub service: publish Gradio apps as servers under the hub, share them, list them.

``/services/apps/api/`` and a gallery page at ``/services/apps/`` (:mod:`.handlers`). An app is a
bundle (``app.py``, sent by the apps panel, read from the owner's server, or generated from a
registered model, plus its ``requirements.txt``) kept in the service's own store under
``<data_dir>/apps/<owner>/<name>/``, and run as the owner's named server ``app-<name>`` through
the hub's own spawner and catalog, so it runs as its owner and, on Kubernetes, is a pod like any
server. The app's server fetches its bundle from here and reports its log and visitors back
(:mod:`.launcher`). Access is JupyterHub's: the owner, admins, and whoever the owner shared the
server with (users, groups, or a share code link). This service keeps the records and does the
sweeping the hub does not: expired shares are revoked, idle apps stopped (:mod:`.lifecycle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from hubml.extensions.common import urls
from hubml.extensions.common.app import (
    ServiceContext,
    StoreUnavailable,
    load_service_settings,
    make_app,
    open_store,
    serve,
    serve_unavailable,
    setup_logging,
)
from hubml.extensions.jobs.db import make_engine

from .handlers import ROUTES
from .lifecycle import reconcile, sweep
from .store import init_store

log = logging.getLogger("hubml.apps")
SWEEP_S = 5


class AppsContext(ServiceContext):
    def __init__(self, settings, engine, **kw):
        super().__init__("apps", settings, **kw)
        self.engine = engine
        self.apps_dir = Path(settings.data_dir) / "apps"
        self.mlflow_url = urls.service_internal_url("mlflow") if settings.tracking.enabled else ""

    def bundle(self, owner: str, name: str) -> Path:
        return self.apps_dir / owner / name

    def usage(self, owner: str, name: str) -> dict:
        try:
            return json.loads((self.bundle(owner, name) / "usage.json").read_text())
        except (OSError, ValueError):
            return {}


def main() -> int:
    setup_logging()
    settings = load_service_settings()
    (settings.data_dir / "apps").mkdir(parents=True, exist_ok=True)
    url = settings.apps.db_url or f"sqlite:///{settings.data_dir / 'apps' / 'apps.db'}"

    def init(url):
        engine = make_engine(url)
        init_store(engine)
        return engine

    try:
        engine = open_store("apps", url, init)
    except StoreUnavailable as problem:
        return serve_unavailable("apps", problem)
    ctx = AppsContext(settings, engine)
    app = make_app(ctx, ROUTES)

    async def sweeper():
        # the first pass that reaches the hub starts again the apps a hub restart stopped
        restart = True
        while True:
            try:
                await reconcile(ctx, restart=restart)
                restart = False
                await sweep(ctx)
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(SWEEP_S)

    serve(app, "apps", on_start=sweeper)
    return 0


if __name__ == "__main__":
    sys.exit(main())
