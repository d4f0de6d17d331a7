"""Gated publishing, approval, rollback, owners and audit against a real MLflow server, then
the registry API through a real hub: who may do what, and what bad input is answered.

One MLflow server and six logged runs per module for the service-level tests, one hub (with
its MLflow service) and three runs logged through its front door for the HTTP tests (logging a
model costs seconds); each test uses its own registered model names, so the tests do not
depend on each other's order.
"""

import json
import os
import threading
import time
import warnings

import pytest

from hubml.extensions.tracking.gatesandbox import GateSandbox
from hubml.extensions.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    AuditLog,
    GatePolicy,
    RegistryError,
    RegistryService,
)
from hubml.hub_config import accounts
from tests.gaterunutil import log_code_model, start_runners
from tests.mlflowserver import start_mlflow

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = "alice", "bob", "carol"
ROOT = os.geteuid() == 0


def _log_run(model, X_train, X_test, y_train, y_test, *, user, input_example=True):
    import mlflow
    import mlflow.sklearn

    model.fit(X_train, y_train)
    with mlflow.start_run(tags={"hubml.user": user}) as run:
        mlflow.log_metric("accuracy", float(model.score(X_test, y_test)))
        mlflow.sklearn.log_model(
            model, name="model", input_example=X_train.head(5) if input_example else None
        )
    return run.info.run_id


def _log_broken_run(X, *, user):
    """A pyfunc model whose predict raises, as a candidate with a runtime bug would."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class Broken(mlflow.pyfunc.PythonModel):
        # the type hint spares a warning that MLflow emits each time the class is unpickled
        def predict(self, context, model_input: pd.DataFrame, params=None) -> list[int]:
            raise RuntimeError("feature store unreachable")

    example = X.head(3)
    with mlflow.start_run(tags={"hubml.user": user}) as run:
        mlflow.log_metric("accuracy", 0.99)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Broken(),
            input_example=example,
            signature=infer_signature(example, [0, 0, 0]),
        )
    return run.info.run_id


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs(mlflow_server):
    """Run ids by test accuracy: good (1.0), ok (strongly regularised, 0.87), weak (always the
    majority class, 0.33), good but logged without an input example, one whose predict raises,
    and a good one whose logged model a test deletes."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    split = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        mlflow.set_experiment("registry-tests")
        with warnings.catch_warnings():
            # mlflow's own hints while inferring signatures (integer labels, pandas deprecations)
            warnings.filterwarnings("ignore", module=r"mlflow\.")
            return {
                "good": _log_run(LogisticRegression(max_iter=1000), *split, user=ALICE),
                "ok": _log_run(LogisticRegression(C=0.01, max_iter=1000), *split, user=ALICE),
                "weak": _log_run(DummyClassifier(strategy="most_frequent"), *split, user=ALICE),
                "no_example": _log_run(
                    LogisticRegression(max_iter=1000), *split, user=ALICE, input_example=False
                ),
                "broken": _log_broken_run(X, user=ALICE),
                # its logged model is deleted by a test
                "doomed": _log_run(LogisticRegression(max_iter=1000), *split, user=ALICE),
            }
    finally:
        # the registry under test uses its own client; leave no global state to other modules
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def gates(tmp_path_factory):
    """As root, the gates run each candidate as its publisher's account through a runner
    service, as the mlflow service does; otherwise in a child of this process."""
    if not ROOT:
        yield GateSandbox()
        return
    runners = start_runners(tmp_path_factory.mktemp("gate-runners"))
    try:
        yield GateSandbox(runner_socket=str(runners.socket))
    finally:
        runners.stop()


@pytest.fixture
def registry(mlflow_server, runs, gates, tmp_path):
    from mlflow import MlflowClient

    from hubml.extensions.tracking.registry.store import MLFLOW_REQUEST_LIMITS

    # the service bounds this process's MLflow retries; leave other tests MLflow's defaults
    saved = {key: os.environ.get(key) for key in MLFLOW_REQUEST_LIMITS}
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    yield RegistryService(MlflowClient(mlflow_server.url), audit, gates=gates)
    audit.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def aliases(registry, name):
    return registry.describe(name)["aliases"]


def champion_of(registry, name, run_id, *, author=ALICE, approver=BOB):
    """Publish ``run_id`` and have ``approver`` make it the champion; return the version."""
    published = registry.publish(name, run_id, user=author, reason="first")
    assert published.ok, published.report.summary()
    registry.approve(name, published.version, approver=approver, reason="looks good")
    return published.version


def test_first_model_passes_the_gates_and_becomes_challenger(registry, runs):
    result = registry.publish("iris-first", runs["ok"], user=ALICE, reason="baseline")

    assert result.ok and result.version == "1"
    assert [g.name for g in result.report.results] == ["metric", "inference", "latency"]
    assert all(g.passed for g in result.report.results), result.report.summary()
    assert "no champion yet" in result.report.results[0].detail
    assert aliases(registry, "iris-first") == {CHALLENGER: "1"}
    json.dumps(result.to_dict())  # what an HTTP service returns
    version = registry.describe("iris-first")["versions"][0]
    assert (
        version["author"] == ALICE and version["run_id"] == runs["ok"] and version["gates_passed"]
    )


