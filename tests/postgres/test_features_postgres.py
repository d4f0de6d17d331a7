"""The feature catalog on a real PostgreSQL: with ``features.registry_url`` and
``features.db_url`` there, Feast's SQL registry and the proposals and audit trail live in
PostgreSQL (nothing in SQLite), the example project is seeded once, and a reviewed proposal is
applied and still listed after the service starts again."""

from __future__ import annotations

import time

import pytest
import requests
import sqlalchemy as sa

from tests.integration.test_features import GOOD

pytestmark = pytest.mark.postgres

SEEDED = {"driver_hourly_stats", "driver_quality", "rider_profile"}


class Features:
    def __init__(self, hub, user: str):
        self.base = hub.service_url("features")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {hub.user_token(user)}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=60, **kw)

    def ok(self, path: str, **params) -> dict:
        r = self("GET", path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not (r := self("GET", "api/projects")).ok or not r.json()["ready"]:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)


def views_in_registry(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text("select feature_view_name from feature_views where project_id = :p"),
                    {"p": "rides"},
                ).scalars()
            )
    finally:
        engine.dispose()


def test_feature_catalog_on_postgresql_seeds_searches_and_applies_a_reviewed_proposal(
    hub_factory, postgres
):
    postgres.create_database("features_registry")
    postgres.create_database("features_reviews")
    registry_url, reviews_url = postgres.url("features_registry"), postgres.url("features_reviews")
    settings = {
        "features": {
            "enabled": True,
            "registry_url": registry_url,
            "db_url": reviews_url,
            "projects": {"rides": {"readers": ["*"], "owners": ["feature-owners"]}},
        },
        "auth": {"groups": {"feature-owners": ["olga"]}},
    }
    hub = hub_factory(settings)
    alice, olga = Features(hub, "alice"), Features(hub, "olga")
    alice.wait_ready()

    # the seeded project is searchable and its statistics answer
    assert {r["name"] for r in alice.ok("api/search")["results"]} == SEEDED
    stats = alice.ok("api/projects/rides/feature-views/driver_hourly_stats/stats")
    assert stats["rows_total"] > 0 and "acc_rate" in stats["features"]

    # alice proposes, olga approves: applied to the registry in PostgreSQL
    import pandas as pd

    folder = hub.data_dir / "features" / "data" / "rides"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),
            "surge_multiplier": pd.Series([1.2, 1.9], dtype="float32"),
        }
    ).to_parquet(folder / "driver_surge.parquet")
    r = alice("POST", "api/projects/rides/proposals", json={"source": GOOD})
    assert r.status_code == 201, r.text
    proposal = r.json()
    assert proposal["state"] == "pending"
    r = olga(
        "POST",
        f"api/proposals/{proposal['id']}/review",
        json={"decision": "approve", "comment": "useful for pricing"},
    )
    assert r.status_code == 200 and r.json()["state"] == "applied", r.text
    assert "driver_surge" in {v["name"] for v in alice.ok("api/projects/rides")["feature_views"]}

    # in PostgreSQL: Feast's registry tables and the reviews database
    assert views_in_registry(registry_url) == SEEDED | {"driver_surge"}
    engine = sa.create_engine(reviews_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select project, state, proposed_by, reviewed_by from feature_proposals")
        ).all()
        assert [tuple(row) for row in rows] == [("rides", "applied", "alice", "olga")]
        actions = conn.execute(
            sa.text("select action from feature_audit where project = 'rides' order by id")
        ).scalars()
        actions = list(actions)
    engine.dispose()
    assert actions.count("seeded") == 1 and actions[0] == "seeded", actions
    assert "approved" in actions and actions[-1] == "applied", actions
    # nothing went to SQLite
    assert not (hub.data_dir / "features" / "registry.db").exists()
    assert not (hub.data_dir / "features" / "reviews.db").exists()

    # a second start on the same databases: no second seed, the applied view still listed
    hub.stop()
    again = hub_factory(settings, data_dir=hub.data_dir)
    bob = Features(again, "bob")
    bob.wait_ready()
    assert {v["name"] for v in bob.ok("api/projects/rides")["feature_views"]} == SEEDED | {
        "driver_surge"
    }
    view = bob.ok("api/projects/rides/feature-views/driver_surge")
    assert view["owner"] == "alice@rides.example" and view["ttl_s"] == 6 * 3600
    assert {r["name"] for r in bob.ok("api/search", q="surge")["results"]} == {"driver_surge"}
    engine = sa.create_engine(reviews_url)
    with engine.connect() as conn:
        seeded = conn.execute(
            sa.text("select count(*) from feature_audit where action = 'seeded'")
        ).scalar()
    engine.dispose()
    assert seeded == 1
    assert views_in_registry(registry_url) == SEEDED | {"driver_surge"}
    assert not (again.data_dir / "features" / "registry.db").exists()
    assert not (again.data_dir / "features" / "reviews.db").exists()
