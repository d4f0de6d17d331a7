"""The front door's route table against MLflow's own route list, and its decisions.

When an MLflow upgrade adds a route, ``test_every_mlflow_route_is_classified`` fails and names it:
somebody must decide who may call it before it is reachable.
"""

from __future__ import annotations

import json
import re

import pytest

from hubml.extensions.tracking import access
from hubml.extensions.tracking.access import Facts, Identity, Need, Refusal

ALICE = Identity("alice")
BOB = Identity("bob")
ADMIN = Identity("root-admin", admin=True)
RUN = "0123456789abcdef0123456789abcdef"


def mlflow_route_rules() -> list[tuple[str, str]]:
    """(method, route) of the MLflow server: its Flask routes and the FastAPI routers it mounts
    in front of them (traces, jobs, gateway, assistant, artifacts, MCP servers, server info)."""
    import warnings

    from mlflow.server import app

    out = []
    for rule in app.url_map.iter_rules():
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            out.append((method, rule.rule))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.fastapi_app import create_fastapi_app

        fastapi_app = create_fastapi_app(app)
    for included in fastapi_app.routes:
        context = getattr(included, "include_context", None)
        if context is None:
            continue  # the mount of the Flask app itself
        for route in context.included_router.routes:
            for method in (getattr(route, "methods", None) or set()) - {"HEAD", "OPTIONS"}:
                out.append((method, context.prefix + route.path))
    return sorted(set(out))


def mlflow_routes() -> list[tuple[str, str]]:
    """(method, path relative to the service prefix) for every route, placeholders filled."""
    out = []
    for method, rule in mlflow_route_rules():
        path = re.sub(r"<path:[^>]+>|\{[^}]+:path\}", f"1/{RUN}/artifacts/model/MLmodel", rule)
        path = re.sub(r"<[^>]+>|\{[^}]+\}", "x-1", path).lstrip("/")
        out.append((method, path))
    return out


def test_every_mlflow_route_is_classified(capsys):
    routes = mlflow_routes()
    unclassified = [(m, p) for m, p in routes if access.find_rule(m, p) is None]
    assert not unclassified, f"MLflow routes no rule of access.RULES classifies: {unclassified}"
    writes = [(m, p) for m, p in routes if m not in access.READ_METHODS]
    kinds = {}
    for m, p in writes:
        kinds.setdefault(access.find_rule(m, p).kind, []).append(f"{m} {p}")
    with capsys.disabled():
        print(
            f"\n{len(routes)} MLflow routes classified, {len(writes)} of them writes: "
            + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items()))
        )
    # a POST that only reads is named in the table one by one; no write route falls to "read"
    # by accident
    assert kinds["graphql"] == ["POST graphql"]
    for entry in kinds.get("read", []):
        assert re.search(r"search|get-latest-versions|presigned-download-url|graphql", entry), entry


