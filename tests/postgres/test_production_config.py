"""The production configuration against a real PostgreSQL: hub database, MLflow backend store
and the registry's audit log."""

import pytest
import requests
import sqlalchemy as sa

from tests.integration.test_tracking_service import wait_for_mlflow

pytestmark = pytest.mark.postgres


def test_hub_and_tracking_on_postgresql(hub_factory, postgres):
    postgres.create_database("hub")
    postgres.create_database("mlflow")
    postgres.create_database("audit")
    hub = hub_factory(
        {
            "hub": {"db_url": postgres.url("hub")},
            "tracking": {
                "enabled": True,
                "backend_store_uri": postgres.url("mlflow", "postgresql"),
                "audit_db_url": postgres.url("audit"),
            },
        }
    )
    token = hub.user_token("alice")
    hub.spawn("alice", {"profile": "cpu-small"}, token=token)
    hub.wait_ready("alice")
    wait_for_mlflow(hub, token, timeout=90)

    base = hub.at("/services/mlflow")
    headers = {"Authorization": f"token {token}"}
    r = requests.post(
        f"{base}/api/2.0/mlflow/runs/create",
        json={"experiment_id": "0"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    run_id = r.json()["run"]["info"]["run_id"]

    hub_db = sa.create_engine(postgres.url("hub"))
    with hub_db.connect() as conn:
        assert (
            conn.execute(sa.text("select count(*) from users where name = 'alice'")).scalar() == 1
        )
    mlflow_db = sa.create_engine(postgres.url("mlflow"))
    with mlflow_db.connect() as conn:
        owner = conn.execute(
            sa.text("select value from tags where run_uuid = :r and key = 'hubml.user'"),
            {"r": run_id},
        ).scalar()
    assert owner == "alice"

    # registry audit entries land in PostgreSQL
    r = requests.post(
        f"{base}/api/2.0/mlflow/registered-models/create",
        json={"name": "pgmodel"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    r = requests.put(
        f"{base}/hubml/api/models/pgmodel/policy",
        headers=headers,
        timeout=60,
        json={"metric": "f1", "direction": "max", "reason": "f1 is what we ship on"},
    )
    assert r.status_code == 200, r.text
    audit = sa.create_engine(postgres.url("audit"))
    with audit.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        # the log and alembic's record of its revision, both created by the migration
        assert {"hubml_registry_audit", "hubml_audit_version"} <= tables, tables
        rows = conn.execute(sa.text("select action, actor from hubml_registry_audit")).all()
    assert ("set_policy", "alice") in [tuple(r) for r in rows]
    for engine in (hub_db, mlflow_db, audit):
        engine.dispose()