def test_better_candidate_passes_and_gets_challenger_beside_the_champion(registry, runs):
    champion_of(registry, "iris-better", runs["ok"])

    table = registry.compare("iris-better", runs["good"])
    assert table.champion_version == "1"
    assert table.rows[0].metric == "accuracy" and table.rows[0].gated and table.rows[0].delta > 0

    result = registry.publish("iris-better", runs["good"], user=ALICE)
    assert result.ok and result.version == "2"
    metric = result.report.results[0]
    assert metric.passed and metric.numbers["champion_version"] == "1"
    assert metric.detail == "accuracy 1 >= champion 0.8667 (v1) - tolerance 0.00"
    assert aliases(registry, "iris-better") == {CHAMPION: "1", CHALLENGER: "2"}


def test_worse_candidate_is_rejected_with_numbers_and_nothing_changes(registry, runs):
    champion_of(registry, "iris-worse", runs["good"])
    before = registry.describe("iris-worse")

    result = registry.publish("iris-worse", runs["weak"], user=ALICE)

    assert not result.ok and result.version is None
    metric = result.report.results[0]
    assert not metric.passed
    champ = metric.numbers["champion"]
    assert metric.detail == f"accuracy 0.3333 < champion {champ:.4g} (v1) - tolerance 0.00"
    assert metric.numbers["candidate"] == pytest.approx(1 / 3, abs=0.01)
    # gates (b) and (c) still report, so one attempt says everything that is wrong
    assert [g.passed for g in result.report.results] == [False, True, True]
    after = registry.describe("iris-worse")
    assert after["aliases"] == before["aliases"] == {CHAMPION: "1"}
    assert [v["version"] for v in after["versions"]] == ["1"]
    rejected = registry.history("iris-worse")[-1]
    assert rejected.action == "publish_rejected" and rejected.gates[0]["detail"] == metric.detail
    assert json.loads(json.dumps(result.to_dict()))["gates"]["passed"] is False


def test_tolerance_from_the_model_policy_admits_a_slightly_worse_candidate(registry, runs):
    name = "iris-tolerance"
    champion_of(registry, name, runs["good"])
    registry.set_policy(name, GatePolicy(tolerance=0.5), user=ALICE, reason="noisy metric")
    assert registry.policy(name) == GatePolicy(tolerance=0.5)

    result = registry.publish(name, runs["ok"], user=ALICE)
    assert result.ok, result.report.summary()
    assert "- tolerance 0.50" in result.report.results[0].detail


def test_model_without_input_example_fails_the_inference_gate(registry, runs):
    result = registry.publish("iris-noexample", runs["no_example"], user=ALICE)

    assert not result.ok
    inference, latency = result.report.results[1:]
    assert not inference.passed
    assert "no input example" in inference.detail and "input_example=" in inference.detail
    assert not latency.passed and "not measured" in latency.detail
    with pytest.raises(RegistryError) as e:
        registry.describe("iris-noexample")
    assert e.value.status == 404  # nothing was registered, not even the model


def test_model_whose_predict_raises_fails_the_inference_gate_with_the_error(registry, runs):
    result = registry.publish("iris-broken", runs["broken"], user=ALICE)

    assert not result.ok
    assert result.report.results[0].passed  # its metric was fine
    assert result.report.results[1].detail == (
        "test inference on the input example failed: RuntimeError: feature store unreachable"
    )


def test_latency_gate_reports_the_measured_p95(registry, runs):
    name = "iris-latency"
    assert registry.publish(name, runs["good"], user=ALICE).ok
    registry.set_policy(name, GatePolicy(latency_budget_ms=0.0001, latency_trials=5), user=ALICE)

    result = registry.publish(name, runs["good"], user=ALICE)

    assert not result.ok
    latency = result.report.results[2]
    assert not latency.passed and latency.numbers["trials"] == 5
    p95 = latency.numbers["p95_ms"]
    assert p95 > 0.0001
    assert latency.detail.startswith(
        f"p95 latency {p95:.4g} ms > budget 0.0001 ms over 5 predictions"
    )
    assert aliases(registry, name) == {CHALLENGER: "1"}  # the refused candidate moved nothing


def test_self_approval_is_refused(registry, runs):
    name = "iris-self"
    version = registry.publish(name, runs["good"], user=ALICE).version

    with pytest.raises(RegistryError) as e:
        registry.approve(name, version, approver=ALICE)
    assert e.value.status == 403 and "author" in e.value.message
    # whoever made the run counts as an author too, even if someone else published it (carol,
    # in a maintainer group an admin added)
    registry.set_owners(name, maintainers=["ml-team"], user="root", admin=True)
    version2 = registry.publish(name, runs["good"], user=CAROL, user_groups=["ml-team"]).version
    with pytest.raises(RegistryError) as e:
        registry.approve(name, version2, approver=ALICE)
    assert e.value.status == 403
    assert CHAMPION not in aliases(registry, name)


def test_approval_by_another_user_moves_champion_and_clears_challenger(registry, runs):
    name = "iris-approve"
    version = registry.publish(name, runs["good"], user=ALICE).version
    request = registry.request_promotion(name, version, user=ALICE, reason="ready")
    assert (request.action, request.to_version) == ("request_promotion", version)

    entry = registry.approve(name, version, approver=BOB, reason="reviewed")

    assert (entry.action, entry.alias, entry.from_version, entry.to_version) == (
        "approve",
        CHAMPION,
        None,
        "1",
    )
    assert entry.actor == BOB and entry.gates[0]["passed"]
    assert aliases(registry, name) == {CHAMPION: "1"}
    assert registry.resolve_alias(name, "@champion") == "1"
    with pytest.raises(RegistryError) as e:
        registry.approve(name, version, approver=CAROL)
    assert e.value.status == 409 and "already @champion" in e.value.message


