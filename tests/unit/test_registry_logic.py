"""The registry's pure logic: gates, validation, policy tags, rollback replay, the audit log,
permissions, and how MLflow's errors are answered."""

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
    scrub,
    validate_alias,
    validate_artifact_path,
    validate_groups,
    validate_model_name,
    validate_owner,
    validate_reason,
    validate_run_id,
    validate_version,
)
from hubml.extensions.tracking.registry.permissions import (
    Actor,
    check_may_approve,
    check_may_assign_owners,
    check_may_maintain,
    check_may_publish,
    check_may_rollback,
    check_may_set_policy,
)
from hubml.extensions.tracking.registry.store import (
    as_registry_error,
    limit_mlflow_requests,
    mlflow_errors,
)
from hubml.extensions.tracking.registry.validation import check_fields


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


def described(output):
    """What the gate's child tells the service about a prediction (the verdict's input)."""
    from hubml.extensions.tracking.gaterun import describe_output

    return json.loads(json.dumps(describe_output(output)))


def test_output_matching_the_signature_passes():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    assert output_problem(described(np.array([0, 1, 2])), [(None, "long")], 3) is None
    assert (
        output_problem(described(np.zeros((3, 2))), [(None, "double"), (None, "double")], 3) is None
    )
    frame = pd.DataFrame({"label": [1, 2], "score": [0.1, 0.2]})
    assert output_problem(described(frame), [("score", "double"), ("label", "long")], 2) is None
    assert output_problem(described([0.5, 0.7]), [(None, "double")], 2) is None


def test_output_mismatches_say_what_differs():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    assert (
        output_problem(described(np.array([0, 1])), [(None, "long")], 3)
        == "the prediction has 2 rows for 3 input rows"
    )
    assert output_problem(described(np.array([0.5, 1.5])), [(None, "long")], 2) == (
        "the output has dtype float64; the signature declares long"
    )
    assert output_problem(described(np.zeros((2, 3))), [(None, "double")], 2) == (
        "the prediction has 3 columns; the signature declares 1"
    )
    frame = pd.DataFrame({"label": [1, 2]})
    assert "lacks the signature's output columns ['score']" in output_problem(
        described(frame), [("label", "long"), ("score", "double")], 2
    )
    assert "not one value per input row" in output_problem(
        described(np.float64(3.0)), [(None, "double")], 1
    )


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


# -- bounded input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["99999999999999999999", "1234567890", "-1", "0", "1e3", "٣", " ", [], 10**12]
)
def test_versions_are_one_to_nine_digit_positive_integers(version):
    with pytest.raises(RegistryError) as e:
        validate_version(version)
    assert e.value.status == 400
    assert "version" in e.value.message and "1 to 9 digits" in e.value.message


def test_nine_digit_versions_pass():
    assert validate_version("999999999") == "999999999"
    assert validate_version(123456789) == "123456789"


@pytest.mark.parametrize(
    "run_id", ["", "abc", "0" * 31, "0" * 33, "A" * 32, "../../etc/passwd", 42, None, ["x"]]
)
def test_run_ids_must_look_like_mlflow_run_ids(run_id):
    with pytest.raises(RegistryError) as e:
        validate_run_id(run_id)
    assert e.value.status == 400 and "run_id" in e.value.message and "32" in e.value.message


def test_a_real_run_id_passes():
    assert validate_run_id("0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(
    "path, says",
    [
        ("", "empty"),
        ("/", "empty"),
        (5, "must be a string"),
        ("a/../b", "'..'"),
        ("x" * 501, "501"),
    ],
)
def test_artifact_paths_name_the_field(path, says):
    with pytest.raises(RegistryError) as e:
        validate_artifact_path(path)
    assert e.value.status == 400 and "artifact_path" in e.value.message and says in e.value.message


def test_artifact_path_is_stripped_of_slashes():
    assert validate_artifact_path("/model/") == "model"
    assert validate_artifact_path("nested/model") == "nested/model"


@pytest.mark.parametrize(
    "reason, says", [(5, "not int"), ({"a": 1}, "not dict"), ("x" * 2001, "2001")]
)
def test_reasons_are_bounded_strings(reason, says):
    with pytest.raises(RegistryError) as e:
        validate_reason(reason)
    assert e.value.status == 400 and "reason" in e.value.message and says in e.value.message
    assert validate_reason(None) == "" and validate_reason("because") == "because"


