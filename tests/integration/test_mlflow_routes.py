"""Every MLflow route through the front door, as bob against alice's run, experiment and models.

The route list is MLflow's own (its Flask URL map), so a route added by an MLflow upgrade is
tried here too. Bob's writes to alice's things are refused, his reads work, every encoded
spelling of a write route is refused, and afterwards alice's things are as she left them.
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from hubml.extensions.tracking import access

pytestmark = pytest.mark.integration

PREFIX = "/services/mlflow/"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    hub = start_hub(tmp_path_factory.mktemp("routes"), {"tracking": {"enabled": True}})
    try:
        wait_for_mlflow(hub, hub.token)
        yield hub
    finally:
        hub.stop()


def call(hub, token, method, path, body=None, raw=None, **kw):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        kw["data"] = json.dumps(body)
        headers["Content-Type"] = "application/json"
    elif raw is not None:
        kw["data"] = raw
    return requests.request(method, hub.at(PREFIX + path), headers=headers, timeout=30, **kw)


def ok(r):
    assert r.status_code == 200, f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}"
    return (
        r.json()
        if r.content and r.headers.get("Content-Type", "").startswith("application/json")
        else {}
    )


@pytest.fixture(scope="module")
def alices(hub):
    """Alice's experiment, run with an artifact, logged model with a file, registered model."""
    t = hub.user_token("alice")
    api = "api/2.0/mlflow/"
    exp = ok(call(hub, t, "POST", api + "experiments/create", {"name": "alice-routes"}))[
        "experiment_id"
    ]
    run = ok(call(hub, t, "POST", api + "runs/create", {"experiment_id": exp}))["run"]["info"][
        "run_id"
    ]
    ok(
        call(
            hub,
            t,
            "PUT",
            f"api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/note.txt",
            raw=b"alice's note",
        )
    )
    logged = ok(
        call(
            hub,
            t,
            "POST",
            api + "logged-models",
            {"experiment_id": exp, "source_run_id": run, "name": "m"},
        )
    )["model"]["info"]["model_id"]
    ok(
        call(
            hub,
            t,
            "PUT",
            f"api/2.0/mlflow-artifacts/artifacts/{exp}/models/{logged}/artifacts/MLmodel",
            raw=b"flavors: {}\n",
        )
    )
    ok(call(hub, t, "POST", api + "registered-models/create", {"name": "routes-M"}))
    ok(
        call(
            hub,
            t,
            "POST",
            api + "model-versions/create",
            {
                "name": "routes-M",
                "source": f"mlflow-artifacts:/{exp}/{run}/artifacts",
                "run_id": run,
            },
        )
    )
    ok(
        call(
            hub,
            t,
            "POST",
            api + "registered-models/alias",
            {"name": "routes-M", "alias": "staging", "version": "1"},
        )
    )
    return {"token": t, "exp": exp, "run": run, "logged": logged, "model": "routes-M"}


def state(hub, a) -> dict:
    """What alice would notice changed."""
    t = a["token"]
    run = ok(call(hub, t, "GET", "api/2.0/mlflow/runs/get", params={"run_id": a["run"]}))["run"]
    exp = ok(
        call(hub, t, "GET", "api/2.0/mlflow/experiments/get", params={"experiment_id": a["exp"]})
    )
    model = ok(
        call(hub, t, "GET", "api/2.0/mlflow/registered-models/get", params={"name": a["model"]})
    )
    logged = ok(call(hub, t, "GET", f"api/2.0/mlflow/logged-models/{a['logged']}"))["model"]["info"]
    note = call(
        hub,
        t,
        "GET",
        f"api/2.0/mlflow-artifacts/artifacts/{a['exp']}/{a['run']}/artifacts/note.txt",
    )
    mlmodel = call(
        hub,
        t,
        "GET",
        f"api/2.0/mlflow-artifacts/artifacts/{a['exp']}/models/{a['logged']}/artifacts/MLmodel",
    )
    return {
        "run": (
            run["info"]["lifecycle_stage"],
            run["info"]["status"],
            sorted(map(str, run["data"].get("tags", []))),
        ),
        "experiment": exp["experiment"],
        "model": (
            model["registered_model"].get("aliases"),
            model["registered_model"].get("tags"),
            model["registered_model"].get("description"),
        ),
        "logged": (logged.get("status"), logged.get("tags")),
        "files": (note.content, mlmodel.content),
    }