def test_a_version_registered_around_the_gates_cannot_be_approved(registry, runs):
    name = "iris-forged"
    registry.publish(name, runs["good"], user=ALICE)
    # straight through MLflow, with the tags publish would have written
    logged = registry.client.get_run(runs["weak"]).outputs.model_outputs[0].model_id
    forged = registry.client.create_model_version(
        name,
        f"models:/{logged}",
        run_id=runs["weak"],
        model_id=logged,
        tags={"hubml.gates_passed": "true", "hubml.author": CAROL},
    )

    with pytest.raises(RegistryError) as e:
        registry.approve(name, forged.version, approver=BOB)
    assert e.value.status == 409 and "not published through the gates" in e.value.message


def test_approver_group_is_enforced(registry, runs):
    name = "iris-group"
    version = registry.publish(name, runs["good"], user=ALICE).version
    registry.set_policy(name, GatePolicy(approver_group="reviewers"), user=ALICE)

    with pytest.raises(RegistryError) as e:
        registry.approve(name, version, approver=BOB, approver_groups=["data-science"])
    assert e.value.status == 403 and "'reviewers'" in e.value.message
    # the group also guards the policy itself, or an author could drop it
    with pytest.raises(RegistryError) as e:
        registry.set_policy(name, GatePolicy(), user=ALICE, user_groups=["data-science"])
    assert e.value.status == 403

    registry.approve(name, version, approver=CAROL, approver_groups=["reviewers"])
    assert aliases(registry, name)[CHAMPION] == version


def test_rollback_restores_the_previous_champion_and_history_lists_every_move(registry, runs):
    name = "iris-rollback"
    champion_of(registry, name, runs["ok"])  # v1
    v2 = registry.publish(name, runs["good"], user=ALICE, reason="better").version
    registry.approve(name, v2, approver=BOB, reason="clearly better")

    with pytest.raises(RegistryError) as e:
        registry.rollback(name, user=CAROL)  # neither owner, maintainer, approver nor admin
    assert e.value.status == 403 and "alice" in e.value.message
    entry = registry.rollback(name, user=ALICE, reason="v2 misbehaves in production")
    assert (entry.action, entry.from_version, entry.to_version) == ("rollback", "2", "1")
    assert aliases(registry, name) == {CHAMPION: "1"}
    with pytest.raises(RegistryError) as e:
        registry.rollback(name, user=ALICE)
    assert e.value.status == 409 and "first @champion" in e.value.message

    moves = [
        (e.action, e.alias, e.from_version, e.to_version, e.actor)
        for e in registry.history(name)
        if e.alias is not None
    ]
    assert moves == [
        ("publish", CHALLENGER, None, "1", ALICE),
        ("approve", CHAMPION, None, "1", BOB),
        ("approve", CHALLENGER, "1", None, BOB),
        ("publish", CHALLENGER, None, "2", ALICE),
        ("approve", CHAMPION, "1", "2", BOB),
        ("approve", CHALLENGER, "2", None, BOB),
        ("rollback", CHAMPION, "2", "1", ALICE),
    ]
    history = registry.history(name)
    assert [e.id for e in history] == sorted(e.id for e in history)
    assert all(e.at.endswith("+00:00") for e in history)
    assert history[-1].reason == "v2 misbehaves in production"
    assert history[3].gates and all(g["passed"] for g in history[3].gates)


@pytest.mark.parametrize(
    "bad_name, says",
    [("team/model", "'/'"), ("", "required"), ("models:x", "':'"), ("x" * 257, "257 characters")],
)
def test_invalid_model_name_is_a_clear_400(registry, runs, bad_name, says):
    with pytest.raises(RegistryError) as e:
        registry.publish(bad_name, runs["good"], user=ALICE)
    assert e.value.status == 400 and says in e.value.message


def test_unknown_alias_lists_the_existing_ones(registry, runs):
    name = "iris-alias"
    registry.publish(name, runs["good"], user=ALICE)

    with pytest.raises(RegistryError) as e:
        registry.resolve_alias(name, "staging")
    assert e.value.status == 404
    assert (
        e.value.message
        == "model 'iris-alias' has no alias @staging; existing aliases: @challenger (v1)"
    )
    with pytest.raises(RegistryError) as e:
        registry.compare(name, runs["ok"], against="production")
    assert e.value.status == 404 and "@challenger (v1)" in e.value.message


def test_unknown_run_version_and_model_are_404(registry, runs):
    with pytest.raises(RegistryError) as e:
        registry.publish("iris-missing", "0" * 32, user=ALICE)
    assert e.value.status == 404 and "not found" in e.value.message
    with pytest.raises(RegistryError) as e:
        registry.publish("iris-missing", runs["good"], user=ALICE, artifact_path="other")
    assert e.value.status == 404 and "models logged in this run: model" in e.value.message
    with pytest.raises(RegistryError) as e:
        registry.rollback("iris-missing", user=ALICE)
    assert e.value.status == 404
    registry.publish("iris-missing", runs["good"], user=ALICE)
    with pytest.raises(RegistryError) as e:
        registry.approve("iris-missing", 7, approver=BOB)
    assert e.value.status == 404 and "versions: 1" in e.value.message


# -- owners, deletion and bounded input, at the service -----------------------------------------