@pytest.mark.parametrize("owner", ["", " ", " alice", 5, None, "x" * 256, "tab\there"])
def test_owner_must_be_a_user_name(owner):
    with pytest.raises(RegistryError) as e:
        validate_owner(owner)
    assert e.value.status == 400 and "owner" in e.value.message


@pytest.mark.parametrize(
    "groups, says",
    [
        ("team", "must be a list"),
        ([""], "non-empty"),
        (["a,b"], "','"),
        ([5], "a string"),
        (["g"] * 21, "at most 20"),
        (["x" * 256], "at most 255"),
    ],
)
def test_maintainer_groups_are_validated(groups, says):
    with pytest.raises(RegistryError) as e:
        validate_groups(groups)
    assert e.value.status == 400 and "maintainers" in e.value.message and says in e.value.message
    assert validate_groups(["a", "b", "a"]) == ["a", "b"]


def test_unknown_policy_fields_are_named_with_the_allowed_ones():
    with pytest.raises(RegistryError) as e:
        GatePolicy.from_request({"colour": "blue", "tolerance": 0.1})
    assert e.value.status == 400
    assert "'colour'" in e.value.message and "allowed: metric, direction" in e.value.message
    assert GatePolicy.from_request({"tolerance": 0.1}) == GatePolicy(tolerance=0.1)


@pytest.mark.parametrize(
    "field, value",
    [("metric", ["a"]), ("tolerance", "high"), ("approver_group", 7), ("latency_budget_ms", None)],
)
def test_policy_fields_of_the_wrong_type_are_400s(field, value):
    with pytest.raises(RegistryError) as e:
        GatePolicy.from_request({field: value})
    assert e.value.status == 400 and field in e.value.message


def test_check_fields_names_the_unknown_ones():
    check_fields({"reason": "x"}, ("reason",), "approve")
    with pytest.raises(RegistryError, match=r"unknown field\(s\) 'x' in approve; allowed: reason"):
        check_fields({"x": 1, "reason": ""}, ("reason",), "approve")


# -- no internal addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "API request to http://127.0.0.1:42777/api/2.0/mlflow/model-versions/get failed",
        "HTTPConnectionPool(host='127.0.0.1', port=42777): Max retries exceeded",
        "could not reach localhost:5000",
        "artifact at file:///srv/hubml/mlflow/artifacts/1/abc",
    ],
)
def test_scrub_removes_internal_addresses(text):
    cleaned = scrub(text)
    for secret in ("127.0.0.1", "42777", "localhost:5000", "/srv/hubml"):
        assert secret not in cleaned
    assert "runs:/abc/model" in scrub("could not download runs:/abc/model")
    assert RegistryError(text).message == cleaned


class FakeMlflowError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.error_code, self.message = code, message


@pytest.mark.parametrize(
    "code, status",
    [
        ("RESOURCE_DOES_NOT_EXIST", 404),
        ("INVALID_PARAMETER_VALUE", 400),
        ("RESOURCE_ALREADY_EXISTS", 409),
        ("PERMISSION_DENIED", 403),
        ("INTERNAL_ERROR", 502),
    ],
)
def test_mlflow_errors_become_statuses_without_addresses(code, status):
    err = as_registry_error(
        FakeMlflowError(code, f"{code}: API request to http://127.0.0.1:5000/api failed\ntrace")
    )
    assert err.status == status
    assert "127.0.0.1" not in err.message and "trace" not in err.message
    assert not err.message.startswith(code + ":")


def test_mlflow_exceptions_do_not_escape_registry_operations():
    exceptions = pytest.importorskip("mlflow.exceptions")

    @mlflow_errors
    def lookup():
        raise exceptions.MlflowException(
            "Model Version (name=m, version=3) not found on http://127.0.0.1:1234/x",
            error_code=exceptions.RESOURCE_DOES_NOT_EXIST,
        )

    with pytest.raises(RegistryError) as e:
        lookup()
    assert e.value.status == 404 and "127.0.0.1" not in e.value.message


def test_mlflow_client_retries_are_bounded_unless_configured():
    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    limit_mlflow_requests(environ)
    assert environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "0"  # MLflow parses it as an int
    assert environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"  # the operator's value stays


# -- permissions -------------------------------------------------------------------------------

ALICE_OWNS = {"hubml.owner": "alice", "hubml.maintainers": "ds-team"}
LEGACY: dict[str, str] = {}
ALICE, BOB, CAROL = Actor.of("alice"), Actor.of("bob", ["other"]), Actor.of("carol", ["ds-team"])
ADMIN = Actor.of("root", admin=True)