def test_graphql_offers_searches_only():
    """GraphQL POSTs pass as reads: true only while its schema has no real mutation."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    mutations = schema.graphql_schema.mutation_type.fields
    assert set(mutations) <= {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}, mutations


@pytest.mark.parametrize(
    "raw",
    [
        "api/2.0/mlflow/runs/delete%3F",
        "api/2.0/mlflow/runs/delete%23",
        "api/2.0/mlflow/runs/d%2565lete",
        "api/2.0/mlflow/runs%252Fdelete",
        "api/2.0/mlflow/runs%2Fdelete",
        "api/2.0/mlflow/runs%2fdelete",
        "api/2.0/mlflow/registered-models/alias%3F",
        "api/2.0/mlflow/runs/../runs/delete",
        "api/2.0/mlflow//runs/delete",
        "api/2.0/mlflow/runs/./delete",
        "api/2.0/mlflow/runs/delete%00",
        "api/2.0/mlflow/runs/delete%5C",
    ],
)
def test_encoded_paths_are_refused(raw):
    with pytest.raises(Refusal) as e:
        access.plan("POST", raw, "", json.dumps({"run_id": RUN}).encode(), BOB)
    assert e.value.status == 400


def test_plain_encoding_reaches_the_same_route():
    """%-encoding of ordinary characters is decoded once and forwarded re-encoded, identically."""
    pl = access.plan(
        "POST", "api/2.0/mlflow/runs/%64elete", "", json.dumps({"run_id": RUN}).encode(), BOB
    )
    assert pl.path == "api/2.0/mlflow/runs/delete" and pl.needs == [Need("run", RUN)]
    assert access.forward_path("api/2.0/mlflow-artifacts/artifacts/1/x/artifacts/a b.txt").endswith(
        "a%20b.txt"
    )


def test_unknown_writes_are_refused():
    for method, path in [
        ("POST", "api/2.0/mlflow/runs/frobnicate"),
        ("DELETE", "api/2.0/mlflow/runs/get"),
    ]:
        with pytest.raises(Refusal) as e:
            access.plan(method, path, "", b"{}", BOB)
        assert e.value.status in (404, 405) and "nothing was changed" in e.value.message


def test_protobuf_aliases_and_string_bodies_are_one_body():
    """MLflow accepts runId for run_id and a JSON string holding the object: checked as one."""
    pl = access.plan(
        "POST", "api/2.0/mlflow/runs/delete", "", b'{"runId": "%s"}' % RUN.encode(), BOB
    )
    assert pl.needs == [Need("run", RUN)]
    assert json.loads(pl.body) == {"run_id": RUN}
    with pytest.raises(Refusal, match="twice"):
        access.plan("POST", "api/2.0/mlflow/runs/delete", "", b'{"runId": "a", "run_id": "b"}', BOB)
    with pytest.raises(Refusal, match="JSON object"):
        access.plan(
            "POST",
            "api/2.0/mlflow/runs/delete",
            "",
            json.dumps(json.dumps({"run_id": RUN})).encode(),
            BOB,
        )
    # both spellings of the run name a thing to check: run_uuid too
    pl = access.plan(
        "POST",
        "api/2.0/mlflow/runs/update",
        "",
        json.dumps({"run_id": RUN, "run_uuid": "b" * 32}).encode(),
        BOB,
    )
    assert {n.key for n in pl.needs} == {RUN, "b" * 32}


def test_creation_stamps_the_owner_whatever_the_client_sent():
    body = {
        "experiment_id": "7",
        "tags": [{"key": "mlflow.user", "value": "alice"}],
        "user_id": "alice",
    }
    pl = access.plan("POST", "api/2.0/mlflow/runs/create", "", json.dumps(body).encode(), BOB)
    sent = json.loads(pl.body)
    tags = {t["key"]: t["value"] for t in sent["tags"]}
    assert tags == {"mlflow.user": "bob", "hubml.user": "bob"} and sent["user_id"] == "bob"
    assert pl.needs == [Need("experiment", "7")]  # runs go in one's own experiments
    pl = access.plan("POST", "api/2.0/mlflow/runs/create", "", b"{}", BOB)
    assert pl.needs == []  # the Default experiment is everyone's
    for path, tag in [
        ("api/2.0/mlflow/experiments/create", "hubml.owner"),
        ("api/2.0/mlflow/registered-models/create", "hubml.owner"),
    ]:
        pl = access.plan("POST", path, "", json.dumps({"name": "M"}).encode(), BOB)
        assert {"key": tag, "value": "bob"} in json.loads(pl.body)["tags"]
    pl = access.plan(
        "POST",
        "api/2.0/mlflow/logged-models",
        "",
        json.dumps({"experiment_id": "3", "source_run_id": RUN}).encode(),
        BOB,
    )
    assert pl.needs == [Need("run", RUN, experiment_id="3")]
    assert {"key": "hubml.user", "value": "bob"} in json.loads(pl.body)["tags"]


@pytest.mark.parametrize(
    "path,body",
    [
        ("api/2.0/mlflow/runs/set-tag", {"run_id": RUN, "key": "hubml.user", "value": "carol"}),
        ("api/2.0/mlflow/runs/delete-tag", {"run_id": RUN, "key": "mlflow.user"}),
        (
            "api/2.0/mlflow/runs/log-batch",
            {"run_id": RUN, "tags": [{"key": "hubml.user", "value": "b"}]},
        ),
        (
            "api/2.0/mlflow/experiments/delete-experiment-tag",
            {"experiment_id": "1", "key": "hubml.owner"},
        ),
        (
            "api/2.0/mlflow/experiments/set-experiment-tag",
            {"experiment_id": "1", "key": "hubml.owner", "value": "b"},
        ),
        (
            "api/2.0/mlflow/registered-models/set-tag",
            {"name": "M", "key": "hubml.owner", "value": "b"},
        ),
        (
            "api/2.0/mlflow/registered-models/set-tag",
            {"name": "M", "key": "hubml.gate.min_accuracy", "value": "0"},
        ),
        (
            "api/2.0/mlflow/model-versions/set-tag",
            {"name": "M", "version": "1", "key": "hubml.gates_passed", "value": "true"},
        ),
        (
            "api/2.0/mlflow/registered-models/create",
            {"name": "M", "tags": [{"key": "hubml.maintainers", "value": "g"}]},
        ),
    ],
)
def test_platform_tags_are_admins_only(path, body):
    with pytest.raises(Refusal) as e:
        access.plan("POST", path, "", json.dumps(body).encode(), BOB)
    assert e.value.status == 403 and "platform" in e.value.message
    access.plan("POST", path, "", json.dumps(body).encode(), ADMIN)  # the admin's transfer


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("alias", ["champion", "Champion", "challenger"])
def test_gated_aliases_move_only_through_the_registry(method, alias):
    body = {"name": "M", "alias": alias, "version": "1"}
    for who in (BOB, ADMIN):
        with pytest.raises(Refusal, match="gated flow"):
            access.plan(
                method, "api/2.0/mlflow/registered-models/alias", "", json.dumps(body).encode(), who
            )
    # the alias in the query is not what MLflow reads for a DELETE: the body is checked, and
    # the query is not forwarded
    pl = access.plan(
        "DELETE",
        "api/2.0/mlflow/registered-models/alias",
        "name=M&alias=champion",
        json.dumps({"name": "M", "alias": "staging"}).encode(),
        BOB,
    )
    assert pl.query == "" and pl.needs == [Need("model", "M")]


def test_artifact_paths_name_their_owner():
    pl = access.plan(
        "PUT", f"api/2.0/mlflow-artifacts/artifacts/4/{RUN}/artifacts/x.txt", "", b"data", BOB
    )
    assert pl.needs == [Need("run", RUN, experiment_id="4")] and pl.body is None
    pl = access.plan(
        "PUT", "api/2.0/mlflow-artifacts/artifacts/4/models/m-abc/artifacts/MLmodel", "", b"x", BOB
    )
    assert pl.needs == [Need("logged", "m-abc", experiment_id="4")]
    pl = access.plan(
        "POST",
        "api/2.0/mlflow-artifacts/mpu/create/4/models/m-abc/artifacts",
        "",
        b'{"path": "model.pkl"}',
        BOB,
    )
    assert pl.needs == [Need("logged", "m-abc", experiment_id="4")]
    for bad in ["4/elsewhere.txt", "4/models/m-abc/MLmodel", "x/y/artifacts/z"]:
        with pytest.raises(Refusal) as e:
            access.plan("PUT", f"api/2.0/mlflow-artifacts/artifacts/{bad}", "", b"x", BOB)
        assert e.value.status == 403
    with pytest.raises(Refusal, match="relative"):
        access.plan(
            "POST",
            "api/2.0/mlflow-artifacts/mpu/create/4/models/m-abc/artifacts",
            "",
            b'{"path": "../../x"}',
            BOB,
        )
    pl = access.plan(
        "POST", "ajax-api/2.0/mlflow/upload-artifact", f"run_uuid={RUN}&path=a.txt", b"x", BOB
    )
    assert pl.needs == [Need("run", RUN)] and pl.query
    with pytest.raises(Refusal, match="twice"):
        access.plan(
            "POST",
            "ajax-api/2.0/mlflow/upload-artifact",
            f"run_uuid={RUN}&run_uuid=b&path=a",
            b"x",
            BOB,
        )


def test_logged_model_ids_in_path_and_body_are_both_checked():
    pl = access.plan(
        "PATCH",
        "api/2.0/mlflow/logged-models/m-bob",
        "",
        b'{"model_id": "m-alice", "status": 2}',
        BOB,
    )
    assert {n.key for n in pl.needs} == {"m-bob", "m-alice"}


@pytest.mark.parametrize(
    "method,path,what",
    [
        ("POST", "api/3.0/mlflow/traces", "traces"),
        ("POST", "api/3.0/mlflow/gateway/secrets/create", "gateway"),
        ("GET", "ajax-api/2.0/mlflow/gateway-proxy", "gateway"),
        ("POST", "ajax-api/3.0/mlflow/ui-telemetry", "telemetry"),
        ("POST", "api/2.0/mlflow/artifacts/presigned-upload-url", "presigned"),
        ("POST", "api/3.0/mlflow/scorer/invoke", "scorers"),
        ("GET", "ajax-api/3.0/mlflow/assistant/config", "assistant"),
        ("POST", "ajax-api/3.0/mlflow/assistant/message", "assistant"),
        ("POST", "ajax-api/3.0/jobs/", "jobs"),
        ("GET", "gateway/mlflow/v1/models", "gateway"),
        ("POST", "v1/traces", "traces"),
    ],
)
def test_features_hubml_does_not_offer_are_refused_to_everyone(method, path, what):
    for who in (BOB, ADMIN):
        with pytest.raises(Refusal, match=what) as e:
            access.plan(method, path, "", b"{}", who)
        assert e.value.status == 403


def test_admin_only_and_registry_only_routes():
    for path in ["api/2.0/mlflow/webhooks", "api/2.0/mlflow/registered-models/rename"]:
        with pytest.raises(Refusal, match="only admins"):
            access.plan("POST", path, "", b'{"name": "M"}', BOB)
    with pytest.raises(Refusal, match="registry API"):
        access.plan(
            "DELETE",
            "api/2.0/mlflow/model-versions/delete",
            "",
            b'{"name": "M", "version": "1"}',
            ADMIN,
        )


@pytest.mark.parametrize(
    "body,field",
    [
        ({"run_id": 5}, "run_id"),
        ({"run_id": "x" * 300}, "run_id"),
        ({"run_id": "a/b"}, "run_id"),
        ({}, "run_id"),
        ({"run_id": RUN, "key": "k", "value": 3}, "value"),
        ({"run_id": RUN, "tags": "nope"}, "tags"),
        ({"run_id": RUN, "tags": [{"key": "k", "value": 1}]}, "tag"),
    ],
)
def test_bad_input_names_the_field(body, field):
    path = "api/2.0/mlflow/runs/log-batch" if "tags" in body else "api/2.0/mlflow/runs/set-tag"
    with pytest.raises(Refusal) as e:
        access.plan("POST", path, "", json.dumps(body).encode(), BOB)
    assert e.value.status == 400 and field in e.value.message


def test_decide_owners():
    pl = access.plan(
        "POST", "api/2.0/mlflow/runs/delete", "", json.dumps({"run_id": RUN}).encode(), BOB
    )
    alice_run = Facts(True, {"hubml.user": "alice"}, "1")
    with pytest.raises(Refusal, match="belongs to alice; bob may not") as e:
        access.decide(pl, BOB, [alice_run])
    assert e.value.status == 403
    access.decide(pl, ALICE, [alice_run])
    access.decide(pl, ADMIN, [alice_run])
    with pytest.raises(Refusal) as e:
        access.decide(pl, ALICE, [Facts(False)])
    assert e.value.status == 404
    # a run of experiment 1 named under experiment 4's folder
    pl = access.plan(
        "PUT", f"api/2.0/mlflow-artifacts/artifacts/4/{RUN}/artifacts/x", "", b"x", ALICE
    )
    with pytest.raises(Refusal, match="not in experiment 4"):
        access.decide(pl, ALICE, [alice_run])
    # registered models: owner, maintainer groups, nobody else; no owner: admins only
    pl = access.plan(
        "PATCH",
        "api/2.0/mlflow/registered-models/update",
        "",
        b'{"name": "M", "description": "x"}',
        BOB,
    )
    model = Facts(True, {"hubml.owner": "alice", "hubml.maintainers": "ml-team, ops"})
    with pytest.raises(Refusal, match="maintained by alice and the group"):
        access.decide(pl, BOB, [model])
    access.decide(pl, Identity("bob", groups=frozenset({"ops"})), [model])
    access.decide(pl, ALICE, [model])
    with pytest.raises(Refusal, match="nobody"):
        access.decide(pl, ALICE, [Facts(True, {})])
    # logged models logged before owners were stamped: their source run's user
    pl = access.plan("DELETE", "api/2.0/mlflow/logged-models/m-1", "", b"", BOB)
    with pytest.raises(Refusal, match="belongs to alice"):
        access.decide(pl, BOB, [Facts(True, {}, "1", source_run_owner="alice")])
    # runs in someone else's experiment
    pl = access.plan("POST", "api/2.0/mlflow/runs/create", "", b'{"experiment_id": "1"}', BOB)
    with pytest.raises(Refusal, match="create your own experiment"):
        access.decide(pl, BOB, [Facts(True, {"hubml.owner": "alice"}, "1")])