def test_a_policy_never_registers_a_name(registry, runs):
    with pytest.raises(RegistryError) as e:
        registry.set_policy("iris-unused", GatePolicy(tolerance=0.9), user=BOB)
    assert e.value.status == 404 and "publish a version first" in e.value.message
    result = registry.publish("iris-unused", runs["good"], user=ALICE)
    assert result.ok and registry.owners("iris-unused").owner == ALICE
    assert registry.policy("iris-unused") == GatePolicy()  # bob's policy was never stored


def test_a_model_without_owner_takes_versions_from_admins_only(registry, runs):
    name = "iris-legacy"
    registry.client.create_registered_model(name)  # as before hubml recorded owners

    with pytest.raises(RegistryError) as e:
        registry.publish(name, runs["good"], user=ALICE)
    assert e.value.status == 403
    assert "no owner" in e.value.message and "admin can assign one" in e.value.message
    assert registry.publish(name, runs["good"], user="root", admin=True).ok
    owners = registry.set_owners(name, owner=ALICE, user="root", admin=True, reason="hers")
    assert (owners.owner, owners.maintainers) == (ALICE, [])
    assert registry.publish(name, runs["good"], user=ALICE).ok
    (entry,) = [e for e in registry.history(name) if e.action == "set_owners"]
    assert entry.actor == "root"
    change = json.loads(entry.reason)
    assert change == {
        "owner": ALICE,
        "maintainers": [],
        "was": {"owner": None, "maintainers": []},
        "reason": "hers",
    }


def test_deleting_versions_keeps_the_aliases_and_rollback_honest(registry, runs):
    name = "iris-delete"
    champion_of(registry, name, runs["ok"])  # v1
    v2 = registry.publish(name, runs["good"], user=ALICE).version
    for version, alias in (("1", CHAMPION), (v2, CHALLENGER)):
        with pytest.raises(RegistryError) as e:
            registry.delete_version(name, version, user=ALICE)
        assert e.value.status == 409 and f"is @{alias}" in e.value.message
    with pytest.raises(RegistryError) as e:
        registry.delete_version(name, v2, user=BOB)
    assert e.value.status == 403

    registry.approve(name, v2, approver=BOB)
    entry = registry.delete_version(name, "1", user=ALICE, reason="superseded")
    assert (entry.action, entry.from_version, entry.actor) == ("delete_version", "1", ALICE)
    assert [v["version"] for v in registry.describe(name)["versions"]] == [v2]
    # the champion v2 replaced is gone: a rollback says so instead of failing on MLflow
    with pytest.raises(RegistryError) as e:
        registry.rollback(name, user=ALICE)
    assert e.value.status == 409 and "v1: that version was deleted" in e.value.message
    with pytest.raises(RegistryError) as e:
        registry.delete_version(name, "1", user=ALICE)
    assert e.value.status == 404 and f"versions: {v2}" in e.value.message


def test_a_run_whose_logged_model_was_deleted_is_a_404_naming_it(registry, runs):
    run = registry.client.get_run(runs["doomed"])
    model_id = run.outputs.model_outputs[0].model_id
    registry.client.delete_logged_model(model_id)

    with pytest.raises(RegistryError) as e:
        registry.publish("iris-doomed", runs["doomed"], user=ALICE)
    assert e.value.status == 404
    assert f"deleted logged model(s) of this run: {model_id}" in e.value.message
    assert "127.0.0.1" not in e.value.message


def test_out_of_range_versions_are_refused_before_mlflow_is_asked(registry, runs):
    name = "iris-huge"
    registry.publish(name, runs["good"], user=ALICE)
    for version in ("99999999999999999999", "-1", "1e3"):
        for call in (
            lambda v: registry.approve(name, v, approver=BOB),
            lambda v: registry.request_promotion(name, v, user=ALICE),
            lambda v: registry.delete_version(name, v, user=ALICE),
        ):
            with pytest.raises(RegistryError) as e:
                call(version)
            assert e.value.status == 400 and "1 to 9 digits" in e.value.message


def test_mlflow_errors_are_4xx_without_the_servers_address(registry, runs):
    name = "iris-errors"
    registry.publish(name, runs["good"], user=ALICE)
    with pytest.raises(RegistryError) as e:
        registry.approve(name, "999999999", approver=BOB)
    assert e.value.status == 404 and "has no version 999999999" in e.value.message
    with pytest.raises(RegistryError) as e:
        registry.publish(name, "f" * 32, user=ALICE)
    assert e.value.status == 404 and e.value.message == f"run {'f' * 32!r} not found"
    assert registry.client.tracking_uri.split("//")[1] not in e.value.message


# -- the registry API through the hub: who may, and what bad input gets -----------------------
# One hub per module (with its MLflow service); each test uses model names of its own.

ADMIN = "admin"  # the hub's admin token (the hubml-admin service)
GATE_TIMEOUT_S = 20
GATE_MEMORY_MB = 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    # short gate limits, so a candidate that hangs or hoards fails in seconds (a plain sklearn
    # model needs ~510 MiB of address space in the runner service's warm fork, ~640 in a fresh one)
    tracking = {"enabled": True, "gate_timeout_s": GATE_TIMEOUT_S, "gate_memory_mb": GATE_MEMORY_MB}
    hub = start_hub(tmp_path_factory.mktemp("registry-hub"), {"tracking": tracking})
    try:
        wait_for_mlflow(hub, hub.token)
        hub.tokens = {ADMIN: hub.token, **{u: hub.user_token(u) for u in (ALICE, BOB, CAROL)}}
        assert hub.api("POST", "groups/reviewers").status_code in (201, 409)
        r = hub.api("POST", "groups/reviewers/users", json={"users": [CAROL]})
        assert r.status_code == 200, r.text
        yield hub
    finally:
        hub.stop()


