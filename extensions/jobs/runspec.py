"""What a run is given, and what is taken back when it ends.

The spec a runner fetches (:mod:`.remote`): the notebook (the job's snapshot, or with
``track_latest`` the version its owner's server has saved now), parameters, timeout and the
run's environment, which carries an MLflow token minted for the owner. The token's id stays in
the run's platform-only folder, so the token is revoked when the run ends.
"""

from __future__ import annotations

import json
from pathlib import Path

from .remote import write_private

TOKEN_ID_FILE = "mlflow-token.json"


class RunRefused(Exception):
    """A run that cannot start, for a reason its owner can act on (said in the run's error)."""


async def make_spec(sched, run, job, profile, devices: list[int]) -> dict:
    """What the runner gets: the notebook, parameters, timeout and its environment (with an
    MLflow token minted for the owner, kept to be revoked)."""
    run_dir = sched.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = Path(job.snapshot)
    if job.track_latest:
        source = await latest_notebook(sched, job, run_dir)
    home = sched.home(job.owner)
    gpu = f"{profile.gpu_count} x {profile.gpu_model}" if devices else "none"
    env = {
        "HOME": str(home),
        "JUPYTERHUB_USER": job.owner,
        "HUBML_USER": job.owner,
        "HUBML_JOB_ID": job.id,
        "HUBML_JOB_RUN_ID": run.id,
        "HUBML_PROFILE": profile.slug,
        "HUBML_PROFILE_NAME": profile.display_name,
        "HUBML_PRICE_PER_HOUR": f"{profile.price_per_hour:g}",
        "HUBML_GPU": gpu,
        "HUBML_GPU_DEVICES": ",".join(map(str, devices)),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, devices)),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        # the notebook's path, as a server would tell its kernels (run tags use it)
        "JPY_SESSION_NAME": job.notebook,
    }
    # the services a run's notebook uses as its owner: MLflow, and the feature catalog
    # (hubml.widgets.feature_store), with one short-lived token of the owner's
    from hubml.extensions.common.urls import service_internal_url

    features_url = service_internal_url("features") if sched.settings.features.enabled else ""
    mlflow_on = sched.settings.tracking.enabled and sched.mlflow_url
    scopes = [
        *(["access:services!service=mlflow"] if mlflow_on else []),
        *(["access:services!service=features"] if features_url else []),
    ]
    if mlflow_on:
        env["MLFLOW_TRACKING_URI"] = sched.mlflow_url
    if features_url:
        env["HUBML_FEATURES_URL"] = features_url.rstrip("/")
    if scopes and sched.hub is not None:
        minted = await sched.hub.mint_token(
            job.owner, scopes, job.timeout_s + 900, f"hubml job {job.id} run {run.id}"
        )
        if minted:
            if mlflow_on:
                env["MLFLOW_TRACKING_TOKEN"] = minted["token"]
            if features_url:
                env["HUBML_FEATURES_TOKEN"] = minted["token"]
            # kept to revoke it when the run ends (the platform's file, never the user's)
            write_private(
                run_dir / TOKEN_ID_FILE, json.dumps({"user": job.owner, "id": minted["id"]})
            )
    return {
        "run_id": run.id,
        "job_id": job.id,
        "run_dir": str(run_dir),
        "input": str(source),
        "parameters": run.parameters or {},
        "notebook": job.notebook,
        "user": job.owner,
        "profile": profile.slug,
        "timeout_s": job.timeout_s,
        "env": env,
    }


async def latest_notebook(sched, job, run_dir: Path) -> Path:
    """track_latest: the notebook as last saved, read from its owner's running server."""
    from hubml.extensions.common.errors import APIError
    from hubml.extensions.common.userfiles import fetch_from_server

    from .notebooks import NotebookError, parse_notebook

    try:
        raw = await fetch_from_server(sched.ctx, job.owner, job.notebook, "track_latest")
        parse_notebook(raw, job.notebook)
    except APIError as e:
        if e.status_code == 503:  # the hub is restarting: the run waits, it is not refused
            from hubml.extensions.common.hub import HubUnavailable

            raise HubUnavailable(e.message) from None
        raise RunRefused(
            f"{e.message}. Turn track_latest off to run the snapshot taken when the "
            f"job was made ({job.content_hash[:12]})."
        ) from None
    except NotebookError as e:
        raise RunRefused(f"track_latest: the saved {job.notebook} cannot run: {e}") from None
    path = run_dir / "input.ipynb"
    write_private(path, raw.decode())
    return path


async def revoke_token(sched, run) -> None:
    """The run's MLflow token authenticates nothing once the run is over."""
    path = sched.run_dir(run) / TOKEN_ID_FILE
    try:
        minted = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if sched.hub is not None and await sched.hub.revoke_token(minted["user"], minted["id"]):
        path.unlink(missing_ok=True)