def refused(check, *args) -> str:
    with pytest.raises(RegistryError) as e:
        check(*args)
    assert e.value.status == 403
    return e.value.message


def test_a_new_name_is_anyones_and_an_owned_one_its_maintainers():
    check_may_publish(BOB, "m", None)
    for actor in (ALICE, CAROL, ADMIN):
        check_may_publish(actor, "m", ALICE_OWNS)
    message = refused(check_may_publish, BOB, "m", ALICE_OWNS)
    assert "belongs to alice and the group(s) ds-team" in message
    assert "maintainers" in message and "another name" in message


def test_a_legacy_model_takes_versions_from_admins_only():
    check_may_publish(ADMIN, "old", LEGACY)
    message = refused(check_may_publish, ALICE, "old", LEGACY)
    assert "no owner" in message and "admin can assign one" in message


def test_only_maintainers_change_the_policy():
    check_may_set_policy(ALICE, "m", ALICE_OWNS, GatePolicy())
    check_may_set_policy(CAROL, "m", ALICE_OWNS, GatePolicy(tolerance=0.1))
    assert "belongs to alice" in refused(check_may_set_policy, BOB, "m", ALICE_OWNS, GatePolicy())
    assert "only admins" in refused(check_may_set_policy, ALICE, "m", LEGACY, GatePolicy())


def test_only_an_admin_turns_self_approval_on_and_owners_may_turn_it_off():
    on = GatePolicy(allow_self_approval=True)
    message = refused(check_may_set_policy, ALICE, "m", ALICE_OWNS, on)
    assert "only an admin may turn it on" in message
    check_may_set_policy(ADMIN, "m", ALICE_OWNS, on)
    tags_on = {**ALICE_OWNS, **on.to_tags()}
    check_may_set_policy(ALICE, "m", tags_on, GatePolicy())  # off
    check_may_set_policy(ALICE, "m", tags_on, on)  # left on: not turning it on


def test_the_approver_group_guards_the_policy_it_names():
    tags = {**ALICE_OWNS, **GatePolicy(approver_group="reviewers").to_tags()}
    assert "'reviewers'" in refused(check_may_set_policy, ALICE, "m", tags, GatePolicy())
    check_may_set_policy(Actor.of("alice", ["reviewers"]), "m", tags, GatePolicy())
    check_may_set_policy(ADMIN, "m", tags, GatePolicy())


def test_rollback_is_for_maintainers_approvers_and_admins():
    policy = GatePolicy(approver_group="reviewers")
    for actor in (ALICE, CAROL, ADMIN, Actor.of("dave", ["reviewers"])):
        check_may_rollback(actor, "m", ALICE_OWNS, policy)
    message = refused(check_may_rollback, BOB, "m", ALICE_OWNS, policy)
    assert "alice" in message and "'reviewers'" in message
    refused(check_may_rollback, BOB, "m", ALICE_OWNS, GatePolicy())


def test_approval_is_never_by_the_author_and_only_by_the_group():
    message = refused(check_may_approve, BOB, "m", "2", GatePolicy(), {"bob"})
    assert "they are its author" in message and "another user" in message
    check_may_approve(ALICE, "m", "2", GatePolicy(), {"bob"})
    # an admin is no exception to either rule
    refused(check_may_approve, Actor.of("root", admin=True), "m", "2", GatePolicy(), {"root"})
    group = GatePolicy(approver_group="reviewers")
    assert "'reviewers'" in refused(check_may_approve, ADMIN, "m", "2", group, {"bob"})
    check_may_approve(Actor.of("dave", ["reviewers"]), "m", "2", group, {"bob"})
    # self-approval allowed: the author may, still only within the group
    selfish = GatePolicy(approver_group="reviewers", allow_self_approval=True)
    check_may_approve(Actor.of("bob", ["reviewers"]), "m", "2", selfish, {"bob"})
    refused(check_may_approve, BOB, "m", "2", selfish, {"bob"})


def test_only_admins_assign_owners():
    check_may_assign_owners(ADMIN, "m", ALICE_OWNS)
    for actor in (ALICE, CAROL, BOB):
        assert "only admins" in refused(check_may_assign_owners, actor, "m", ALICE_OWNS)


def test_deleting_versions_is_for_maintainers():
    for actor in (ALICE, CAROL, ADMIN):
        check_may_maintain(actor, "m", ALICE_OWNS, "delete versions of")
    assert "delete versions of 'm'" in refused(
        check_may_maintain, BOB, "m", ALICE_OWNS, "delete versions of"
    )