def log_runs_through_the_hub(hub, tokens: dict, who: tuple) -> dict:
    """A run with a logged sklearn model per ``(key, user)`` in ``who``, logged through the
    hub's front door with that user's token: ``{key: run_id}``."""
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    previous_uri, previous_token = (
        mlflow.get_tracking_uri(),
        os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )
    mlflow.set_tracking_uri(hub.at("/services/mlflow"))
    runs = {}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow\.")
            for key, user in who:
                os.environ["MLFLOW_TRACKING_TOKEN"] = tokens[user]
                mlflow.set_experiment(f"registry-api-{user}")
                runs[key] = _log_run(LogisticRegression(max_iter=1000), X, X, y, y, user=user)
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_token is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = previous_token
    return runs


@pytest.fixture(scope="module")
def hub_runs(hub):
    """Runs logged through the front door: alice's (two) and bob's, each with a model."""
    return log_runs_through_the_hub(
        hub, hub.tokens, (("alice", ALICE), ("alice2", ALICE), ("bob", BOB))
    )


def api(hub, who, method, path, body=None, **kw):
    """``path`` under .../hubml/api/models/, sent as it is (already URL-encoded)."""
    import requests

    return requests.request(
        method,
        hub.at("/services/mlflow/hubml/api/models/") + path,
        json=body,
        headers={"Authorization": f"token {hub.tokens[who]}"},
        timeout=120,
        **kw,
    )


def ok(r, status=200):
    assert r.status_code == status, r.text
    return r.json()


def refused(r, status, *says):
    assert r.status_code == status, r.text
    message = r.json()["message"]
    for word in says:
        assert word in message, message
    return message


def test_bob_may_not_touch_alices_model(hub, hub_runs):
    name = "api-owned"
    published = ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 201)
    assert published["version"] == "1"
    model = ok(api(hub, BOB, "GET", name))  # anyone may look
    assert (model["owner"], model["maintainers"]) == (ALICE, [])
    ok(api(hub, BOB, "POST", f"{name}/versions/1/approve", {"reason": "lgtm"}))

    refused(
        api(hub, BOB, "POST", f"{name}/publish", {"run_id": hub_runs["bob"]}),
        403,
        "belongs to alice",
        "maintainers",
        "another name",
    )
    refused(api(hub, BOB, "PUT", f"{name}/policy", {"tolerance": 1.0}), 403, "belongs to alice")
    refused(api(hub, BOB, "POST", f"{name}/rollback", {}), 403, "may not roll back", "alice")
    refused(api(hub, BOB, "DELETE", f"{name}/versions/1", {}), 403, "delete versions")
    refused(api(hub, BOB, "PUT", f"{name}/owners", {"owner": BOB}), 403, "only admins", "alice")
    after = ok(api(hub, ALICE, "GET", name))
    assert after["owner"] == ALICE and after["policy"]["tolerance"] == 0.0
    assert after["aliases"] == {CHAMPION: "1"} and len(after["versions"]) == 1


def test_the_model_page_shows_gates_and_history_readably(hub, hub_runs):
    """What MLflow shows as raw JSON tags, as a page: owner, versions' gates, every alias move."""
    import requests

    name = "api-page"
    ok(
        api(
            hub,
            ALICE,
            "POST",
            f"{name}/publish",
            {"run_id": hub_runs["alice"], "reason": "<b>first</b>"},
        ),
        201,
    )
    ok(api(hub, BOB, "POST", f"{name}/versions/1/approve", {"reason": "reviewed"}))
    r = requests.get(
        hub.at(f"/services/mlflow/hubml/models/{name}"),
        headers={"Authorization": f"token {hub.tokens[BOB]}"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.text
    page = r.text
    assert "Owner: alice" in page and "@champion" in page
    assert (
        "<span class='verdict passed'>passed</span> <b>metric</b>" in page
        and "<b>inference</b>" in page
        and "p95 latency" in page
    )
    assert "approve" in page and "reviewed" in page and "@champion: none → v1" in page
    assert "&lt;b&gt;first&lt;/b&gt;" in page and "<b>first</b>" not in page  # reasons are text
    assert '{"model_uri"' not in page  # no raw JSON
    r = requests.get(
        hub.at("/services/mlflow/hubml/models/no-such-model"),
        headers={"Authorization": f"token {hub.tokens[BOB]}"},
        timeout=60,
    )
    assert r.status_code == 404 and "no-such-model" in r.text


def test_a_policy_on_an_unused_name_is_404_and_the_name_stays_free(hub, hub_runs):
    name = "api-free"
    refused(
        api(hub, BOB, "PUT", f"{name}/policy", {"approver_group": "bobs-friends"}),
        404,
        "publish a version first",
    )
    refused(api(hub, BOB, "GET", name), 404)
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 201)
    model = ok(api(hub, ALICE, "GET", name))
    assert model["owner"] == ALICE and model["policy"]["approver_group"] is None


def test_bob_may_not_approve_his_own_version_unless_an_admin_allows_it(hub, hub_runs):
    name = "api-bobs"
    ok(api(hub, BOB, "POST", f"{name}/publish", {"run_id": hub_runs["bob"]}), 201)
    refused(api(hub, BOB, "POST", f"{name}/versions/1/approve", {}), 403, "they are its author")
    refused(
        api(hub, BOB, "PUT", f"{name}/policy", {"allow_self_approval": True}),
        403,
        "allow_self_approval",
        "only an admin",
    )
    ok(api(hub, ADMIN, "PUT", f"{name}/policy", {"allow_self_approval": True, "reason": "solo"}))
    ok(api(hub, BOB, "POST", f"{name}/versions/1/approve", {"reason": "solo team"}))
    # the owner may turn it off again
    assert ok(api(hub, BOB, "PUT", f"{name}/policy", {}))["allow_self_approval"] is False


def test_an_approver_in_the_group_approves_and_may_roll_back(hub, hub_runs):
    name = "api-reviewed"
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 201)
    ok(api(hub, ALICE, "PUT", f"{name}/policy", {"approver_group": "reviewers"}))
    refused(api(hub, BOB, "POST", f"{name}/versions/1/approve", {}), 403, "'reviewers'")
    refused(api(hub, ALICE, "POST", f"{name}/versions/1/approve", {}), 403, "author")
    ok(api(hub, CAROL, "POST", f"{name}/versions/1/approve", {"reason": "reviewed"}))
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice2"]}), 201)
    ok(api(hub, CAROL, "POST", f"{name}/versions/2/approve", {}))
    refused(api(hub, BOB, "POST", f"{name}/rollback", {}), 403, "'reviewers'")
    assert ok(api(hub, CAROL, "POST", f"{name}/rollback", {}))["to_version"] == "1"
    # the approver group now guards the policy: alice is not in it
    refused(api(hub, ALICE, "PUT", f"{name}/policy", {}), 403, "'reviewers'")


