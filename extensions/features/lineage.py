"""Which MLflow runs used a feature view, and which registered models came from those runs.

Runs that fetched features carry the tags :mod:`.client` sets (``hubml.features.views``:
``,project:view,project:view,``, delimited so one ``LIKE`` matches one view exactly). They are
looked up through the mlflow service's front door with the asking person's own token, so this
lists exactly the runs and models that person may see in MLflow, and nothing more.
"""

from __future__ import annotations

import json

from tornado import httpclient

VIEWS_TAG = "hubml.features.views"
REFS_TAG = "hubml.features.refs"
SERVICE_TAG = "hubml.features.service"
MAX_RUNS = 50


async def _post(base: str, path: str, token: str, body: dict) -> dict:
    resp = await httpclient.AsyncHTTPClient().fetch(
        base + path,
        method="POST" if body is not None else "GET",
        body=json.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        raise_error=False,
        request_timeout=15,
    )
    if resp.code != 200:
        try:
            message = json.loads(resp.body).get("message", "")
        except (ValueError, TypeError):
            message = ""
        raise LookupError(f"MLflow answered HTTP {resp.code} {message}".strip())
    return json.loads(resp.body)


async def runs_and_models(settings, project: str, view: str, token: str | None) -> dict:
    """``{"runs": [...], "models": [...], "mlflow": "ok"|why not}``."""
    from hubml.extensions.common import urls

    base = urls.service_internal_url("mlflow") if settings.tracking.enabled else ""
    if not base:
        return {"runs": [], "models": [], "mlflow": "experiment tracking is off on this hub"}
    if not token:
        return {"runs": [], "models": [], "mlflow": "no token to ask MLflow with"}
    api = base + "api/2.0/mlflow/"
    try:
        exps = await _post(api, "experiments/search", token, {"max_results": 1000})
        ids = [e["experiment_id"] for e in exps.get("experiments", [])]
        found = (
            await _post(
                api,
                "runs/search",
                token,
                {
                    "experiment_ids": ids,
                    "filter": f"tags.`{VIEWS_TAG}` LIKE '%,{project}:{view},%'",
                    "max_results": MAX_RUNS,
                    "order_by": ["attributes.start_time DESC"],
                },
            )
            if ids
            else {}
        )
        runs = []
        for run in found.get("runs", []):
            info, tags = run["info"], {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            runs.append(
                {
                    "run_id": info["run_id"],
                    "run_name": info.get("run_name") or tags.get("mlflow.runName", ""),
                    "experiment_id": info["experiment_id"],
                    "user": info.get("user_id") or tags.get("mlflow.user", ""),
                    "status": info.get("status"),
                    "start_time": info.get("start_time"),
                    "features": [
                        r for r in tags.get(REFS_TAG, "").split(",") if r.startswith(view + ":")
                    ],
                    "feature_service": tags.get(SERVICE_TAG) or None,
                }
            )
        models = []
        if runs:
            ids = ", ".join(f"'{r['run_id']}'" for r in runs)
            versions = await _post(
                api,
                "model-versions/search?" + urlencode({"filter": f"run_id IN ({ids})"}),
                token,
                None,
            )
            for v in versions.get("model_versions", []):
                models.append(
                    {
                        "name": v["name"],
                        "version": v["version"],
                        "run_id": v.get("run_id"),
                        "stage": v.get("current_stage"),
                    }
                )
    except (LookupError, OSError, ValueError, KeyError) as e:
        return {"runs": [], "models": [], "mlflow": f"MLflow did not answer: {e}"}
    return {"runs": runs, "models": models, "mlflow": "ok"}


def urlencode(params: dict) -> str:
    from urllib.parse import urlencode as encode

    return encode(params)