def routes():
    from tests.unit.test_access import mlflow_route_rules

    return [(m, r) for m, r in mlflow_route_rules() if m != "GET"]


def fill(rule: str, a: dict, artifact_of: str = "run") -> str:
    art = (
        f"{a['exp']}/{a['run']}/artifacts/note.txt"
        if artifact_of == "run"
        else f"{a['exp']}/models/{a['logged']}/artifacts/MLmodel"
    )
    path = re.sub(r"<path:[^>]+>|\{[^}]+:path\}", art, rule)
    path = path.replace("<model_id>", a["logged"])
    return re.sub(r"<[^>]+>|\{[^}]+\}", "x-1", path).lstrip("/")


def test_bob_cannot_write_alices_things_through_any_mlflow_route(hub, alices, capsys):
    a = alices
    bob = hub.user_token("bob")
    before = state(hub, a)
    body = {
        "run_id": a["run"],
        "experiment_id": a["exp"],
        "name": a["model"],
        "alias": "staging",
        "version": "1",
        "key": "k",
        "value": "v",
        "model_id": a["logged"],
        "source_run_id": a["run"],
        "new_name": "stolen",
        "description": "bob was here",
        "status": 2,
    }
    tried, refused, creations, reads = 0, 0, 0, 0
    for method, rule in routes():
        for artifact_of in ("run", "logged") if re.search(r"<path:|:path}", rule) else ("run",):
            path = fill(rule, a, artifact_of)
            kind = access.find_rule(method, path).kind
            raw = b"bob's bytes" if kind == "artifact" and method == "PUT" else None
            if kind == "experiment_new":
                body = {**body, "name": "alice-routes"}
            elif "name" in body and body["name"] != a["model"]:
                body = {**body, "name": a["model"]}
            r = call(
                hub,
                bob,
                method,
                path,
                None if raw else body,
                raw=raw,
                params={"run_uuid": a["run"], "path": "x"} if "upload-artifact" in path else None,
            )
            tried += 1
            assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text[:300]}"
            if kind in ("read", "graphql"):
                reads += 1
                assert r.status_code != 403, f"{method} {path}: {r.text[:200]}"
            elif kind in ("experiment_new", "model_new"):
                # creating under a name alice holds fails; nothing of hers changes
                creations += 1
                assert r.status_code == 400 and "already exists" in r.text, (
                    f"{method} {path}: {r.text[:200]}"
                )
            else:
                refused += 1
                assert r.status_code in (403, 404, 405), (
                    f"{method} {path} by bob: {r.status_code} {r.text[:300]}"
                )
                assert r.json().get("message"), r.text
    assert state(hub, a) == before
    with capsys.disabled():
        print(
            f"\n{tried} MLflow write requests by bob: {refused} refused, {reads} searches answered, {creations} creations under alice's names failed"
        )
    assert refused >= 250


def test_encoded_spellings_of_every_write_route_are_refused(hub, alices):
    a = alices
    bob, alice = hub.user_token("bob"), a["token"]
    before = state(hub, a)
    count = 0
    for method, rule in routes():
        path = fill(rule, a).rstrip("/")
        head, _, last = path.rpartition("/")
        variants = [
            f"{head}%2F{last}",
            f"{path}%3F",
            f"{path}%23",
            f"{head}/%25{ord(last[0]):02X}{last[1:]}",
        ]
        for variant in variants:
            for token in (bob, alice):
                r = call(
                    hub,
                    token,
                    method,
                    variant,
                    {"run_id": a["run"], "name": a["model"], "alias": "staging"},
                )
                count += 1
                assert r.status_code == 400, f"{method} {variant}: {r.status_code} {r.text[:200]}"
    assert state(hub, a) == before
    assert count > 1000