def test_an_admin_transfers_ownership_and_the_new_owner_publishes(hub, hub_runs):
    name = "api-handover"
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 201)
    refused(api(hub, BOB, "POST", f"{name}/publish", {"run_id": hub_runs["bob"]}), 403)
    refused(
        api(hub, ADMIN, "PUT", f"{name}/owners", {"owner": "nobody-of-that-name"}),
        400,
        "owner",
        "no hub user",
    )
    owners = ok(
        api(
            hub,
            ADMIN,
            "PUT",
            f"{name}/owners",
            {"owner": BOB, "maintainers": ["reviewers"], "reason": "bob's team runs it now"},
        )
    )
    assert owners == {"model": name, "owner": BOB, "maintainers": ["reviewers"]}
    assert ok(api(hub, ALICE, "GET", f"{name}/owners")) == owners

    assert (
        ok(api(hub, BOB, "POST", f"{name}/publish", {"run_id": hub_runs["bob"]}), 201)["version"]
        == "2"
    )
    ok(api(hub, CAROL, "POST", f"{name}/publish", {"run_id": hub_runs["bob"]}), 201)  # maintainer
    refused(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 403, "bob")
    entries = ok(api(hub, ALICE, "GET", f"{name}/history"))["entries"]
    (change,) = [e for e in entries if e["action"] == "set_owners"]
    assert change["actor"] == "hubml-admin" and "bob's team runs it now" in change["reason"]


def test_history_lists_every_alias_move_and_deletion(hub, hub_runs):
    name = "api-journal"
    ok(
        api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"], "reason": "v1"}),
        201,
    )
    ok(api(hub, BOB, "POST", f"{name}/versions/1/approve", {"reason": "ok"}))
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice2"]}), 201)
    ok(api(hub, BOB, "POST", f"{name}/versions/2/approve", {}))
    ok(api(hub, ALICE, "POST", f"{name}/rollback", {"reason": "v2 misbehaves"}))
    refused(api(hub, ALICE, "DELETE", f"{name}/versions/1", {}), 409, "@champion")
    refused(api(hub, BOB, "DELETE", f"{name}/versions/2", {}), 403)
    ok(api(hub, ALICE, "DELETE", f"{name}/versions/2", {"reason": "broken"}))

    entries = ok(api(hub, CAROL, "GET", f"{name}/history"))["entries"]
    moves = [
        (e["action"], e["alias"], e["from_version"], e["to_version"], e["actor"], e["reason"])
        for e in entries
        if e["alias"] or e["action"] == "delete_version"
    ]
    assert moves == [
        ("publish", CHALLENGER, None, "1", ALICE, "v1"),
        ("approve", CHAMPION, None, "1", BOB, "ok"),
        ("approve", CHALLENGER, "1", None, BOB, "ok"),
        ("publish", CHALLENGER, None, "2", ALICE, ""),
        ("approve", CHAMPION, "1", "2", BOB, ""),
        ("approve", CHALLENGER, "2", None, BOB, ""),
        ("rollback", CHAMPION, "2", "1", ALICE, "v2 misbehaves"),
        ("delete_version", None, "2", None, ALICE, "broken"),
    ]
    model = ok(api(hub, ALICE, "GET", name))
    assert model["aliases"] == {CHAMPION: "1"} and [v["version"] for v in model["versions"]] == [
        "1"
    ]


@pytest.fixture(scope="module")
def bad_input_model(hub, hub_runs):
    ok(api(hub, ALICE, "POST", "api-bad-input/publish", {"run_id": hub_runs["alice"]}), 201)
    return "api-bad-input"


