"""The registry's pure logic: gates, validation, policy tags, rollback replay, the audit log."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest
import sqlalchemy as sa

from hubml.extensions.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    AuditEntry,
    AuditLog,
    Champion,
    GatePolicy,
    RegistryError,
    check_latency,
    check_metric,
    output_problem,
    percentile,
    previous_champion,
    validate_alias,
    validate_model_name,
    validate_version,
)


def test_importing_the_registry_loads_no_heavy_library():
    code = (
        "import sys, json, hubml.extensions.tracking.registry; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"mlflow", "pandas", "numpy", "sklearn"}, loaded & {
        "mlflow",
        "pandas",
        "numpy",
    }


# -- gate (a): metric vs champion ------------------------------------------------------------

CHAMP = Champion("3", {"accuracy": 0.93, "rmse": 0.40})


def test_better_or_equal_metric_passes():
    result = check_metric(GatePolicy(), {"accuracy": 0.95}, CHAMP)
    assert result.passed
    assert result.detail == "accuracy 0.95 >= champion 0.93 (v3) - tolerance 0.00"
    assert check_metric(GatePolicy(), {"accuracy": 0.93}, CHAMP).passed


def test_worse_metric_fails_with_the_numbers():
    result = check_metric(GatePolicy(), {"accuracy": 0.81}, CHAMP)
    assert not result.passed
    assert result.detail == "accuracy 0.81 < champion 0.93 (v3) - tolerance 0.00"
    assert result.numbers == {
        "metric": "accuracy",
        "direction": "max",
        "tolerance": 0.0,
        "candidate": 0.81,
        "champion": 0.93,
        "champion_version": "3",
        "threshold": 0.93,
    }


def test_tolerance_is_absolute_slack():
    policy = GatePolicy(tolerance=0.05)
    assert check_metric(policy, {"accuracy": 0.89}, CHAMP).passed
    failed = check_metric(policy, {"accuracy": 0.87}, CHAMP)
    assert not failed.passed and failed.numbers["threshold"] == pytest.approx(0.88)
    assert failed.detail.endswith("- tolerance 0.05")


def test_min_direction_prefers_lower_values():
    policy = GatePolicy(metric="rmse", direction="min", tolerance=0.01)
    assert check_metric(policy, {"rmse": 0.41}, CHAMP).passed
    failed = check_metric(policy, {"rmse": 0.5}, CHAMP)
    assert not failed.passed
    assert failed.detail == "rmse 0.5 > champion 0.4 (v3) + tolerance 0.01"


def test_first_model_passes_and_says_so():
    result = check_metric(GatePolicy(), {"accuracy": 0.5}, None)
    assert result.passed and result.detail == "accuracy 0.5; no champion yet"


def test_champion_without_the_metric_is_not_a_comparison():
    result = check_metric(GatePolicy(metric="f1"), {"f1": 0.7}, CHAMP)
    assert result.passed and "champion v3 has no 'f1' metric" in result.detail


@pytest.mark.parametrize("metrics", [{}, {"loss": 1.0}, {"accuracy": float("nan")}])
def test_candidate_without_the_metric_fails_with_how_to_fix(metrics):
    result = check_metric(GatePolicy(), metrics, CHAMP)
    assert not result.passed
    assert "no finite metric 'accuracy'" in result.detail and "mlflow.log_metric" in result.detail


# -- gate (c): latency -------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 95) == 19
    assert percentile(values, 50) == 10
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 95)


def test_latency_gate_compares_p95_with_the_budget():
    passed = check_latency([1.0] * 19 + [50.0], 2.0, rows=5)
    assert passed.passed and passed.numbers["p95_ms"] == 1.0
    failed = check_latency([1.0] * 18 + [50.0, 60.0], 2.0, rows=5)
    assert not failed.passed
    assert (
        failed.detail
        == "p95 latency 50 ms > budget 2 ms over 20 predictions of the input example (5 rows)"
    )
    assert failed.numbers["max_ms"] == 60.0


# -- gate (b): output vs signature -----------------------------------------------------------


def test_output_matching_the_signature_passes():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    assert output_problem(np.array([0, 1, 2]), [(None, "long")], 3) is None
    assert output_problem(np.zeros((3, 2)), [(None, "double"), (None, "double")], 3) is None
    frame = pd.DataFrame({"label": [1, 2], "score": [0.1, 0.2]})
    assert output_problem(frame, [("score", "double"), ("label", "long")], 2) is None
    assert output_problem([0.5, 0.7], [(None, "double")], 2) is None


def test_output_mismatches_say_what_differs():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    assert (
        output_problem(np.array([0, 1]), [(None, "long")], 3)
        == "the prediction has 2 rows for 3 input rows"
    )
    assert output_problem(np.array([0.5, 1.5]), [(None, "long")], 2) == (
        "the output has dtype float64; the signature declares long"
    )
    assert output_problem(np.zeros((2, 3)), [(None, "double")], 2) == (
        "the prediction has 3 columns; the signature declares 1"
    )
    frame = pd.DataFrame({"label": [1, 2]})
    assert "lacks the signature's output columns ['score']" in output_problem(
        frame, [("label", "long"), ("score", "double")], 2
    )
    assert "not one value per input row" in output_problem(np.float64(3.0), [(None, "double")], 1)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iris", "team model v2", "a.b-c_d", "Modèle", "x" * 256])
def test_valid_model_names(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    "name, says",
    [
        ("", "model name is required"),
        ("   ", "model name is required"),
        (None, "model name is required"),
        ("team/model", "contains '/'"),
        ("ns:model", "contains ':'"),
        ("model@champion", "contains '@'"),
        ("it's", 'contains "\'"'),
        ("tab\there", "contains '\\t'"),
        ("x" * 257, "257 characters long"),
        ("..", "resolves to"),
        (".", "resolves to"),
    ],
)
def test_invalid_model_names_say_why_and_what_is_allowed(name, says):
    with pytest.raises(RegistryError) as e:
        validate_model_name(name)
    assert e.value.status == 400
    assert says in e.value.message
    if name and name.strip():
        assert "allowed:" in e.value.message


def test_aliases_and_versions():
    assert validate_alias("@champion") == "champion"
    assert validate_alias("blue-green_2") == "blue-green_2"
    for bad, says in [
        ("", "required"),
        ("has space", "invalid alias"),
        ("v3", "reserved"),
        ("Latest", "reserved"),
    ]:
        with pytest.raises(RegistryError, match=says) as e:
            validate_alias(bad)
        assert e.value.status == 400
    assert validate_version(3) == "3" and validate_version(" 07 ") == "7"
    for bad in ["0", "-1", "three", "1.5", True, None]:
        with pytest.raises(RegistryError, match="positive integer"):
            validate_version(bad)


# -- policy ------------------------------------------------------------------------------------


def test_policy_round_trips_through_registered_model_tags():
    policy = GatePolicy(
        metric="rmse",
        direction="min",
        tolerance=0.02,
        latency_budget_ms=12.5,
        latency_trials=7,
        approver_group="reviewers",
        allow_self_approval=True,
    )
    tags = policy.to_tags()
    assert tags["hubml.gate.metric"] == "rmse" and tags["hubml.gate.allow_self_approval"] == "true"
    assert all(isinstance(v, str) for v in tags.values())
    assert GatePolicy.from_tags({**tags, "unrelated": "x"}) == policy
    assert GatePolicy.from_tags(GatePolicy().to_tags()) == GatePolicy()
    assert GatePolicy().to_tags()["hubml.gate.approver_group"] == ""
    assert GatePolicy.from_tags({}) == GatePolicy()


@pytest.mark.parametrize(
    "field, value",
    [
        ("direction", "up"),
        ("tolerance", -0.1),
        ("tolerance", float("inf")),
        ("latency_budget_ms", 0),
        ("latency_trials", 0),
        ("latency_trials", 2.5),
        ("metric", ""),
        ("approver_group", " "),
        ("allow_self_approval", "yes"),
    ],
)
def test_invalid_policy_values_name_the_field(field, value):
    with pytest.raises(RegistryError) as e:
        GatePolicy(**{field: value})
    assert e.value.status == 400
    assert f"{field}={value!r}" in e.value.message and "allowed:" in e.value.message


def test_corrupt_policy_tags_are_a_conflict_naming_the_tag():
    with pytest.raises(RegistryError) as e:
        GatePolicy.from_tags({"hubml.gate.latency_trials": "many"})
    assert e.value.status == 409 and "hubml.gate.latency_trials='many'" in e.value.message
    with pytest.raises(RegistryError) as e:
        GatePolicy.from_tags({"hubml.gate.direction": "sideways"})
    assert e.value.status == 409 and "direction='sideways'" in e.value.message


# -- rollback replay ---------------------------------------------------------------------------


def _entry(i, action, alias, frm, to):
    return AuditEntry(i, "t", action, "m", alias, frm, to, "u", "", None)


def test_previous_champion_replays_moves_as_a_stack():
    entries = [
        _entry(1, "publish", CHALLENGER, None, "1"),
        _entry(2, "approve", CHAMPION, None, "1"),
        _entry(3, "approve", CHALLENGER, "1", None),
        _entry(4, "approve", CHAMPION, "1", "2"),
        _entry(5, "approve", CHAMPION, "2", "3"),
    ]
    assert previous_champion(entries[:2]) is None
    assert previous_champion(entries) == "2"
    entries.append(_entry(6, "rollback", CHAMPION, "3", "2"))
    assert previous_champion(entries) == "1"
    entries.append(_entry(7, "rollback", CHAMPION, "2", "1"))
    assert previous_champion(entries) is None


# -- audit log ---------------------------------------------------------------------------------


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'nested' / 'audit.sqlite'}")
    yield log
    log.close()


def test_audit_log_appends_in_order_and_logs_json(audit, caplog):
    from hubml.extensions.tracking.registry import GateResult

    caplog.set_level(logging.INFO, logger="hubml.audit.registry")
    first = audit.record(
        action="publish",
        model="m",
        actor="alice",
        alias=CHALLENGER,
        to_version="1",
        reason="baseline",
        gates=[GateResult("metric", True, "no champion yet")],
    )
    audit.record(action="approve", model="m", actor="bob", alias=CHAMPION, to_version="1")
    audit.record(action="publish", model="other", actor="carol", alias=CHALLENGER, to_version="1")

    entries = audit.entries("m")
    assert [(e.action, e.actor) for e in entries] == [("publish", "alice"), ("approve", "bob")]
    assert entries[0] == first
    assert entries[0].gates == [{"name": "metric", "passed": True, "detail": "no champion yet"}]
    assert entries[0].at.endswith("+00:00") and entries[1].gates is None
    assert len(audit.entries()) == 3
    logged = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "hubml.audit.registry"
    ]
    assert logged[0] == dataclasses.asdict(first)


def test_audit_log_is_append_only(audit):
    assert not {"update", "delete", "remove", "clear"} & {
        n for n in dir(audit) if not n.startswith("_")
    }
    audit.record(action="approve", model="m", actor="bob", alias=CHAMPION, to_version="1")
    engine = sa.create_engine(audit.url)
    try:
        for statement in (
            "UPDATE hubml_registry_audit SET actor = 'mallory'",
            "DELETE FROM hubml_registry_audit",
        ):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    assert [e.actor for e in audit.entries("m")] == ["bob"]
