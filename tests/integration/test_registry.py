"""Gated publishing, approval, rollback and audit against a real MLflow server.

One server and five logged runs per module (logging a model costs seconds); each test uses its
own registered model name, so the tests do not depend on each other's order.
"""

import json
import warnings

import pytest

from hubml.extensions.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    AuditLog,
    GatePolicy,
    RegistryError,
    RegistryService,
)
from tests.mlflowserver import start_mlflow

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = "alice", "bob", "carol"


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
    majority class, 0.33), good but logged without an input example, and one whose predict
    raises."""
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
            }
    finally:
        # the registry under test uses its own client; leave no global state to other modules
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def registry(mlflow_server, runs, tmp_path):
    from mlflow import MlflowClient

    audit = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    yield RegistryService(MlflowClient(mlflow_server.url), audit)
    audit.close()


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
    registry.set_policy(name, GatePolicy(tolerance=0.5), user=BOB, reason="noisy metric")
    assert registry.policy(name) == GatePolicy(tolerance=0.5)
    champion_of(registry, name, runs["good"])

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
    registry.set_policy(name, GatePolicy(latency_budget_ms=0.0001, latency_trials=5), user=BOB)

    result = registry.publish(name, runs["good"], user=ALICE)

    assert not result.ok
    latency = result.report.results[2]
    assert not latency.passed and latency.numbers["trials"] == 5
    p95 = latency.numbers["p95_ms"]
    assert p95 > 0.0001
    assert latency.detail.startswith(
        f"p95 latency {p95:.4g} ms > budget 0.0001 ms over 5 predictions"
    )
    assert aliases(registry, name) == {}


def test_self_approval_is_refused(registry, runs):
    name = "iris-self"
    version = registry.publish(name, runs["good"], user=ALICE).version

    with pytest.raises(RegistryError) as e:
        registry.approve(name, version, approver=ALICE)
    assert e.value.status == 403 and "author" in e.value.message
    # whoever made the run counts as an author too, even if someone else published it
    version2 = registry.publish(name, runs["good"], user=CAROL).version
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
    registry.set_policy(name, GatePolicy(approver_group="reviewers"), user=BOB)
    version = registry.publish(name, runs["good"], user=ALICE).version

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

    entry = registry.rollback(name, user=CAROL, reason="v2 misbehaves in production")
    assert (entry.action, entry.from_version, entry.to_version) == ("rollback", "2", "1")
    assert aliases(registry, name) == {CHAMPION: "1"}
    with pytest.raises(RegistryError) as e:
        registry.rollback(name, user=CAROL)
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
        ("rollback", CHAMPION, "2", "1", CAROL),
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