GOOD_RUN = "<alice's run>"
BAD_INPUT = [
    # (who, method, path under the model, body or query, status, words the message must have)
    (ALICE, "POST", "versions/99999999999999999999/approve", {}, 400, "version", "1 to 9 digits"),
    (ALICE, "POST", "versions/-1/approve", {}, 400, "version"),
    (ALICE, "POST", "versions/0/approve", {}, 400, "version"),
    (ALICE, "POST", "versions/abc/request-promotion", {}, 400, "version"),
    (ALICE, "DELETE", "versions/1.5", {}, 400, "version"),
    (ALICE, "POST", "versions/999999999/approve", {}, 404, "version 999999999"),
    (ALICE, "POST", "versions/1/request-promotion", {"reason": 5}, 400, "reason", "string"),
    (ALICE, "POST", "rollback", {"reason": "x" * 2001}, 400, "reason", "2001"),
    (ALICE, "POST", "rollback", {"why": "typo"}, 400, "'why'", "allowed: reason"),
    (ALICE, "PUT", "policy", {"tolerance": "high"}, 400, "tolerance"),
    (ALICE, "PUT", "policy", {"latency_trials": 2.5}, 400, "latency_trials"),
    (ALICE, "PUT", "policy", {"colour": "blue"}, 400, "'colour'", "allowed:"),
    (ALICE, "PUT", "policy", {"metric": ["accuracy"]}, 400, "metric"),
    (ALICE, "PUT", "policy", {"approver_group": 7}, 400, "approver_group"),
    (ALICE, "PUT", "policy", {"allow_self_approval": "yes"}, 400, "allow_self_approval"),
    (ALICE, "GET", "aliases/v1", None, 400, "alias", "reserved"),
    (ALICE, "GET", "aliases/no%20spaces", None, 400, "alias"),
    (ALICE, "GET", "aliases/staging", None, 404, "@staging"),
    (ALICE, "POST", "publish", {"run_id": "../../etc/passwd"}, 400, "run_id"),
    (ALICE, "POST", "publish", {"run_id": 42}, 400, "run_id"),
    (ALICE, "POST", "publish", {"run_id": "0" * 32}, 404, "run", "not found"),
    (ALICE, "POST", "publish", {"run_id": GOOD_RUN, "artifact_path": ""}, 400, "artifact_path"),
    (ALICE, "POST", "publish", {"run_id": GOOD_RUN, "artifact_path": ["m"]}, 400, "artifact_path"),
    (ALICE, "POST", "publish", {"run_id": GOOD_RUN, "artifact_path": "nope"}, 404, "'nope'"),
    (ALICE, "POST", "publish", {"run_id": GOOD_RUN, "tags": {"a": 1}}, 400, "'tags'"),
    (ALICE, "GET", "compare", {"run_id": "xyz"}, 400, "run_id"),
    (ALICE, "GET", "compare", {"run_id": GOOD_RUN, "against": "v2"}, 400, "against"),
    (ADMIN, "PUT", "owners", {"owner": ""}, 400, "owner"),
    (ADMIN, "PUT", "owners", {"owner": 12}, 400, "owner"),
    (ADMIN, "PUT", "owners", {"maintainers": "reviewers"}, 400, "maintainers", "list"),
    (ADMIN, "PUT", "owners", {"maintainers": ["a,b"]}, 400, "maintainers", "','"),
    (ADMIN, "PUT", "owners", {}, 400, "owner", "maintainers"),
]


@pytest.mark.parametrize(
    "who, method, path, data, status, says",
    [(c[0], c[1], c[2], c[3], c[4], c[5:]) for c in BAD_INPUT],
    ids=[f"{c[1]} {c[2][:40]} {str(c[3])[:30]}" for c in BAD_INPUT],
)
def test_bad_input_is_a_4xx_naming_the_field(
    hub, hub_runs, bad_input_model, who, method, path, data, status, says
):
    if isinstance(data, dict):
        data = {k: hub_runs["alice"] if v == GOOD_RUN else v for k, v in data.items()}
    kw = {"params": data} if method == "GET" else {"body": data}
    r = api(hub, who, method, f"{bad_input_model}/{path}", **kw)
    refused(r, status, *says)
    assert "127.0.0.1" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize(
    "who, method, path, body, says",
    [
        (ALICE, "PUT", f"{'x' * 300}/policy", {}, "model name"),
        (ALICE, "GET", "bad%2Fname", None, "model name"),
        (ALICE, "POST", "bad%3Aname/publish", {"run_id": "0" * 32}, "model name"),
    ],
)
def test_bad_model_names_are_400s(hub, who, method, path, body, says):
    refused(api(hub, who, method, path, body), 400, says)


# -- the gates' sandbox through the hub: candidates that hang, hoard or snoop ------------------

SNOOP = """
import os
# the mlflow service's process(es), found by command line (anyone may read those)
services = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"hubml.extensions.tracking.service" in f.read():
                services.append(int(pid))
    except OSError:
        pass
if not services:
    raise RuntimeError("found no mlflow service process to snoop on")
read = [k for k in os.environ if "TOKEN" in k or "SECRET" in k or k.startswith("JUPYTERHUB_")]
for pid in [os.getppid(), *services]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            read.append(f"/proc/{pid}/environ ({len(f.read())} bytes)")
    except OSError:
        pass
if read:
    raise RuntimeError("read the service's secrets: " + ", ".join(read))
return [os.getuid()] * len(model_input)
"""