def test_colleagues_read_everything_and_owners_and_admins_write(hub, alices):
    a = alices
    bob, alice, admin = hub.user_token("bob"), a["token"], hub.user_token("admin")
    for path, params in [
        ("api/2.0/mlflow/runs/get", {"run_id": a["run"]}),
        ("api/2.0/mlflow/experiments/get", {"experiment_id": a["exp"]}),
        ("api/2.0/mlflow/registered-models/get", {"name": a["model"]}),
        (f"api/2.0/mlflow/logged-models/{a['logged']}", None),
        (f"api/2.0/mlflow-artifacts/artifacts/{a['exp']}/{a['run']}/artifacts/note.txt", None),
        ("ajax-api/2.0/mlflow/runs/search", None),
    ]:
        method = "POST" if path.endswith("search") else "GET"
        r = call(
            hub,
            bob,
            method,
            path,
            {"experiment_ids": [a["exp"]]} if method == "POST" else None,
            params=params,
        )
        assert r.status_code == 200, f"{path}: {r.text[:200]}"
    api = "api/2.0/mlflow/"
    ok(
        call(
            hub,
            alice,
            "POST",
            api + "runs/set-tag",
            {"run_id": a["run"], "key": "note", "value": "mine"},
        )
    )
    ok(
        call(
            hub,
            alice,
            "PATCH",
            api + "registered-models/update",
            {"name": a["model"], "description": "alice's"},
        )
    )
    ok(
        call(
            hub,
            alice,
            "POST",
            api + "registered-models/alias",
            {"name": a["model"], "alias": "staging", "version": "1"},
        )
    )
    ok(
        call(
            hub,
            admin,
            "POST",
            api + "runs/set-tag",
            {"run_id": a["run"], "key": "reviewed", "value": "admin"},
        )
    )
    # runs go in one's own experiments; the Default experiment is everyone's
    r = call(hub, bob, "POST", api + "runs/create", {"experiment_id": a["exp"]})
    assert r.status_code == 403 and "create your own experiment" in r.json()["message"]
    ok(call(hub, bob, "POST", api + "runs/create", {"experiment_id": "0"}))
    # the owner tags: nobody but an admin rewrites them, also not the owner
    r = call(
        hub,
        alice,
        "POST",
        api + "experiments/delete-experiment-tag",
        {"experiment_id": a["exp"], "key": "hubml.owner"},
    )
    assert r.status_code == 403
    # alias moves through MLflow's own API are audited like the gated ones
    history = ok(call(hub, alice, "GET", f"hubml/api/models/{a['model']}/history"))["entries"]
    moves = [
        (e["action"], e["alias"], e["from_version"], e["to_version"], e["actor"]) for e in history
    ]
    assert ("set_alias", "staging", None, "1", "alice") in moves  # alices() set it
    assert ("set_alias", "staging", "1", "1", "alice") in moves  # and again above
    source = f"mlflow-artifacts:/{a['exp']}/{a['run']}/artifacts"
    ok(call(hub, admin, "POST", api + "registered-models/create", {"name": "routes-tmp"}))
    ok(
        call(
            hub,
            admin,
            "POST",
            api + "model-versions/create",
            {"name": "routes-tmp", "source": source, "run_id": a["run"]},
        )
    )
    ok(
        call(
            hub,
            admin,
            "POST",
            api + "registered-models/alias",
            {"name": "routes-tmp", "alias": "old", "version": "1"},
        )
    )
    ok(call(hub, admin, "DELETE", api + "registered-models/delete", {"name": "routes-tmp"}))
    history = ok(call(hub, admin, "GET", "hubml/api/models/routes-tmp/history"))["entries"]
    assert [(e["action"], e["alias"], e["from_version"]) for e in history] == [
        ("set_alias", "old", None),
        ("delete_model", "old", "1"),
    ]
    r = call(
        hub,
        bob,
        "POST",
        api + "registered-models/alias",
        {"name": a["model"], "alias": "staging", "version": "1"},
    )
    assert r.status_code == 403 and "maintained by alice" in r.json()["message"]