@pytest.fixture(scope="module")
def gate_runs(hub, tmp_path_factory):
    """Alice's runs of models-from-code candidates, logged through the front door."""
    import mlflow

    folder = tmp_path_factory.mktemp("gate-candidates")
    candidates = {
        "sleeper": "import time\ntime.sleep(10**6)",
        "hoarder": "hoard = bytearray(8 << 30)\nreturn [len(hoard)] * len(model_input)",
        "snoop": SNOOP,
    }
    previous_uri, previous_token = (
        mlflow.get_tracking_uri(),
        os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )
    mlflow.set_tracking_uri(hub.at("/services/mlflow"))
    os.environ["MLFLOW_TRACKING_TOKEN"] = hub.tokens[ALICE]
    try:
        mlflow.set_experiment("registry-api-gates")
        return {
            key: log_code_model(folder / key, body, user=ALICE) for key, body in candidates.items()
        }
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_token is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = previous_token


def inference_gate(published: dict) -> dict:
    (gate,) = [g for g in published["gates"]["results"] if g["name"] == "inference"]
    return gate


def test_a_hanging_candidate_fails_at_the_timeout_while_another_publish_goes_through(
    hub, hub_runs, gate_runs
):
    answers = {}

    def publish_sleeper():
        answers["sleeper"] = api(
            hub, ALICE, "POST", "gate-sleeper/publish", {"run_id": gate_runs["sleeper"]}
        )

    sleeper = threading.Thread(target=publish_sleeper)
    started = time.monotonic()
    sleeper.start()
    time.sleep(3)  # downloaded, and its probe is running

    good = ok(
        api(hub, ALICE, "POST", "gate-beside-sleeper/publish", {"run_id": hub_runs["alice2"]}), 201
    )

    assert sleeper.is_alive(), "the good model waited for the hanging one"
    assert time.monotonic() - started < GATE_TIMEOUT_S
    assert inference_gate(good)["passed"]
    sleeper.join(GATE_TIMEOUT_S + 90)
    rejected = answers["sleeper"]
    assert rejected.status_code == 422, rejected.text
    gate = inference_gate(rejected.json())
    assert not gate["passed"]
    assert gate["detail"] == f"predict did not return within {GATE_TIMEOUT_S} s"
    assert time.monotonic() - started >= GATE_TIMEOUT_S
    refused(api(hub, ALICE, "GET", "gate-sleeper"), 404)  # nothing was registered


def test_a_candidate_that_allocates_past_the_cap_runs_out_of_memory(hub, gate_runs):
    r = api(hub, ALICE, "POST", "gate-hoarder/publish", {"run_id": gate_runs["hoarder"]})

    assert r.status_code == 422, r.text
    gate = inference_gate(r.json())
    assert gate["detail"] == f"the model ran out of memory (cap {GATE_MEMORY_MB} MiB)"
    assert gate["numbers"]["memory_cap_mb"] == GATE_MEMORY_MB


def test_a_candidate_cannot_read_the_services_environment_and_runs_as_its_publisher(hub, gate_runs):
    r = api(hub, ALICE, "POST", "gate-snoop/publish", {"run_id": gate_runs["snoop"]})

    gate = inference_gate(r.json())
    if not ROOT:
        # one trust domain: the model is the service's own user, and can read its environment
        assert r.status_code == 422 and "read the service's secrets" in gate["detail"], r.text
        return
    assert r.status_code == 201, gate["detail"]
    import pwd

    # the gate's child ran as alice's own account (the runner service), not the platform's
    alice = pwd.getpwnam(accounts.unix_name(ALICE))
    assert gate["numbers"]["uid"] == alice.pw_uid != pwd.getpwnam(accounts.PLATFORM_ACCOUNT).pw_uid


def test_a_promotion_request_reaches_the_approvers_inbox_and_its_result_the_author(hub, hub_runs):
    import requests

    def inbox(who):
        r = requests.get(
            hub.at("/services/mlflow/hubml/api/approvals"),
            headers={"Authorization": f"token {hub.tokens[who]}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        data = r.json()
        return {
            part: [i for i in data[part] if i["model"] == "api-inbox"]
            for part in ("to_approve", "mine", "decided")
        }

    name = "api-inbox"
    ok(api(hub, ALICE, "POST", f"{name}/publish", {"run_id": hub_runs["alice"]}), 201)
    ok(api(hub, ALICE, "PUT", f"{name}/policy", {"approver_group": "reviewers", "reason": "r"}))
    assert inbox(CAROL)["to_approve"] == []  # nothing asked yet
    ok(api(hub, ALICE, "POST", f"{name}/versions/1/request-promotion", {"reason": "ship it"}), 201)

    (waiting,) = inbox(CAROL)["to_approve"]  # carol is a reviewer
    assert (waiting["version"], waiting["requested_by"], waiting["reason"]) == (
        "1",
        ALICE,
        "ship it",
    )
    assert {g["name"] for g in waiting["gates"]} >= {"metric", "inference"}
    assert waiting["run_id"]  # what the inbox's Compare puts next to the champion
    bob = inbox(BOB)
    assert bob["to_approve"] == [] and bob["mine"] == []  # not a reviewer, and not his request
    alice = inbox(ALICE)
    assert alice["to_approve"] == []  # the author is never offered her own approval
    assert [(i["version"], i["approvers"]) for i in alice["mine"]] == [
        ("1", "members of group reviewers")
    ]

    ok(api(hub, CAROL, "POST", f"{name}/versions/1/approve", {"reason": "reviewed"}))
    assert inbox(CAROL)["to_approve"] == []
    alice = inbox(ALICE)
    assert alice["mine"] == []
    assert [(d["version"], d["approved_by"], d["reason"]) for d in alice["decided"]] == [
        ("1", CAROL, "reviewed")
    ]
    assert inbox(BOB)["decided"] == []  # alice's results are hers
