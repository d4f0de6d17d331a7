"""Proposed Feast definitions: read without running them, checked against the project's catalog,
and built into the Feast objects the features service applies."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pytest

from hubml.extensions.features.proposals import (
    ALLOWED,
    IMPORTABLE,
    DefinitionError,
    check,
    feature_fingerprints,
    fingerprint,
    normalise_path,
    read_definition,
    to_feast,
)

OWNER = "driver-ops@rides.example"

# the catalog of the example project ``rides`` (seed.py), as catalog.project_catalog shapes it
CATALOG = {
    "project": "rides",
    "feature_views": [
        {
            "name": "driver_hourly_stats",
            "entities": ["driver"],
            "join_keys": ["driver_id"],
            "features": [
                {"name": "conv_rate", "dtype": "Float32", "description": "Converted offers"},
                {"name": "acc_rate", "dtype": "Float32", "description": "Accepted offers"},
                {"name": "avg_daily_trips", "dtype": "Int64", "description": "Trips per day"},
            ],
            "source": {
                "name": "driver_hourly",
                "path": "data/driver_hourly.parquet",
                "timestamp_field": "event_timestamp",
            },
            "ttl_s": 86400,
            "owner": OWNER,
            "description": "Hourly activity of each driver",
            "tags": {"team": "driver-ops"},
        },
        {
            "name": "driver_quality",
            "entities": ["driver"],
            "join_keys": ["driver_id"],
            "features": [
                {"name": "avg_rating", "dtype": "Float64", "description": "Mean rating"},
                {"name": "cancel_rate", "dtype": "Float32", "description": "Cancelled trips"},
            ],
            "source": {
                "name": "driver_quality",
                "path": "data/driver_quality.parquet",
                "timestamp_field": "event_timestamp",
            },
            "ttl_s": 7 * 86400,
            "owner": OWNER,
            "description": "Daily service quality of each driver",
            "tags": {"team": "driver-ops"},
        },
    ],
    "entities": [
        {
            "name": "driver",
            "join_keys": ["driver_id"],
            "description": "A driver on the platform",
            "owner": OWNER,
            "tags": {},
        },
        {
            "name": "rider",
            "join_keys": ["rider_id"],
            "description": "A rider",
            "owner": "rider-growth@rides.example",
            "tags": {},
        },
    ],
    "feature_services": [
        {
            "name": "driver_ranking",
            "features": ["driver_hourly_stats", "driver_quality"],
            "owner": OWNER,
            "description": "The driver-ranking model's features",
            "tags": {},
        }
    ],
    "sources": [
        {"name": "driver_hourly", "path": "data/driver_hourly.parquet"},
        {"name": "driver_quality", "path": "data/driver_quality.parquet"},
    ],
}

HEADER = """\
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float32, Int64
"""

GOOD = (
    HEADER
    + '''
"""Trip-level features of drivers, proposed from a notebook."""

trip = Entity(
    name="trip",
    join_keys=["trip_id"],
    description="One ride, by its id",
    owner="ana@rides.example",
    tags={"domain": "trips"},
)
trips_source = FileSource(
    name="trips",
    path="data/trips.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
trip_stats = FeatureView(
    name="trip_stats",
    entities=[trip, "driver"],
    schema=[
        Field(name="trip_id", dtype=Int64),
        Field(name="distance_km", dtype=Float32, description="Length of the ride in km"),
        Field(name="wait_s", dtype=Int64, description="Seconds the rider waited"),
    ],
    source=trips_source,
    ttl=timedelta(days=2, hours=3),
    owner="ana@rides.example",
    description="Distance and waiting time of each trip",
    tags={"team": "trips"},
)
'''
)


def view_source(name="driver_stats_v2", path="data/other.parquet", fields=None, **extra) -> str:
    """A complete proposal of one view on the existing ``driver`` entity."""
    fields = fields or [("conv_rate", "Float32"), ("acc_rate", "Float32")]
    schema = "".join(
        f'        Field(name="{f}", dtype={t}, description="about {f}"),\n' for f, t in fields
    )
    args = {
        "owner": '"ana@rides.example"',
        "description": '"Driver activity, again"',
        "ttl": "timedelta(days=1)",
        "tags": '{"team": "trips"}',
        **extra,
    }
    rest = "".join(f"    {k}={v},\n" for k, v in args.items() if v is not None)
    return HEADER + textwrap.dedent(
        f"""
src = FileSource(name="{name}_src", path="{path}", timestamp_field="event_timestamp")
view = FeatureView(
    name="{name}",
    entities=["driver"],
    schema=[
{schema}    ],
    source=src,
{rest})
"""
    )


# --- reading --------------------------------------------------------------------------------------


def test_a_good_proposal_reads_as_plain_data():
    definition = read_definition(GOOD)
    assert definition == {
        "entities": [
            {
                "name": "trip",
                "join_keys": ["trip_id"],
                "value_type": None,
                "description": "One ride, by its id",
                "owner": "ana@rides.example",
                "tags": {"domain": "trips"},
            }
        ],
        "sources": [
            {
                "name": "trips",
                "path": "data/trips.parquet",
                "timestamp_field": "event_timestamp",
                "created_timestamp_column": "created",
                "description": "",
                "owner": "",
            }
        ],
        "feature_views": [
            {
                "name": "trip_stats",
                "entities": ["trip", "driver"],
                "features": [
                    {
                        "name": "distance_km",
                        "dtype": "Float32",
                        "description": "Length of the ride in km",
                    },
                    {"name": "wait_s", "dtype": "Int64", "description": "Seconds the rider waited"},
                ],
                "entity_columns": [{"name": "trip_id", "dtype": "Int64", "description": ""}],
                "source": "trips",
                "source_path": "data/trips.parquet",
                "timestamp_field": "event_timestamp",
                "ttl_s": 2 * 86400 + 3 * 3600,
                "owner": "ana@rides.example",
                "description": "Distance and waiting time of each trip",
                "tags": {"team": "trips"},
            }
        ],
        "feature_services": [],
    }
    assert json.loads(json.dumps(definition)) == definition


def test_other_spellings_of_the_same_definitions_are_read():
    source = textwrap.dedent(
        """
        import datetime as dt
        import feast
        from feast import types, ValueType
        from feast.types import Array, String

        driver = feast.Entity(name="driver2", join_keys=["driver_id"], value_type=ValueType.INT64)
        view = feast.FeatureView(
            name="driver_tags",
            entities=[driver],
            schema=[
                feast.Field(name="labels", dtype=Array(String)),
                feast.Field(name="score", dtype=types.Float64),
                feast.Field(name="seen", dtype=feast.types.UnixTimestamp),
            ],
            source=feast.FileSource(name="tags", path="s3://bucket/tags.parquet"),
            ttl=dt.timedelta(hours=1, minutes=30),
        )
        service = feast.FeatureService(name="tagging", features=[view, "driver_quality"])
        """
    )
    definition = read_definition(source)
    view = definition["feature_views"][0]
    assert [(f["name"], f["dtype"]) for f in view["features"]] == [
        ("labels", "Array(String)"),
        ("score", "Float64"),
        ("seen", "UnixTimestamp"),
    ]
    assert view["ttl_s"] == 5400 and view["source"] == "tags" and view["timestamp_field"] is None
    assert definition["entities"][0]["value_type"] == "INT64"
    assert definition["feature_services"][0]["features"] == ["driver_tags", "driver_quality"]


def test_an_assigned_source_without_a_name_is_known_by_its_variable_and_join_keys_default():
    definition = read_definition(
        HEADER
        + 'rides = FileSource(path="data/rides.parquet", timestamp_field="ts")\n'
        + 'rider2 = Entity(name="rider2")\n'
        + 'v = FeatureView(name="v", entities=[rider2], source=rides)\n'
    )
    assert definition["sources"][0]["name"] == "rides"
    assert definition["entities"][0]["join_keys"] == ["rider2"]
    assert definition["feature_views"][0]["features"] == []


MALICIOUS = [
    ('os.system("touch {marker}")', "a call to os.system()"),
    ('open("/etc/passwd")', "a call to open()"),
    ('open("{marker}", "w").write("x")', "a call (open("),
    ('__import__("os").system("touch {marker}")', "a call ("),
    ('x = __import__("os")', "a call to __import__()"),
    'def f():\n    open("{marker}", "w")',
    'class Plugin:\n    open("{marker}", "w")',
    'with open("{marker}", "w"):\n    pass',
    'for _ in range(1):\n    open("{marker}", "w")',
    ('f = lambda: open("{marker}", "w")', "a lambda"),
    ('x = Entity(name="a", description=lambda: 1)', "a lambda"),
    ("().__class__.__base__.__subclasses__()", "a call ("),
    ("x = Entity(name=().__class__)", "attribute access (().__class__)"),
    ("x = Entity(name=f\"{{open('{marker}', 'w')}}\")", "an f-string"),
    ('x = Entity(name="a", tags={{"k": open("{marker}", "w")}})', None),
    (
        'x = FeatureView(name="v", schema=[Field(name=n, dtype=Float32) for n in "ab"])',
        "comprehension",
    ),
    ('x = Entity(name="a", join_keys=["a"] + [open("{marker}", "w")])', "an operator expression"),
    ('x = Entity(name=str(open("{marker}", "w")))', "a call to str()"),
    ('x = FeatureView(name="v", ttl=timedelta(days=len(open("{marker}", "w"))))', None),
    ("x = Entity(name=Entity.__init__)", "attribute access"),
    ('x = Entity(name="a", **{{"owner": "b"}})', "unpacking (**)"),
    ("x = y = Entity(name='a')", "assign each definition to one plain name"),
    ('print(open("{marker}", "w"))', "a call to print()"),
]


@pytest.mark.parametrize("case", MALICIOUS, ids=lambda c: (c if isinstance(c, str) else c[0])[:40])
def test_anything_but_definitions_is_refused_by_line_and_nothing_runs(case, tmp_path):
    code, found = case if isinstance(case, tuple) else (case, None)
    marker = tmp_path / "ran"
    source = HEADER + code.format(marker=marker) + "\n" + view_source().split(HEADER)[1]
    with pytest.raises(DefinitionError) as refused:
        read_definition(source)
    message = str(refused.value)
    assert refused.value.line == 4, message
    assert message.startswith("line 4: "), message
    assert ALLOWED in message or "timedelta(days=" in message, message
    if found:
        assert found in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "statement, found",
    [
        ("import os", "an import of 'os'"),
        ("import subprocess as feast", "an import of 'subprocess'"),
        ("from os import system", "an import of 'os'"),
        ("import feast, shutil", "an import of 'shutil'"),
        ("from . import secrets", "a relative import"),
    ],
)
def test_only_feast_and_datetime_may_be_imported(statement, found):
    with pytest.raises(DefinitionError) as refused:
        read_definition(HEADER + statement + "\n")
    assert refused.value.line == 4
    assert str(refused.value) == f"line 4: found {found}, which is not allowed; {IMPORTABLE}"


@pytest.mark.parametrize(
    "code, says",
    [
        (
            'v = FeatureView(name="v", mode="python")',
            "FeatureView has no argument 'mode' here; allowed: name, entities, schema, source, "
            "ttl, owner, description, tags",
        ),
        ('v = FeatureView("v")', "keyword arguments only"),
        ("v = FeatureView(entities=[])", 'FeatureView(...) has no name=; set name="..."'),
        ('v = FeatureView(name="v", entities=[driver])', "'driver' is not defined above"),
        ('v = FeatureView(name="v", ttl=timedelta(1))', "timedelta(days=..."),
        ('v = FeatureView(name="v", ttl=timedelta(days=-1))', "not negative"),
        ('v = FeatureView(name="v", ttl=3600)', "ttl= is a number; it must be timedelta(days=...)"),
        ('v = FeatureView(name="v", schema=[Field(name="a", dtype=Float16)])', "'Float16'"),
        ('v = FeatureView(name="v", schema=[Field(name="a", dtype=Array(Array(Int64)))])', "Array"),
        ('v = FeatureView(name="v", schema=[Field(name="a")])', "Field(...) has no dtype="),
        ('v = FeatureView(name="v", tags={"n": 1})', "only string keys and values"),
        ('v = FeatureView(name="my view")', "no spaces or ':'"),
        (
            'v = FeatureView(name="v")\n\nw = FeatureView(name="v")',
            "two FeatureView definitions are named 'v' (lines 4 and 6)",
        ),
        ('v = FeatureView(name="v")\n\nv = FeatureView(name="w")', "'v' is assigned twice"),
        ('Entity = FeatureView(name="v")', "choose another name"),
        ('FeatureView(name="v")', "not assigned to a name"),
        ('e = Entity(name="e", join_keys=["a", "b"])', "one join key"),
        ("v = FeatureView(name=", "not valid Python"),
    ],
)
def test_refusals_say_what_was_wrong_and_what_is_allowed(code, says):
    with pytest.raises(DefinitionError) as refused:
        read_definition(HEADER + code + "\n")
    line = 4 + code.count("\n")  # the last statement is the one to blame
    assert refused.value.line == line
    assert str(refused.value).startswith(f"line {line}: ")
    assert says in str(refused.value)


def test_a_proposal_must_define_a_view_or_a_service():
    with pytest.raises(DefinitionError) as refused:
        read_definition(HEADER + '"""Only an entity."""\ne = Entity(name="e")\n')
    assert refused.value.line is None
    assert "defines no FeatureView or FeatureService" in str(refused.value)


# --- fingerprints ---------------------------------------------------------------------------------


def test_paths_are_normalised_before_comparing():
    assert normalise_path("./data/../data/driver.parquet") == "data/driver.parquet"
    assert normalise_path("data//driver.parquet/") == "data/driver.parquet"
    assert normalise_path("S3://bucket/a/../driver.parquet") == "s3://bucket/driver.parquet"
    assert normalise_path("file:///srv/data/./x.parquet") == "/srv/data/x.parquet"
    assert normalise_path("") == normalise_path(None) == ""


def test_a_fingerprint_ignores_names_order_case_and_path_spelling():
    existing = CATALOG["feature_views"][0]
    proposed = {
        "name": "anything",
        "source": "s",
        "timestamp_field": "event_timestamp",
        "features": [
            {"name": "AVG_DAILY_TRIPS", "dtype": "Int64"},
            {"name": "acc_rate", "dtype": "Float32"},
            {"name": "Conv_Rate", "dtype": "Float32"},
        ],
    }
    sources = {"s": {"path": "./data/../data/driver_hourly.parquet"}}
    assert fingerprint(proposed, sources) == fingerprint(existing)
    other_type = {**proposed, "features": [*proposed["features"][:2], {"name": "conv_rate"}]}
    assert fingerprint(other_type, sources) != fingerprint(existing)
    assert fingerprint({**proposed, "timestamp_field": "ts"}, sources) != fingerprint(existing)
    mine = feature_fingerprints({"source_path": "data/./driver_hourly.parquet", **proposed})
    assert mine["Conv_Rate"] == feature_fingerprints(existing)["conv_rate"]


# --- checks ---------------------------------------------------------------------------------------


def test_a_complete_new_proposal_is_ok():
    report = check(read_definition(GOOD), CATALOG)
    assert report == {
        "ok": True,
        "missing": [],
        "collisions": [],
        "duplicates": [],
        "similar": [],
    }
    assert json.loads(json.dumps(report)) == report


def test_what_is_missing_is_listed_with_how_to_fix_it():
    source = HEADER + textwrap.dedent(
        """
        trip = Entity(name="trip", join_keys=["trip_id"])
        src = FileSource(name="trips", path="data/trips.parquet")
        trip_stats = FeatureView(
            name="trip_stats",
            entities=[trip, "passenger"],
            schema=[Field(name="distance_km", dtype=Float32)],
            source=src,
        )
        """
    )
    report = check(read_definition(source), CATALOG)
    assert not report["ok"]
    by = {(m["what"], m["field"]): m["message"] for m in report["missing"]}
    assert by[("trip_stats", "owner")] == (
        'trip_stats: no owner; set owner="you@example.com" (who answers questions about it)'
    )
    assert 'set description="..."' in by[("trip_stats", "description")]
    assert "set ttl=timedelta(days=...)" in by[("trip_stats", "ttl")]
    assert "at least one" in by[("trip_stats", "tags")]
    assert "timestamp_field=" in by[("trip_stats", "timestamp_field")]
    assert 'Field(name="distance_km", ...)' in by[("trip_stats:distance_km", "description")]
    assert "'passenger' does not exist in project rides" in by[("trip_stats", "entities")]
    assert "driver, rider" in by[("trip_stats", "entities")]
    assert "new entity with no description" in by[("trip", "description")]
    assert "new entity with no owner" in by[("trip", "owner")]
    assert len(report["missing"]) == 9


def test_a_copy_of_an_existing_view_is_a_duplicate_with_a_reuse_snippet():
    source = view_source(
        name="my_driver_activity",
        path="./data/../data/driver_hourly.parquet",
        fields=[("avg_daily_trips", "Int64"), ("Conv_Rate", "Float32"), ("acc_rate", "Float32")],
    )
    report = check(read_definition(source), CATALOG)
    assert not report["ok"]
    [duplicate] = report["duplicates"]
    assert duplicate["what"] == "my_driver_activity"
    assert duplicate["existing"] == "driver_hourly_stats"
    assert duplicate["reuse"] == (
        'features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", '
        '"driver_hourly_stats:avg_daily_trips"]'
    )
    assert "same as the existing feature view driver_hourly_stats" in duplicate["message"]
    assert duplicate["reuse"] in duplicate["message"]
    assert report["similar"] == []  # the duplicate says it all


def test_a_single_feature_reading_an_existing_column_is_a_duplicate():
    source = view_source(
        name="driver_conversion",
        path="data/driver_hourly.parquet",
        fields=[("conv_rate", "Float32"), ("conv_rate_7d", "Float32")],
    )
    report = check(read_definition(source), CATALOG)
    assert not report["ok"]
    [duplicate] = report["duplicates"]
    assert duplicate["what"] == "driver_conversion:conv_rate"
    assert duplicate["existing"] == "driver_hourly_stats:conv_rate"
    assert duplicate["reuse"] == 'features=["driver_hourly_stats:conv_rate"]'
    assert "reads the same column of data/driver_hourly.parquet" in duplicate["message"]
    # the other feature is new, but its name is close to an existing one's: a warning
    assert [s["what"] for s in report["similar"]] == ["driver_conversion:conv_rate_7d"]


def test_a_service_serving_the_same_views_points_to_the_existing_service():
    source = HEADER + textwrap.dedent(
        """
        from feast import FeatureService

        ranking = FeatureService(
            name="ranking_for_me",
            features=["driver_quality", "driver_hourly_stats"],
            owner="ana@rides.example",
        )
        """
    )
    report = check(read_definition(source), CATALOG)
    [duplicate] = report["duplicates"]
    assert duplicate["existing"] == "driver_ranking"
    assert duplicate["reuse"] == 'store.get_feature_service("driver_ranking")'
    assert not report["ok"]


def test_a_near_identical_name_is_a_warning_not_a_refusal():
    source = view_source(
        name="driver_hourly_stat",
        path="data/driver_hourly_v2.parquet",
        fields=[("trips_today", "Int64")],
    )
    report = check(read_definition(source), CATALOG)
    assert report["ok"], report
    [similar] = report["similar"]
    assert similar["what"] == "driver_hourly_stat"
    assert similar["existing"] == "driver_hourly_stats"
    assert similar["reuse"].startswith('features=["driver_hourly_stats:conv_rate"')
    assert "looks like the existing feature view driver_hourly_stats" in similar["message"]
    assert "rename it" in similar["message"]
    versioned = check(read_definition(view_source(name="driver_quality_v3")), CATALOG)
    assert [s["existing"] for s in versioned["similar"]][0] == "driver_quality"


def test_names_taken_in_the_project_collide():
    source = HEADER + textwrap.dedent(
        """
        from feast import FeatureService

        driver = Entity(name="driver", join_keys=["driver_uuid"], description="d", owner="o")
        rider = Entity(name="Rider", join_keys=["rider_id"], description="r", owner="o")
        src = FileSource(name="driver_hourly", path="data/elsewhere.parquet", timestamp_field="ts")
        v = FeatureView(
            name="Driver_Hourly_Stats",
            entities=[driver],
            schema=[Field(name="x", dtype=Int64, description="x")],
            source=src,
            ttl=timedelta(days=1),
            owner="ana@rides.example",
            description="d",
            tags={"t": "t"},
        )
        s = FeatureService(name="driver_ranking", features=[v])
        """
    )
    report = check(read_definition(source), CATALOG)
    assert not report["ok"]
    by = {c["what"]: c for c in report["collisions"]}
    assert set(by) == {"driver", "Rider", "driver_hourly", "Driver_Hourly_Stats", "driver_ranking"}
    assert "join keys ['driver_id']" in by["driver"]["message"]
    assert OWNER in by["driver"]["message"]
    assert "differs only in letter case" in by["Driver_Hourly_Stats"]["message"]
    assert "differs only in letter case" in by["Rider"]["message"]
    assert "already exists in project rides" in by["driver_ranking"]["message"]
    assert f"owner {OWNER}" in by["driver_ranking"]["message"]
    assert "reads data/driver_hourly.parquet" in by["driver_hourly"]["message"]


def test_redefining_an_existing_entity_as_it_is_is_no_collision():
    source = GOOD.replace('"driver"]', "driver]").replace(
        "trip = Entity(",
        'driver = Entity(name="driver", join_keys=["driver_id"])\ntrip = Entity(',
    )
    report = check(read_definition(source), CATALOG)
    assert report["ok"], report


# --- Feast objects --------------------------------------------------------------------------------


def feast_objects(source=GOOD):
    from feast import Entity, FeatureView

    existing_driver = Entity(
        name="driver", join_keys=["driver_id"], value_type=_value_type("INT64"), owner=OWNER
    )
    existing_view = FeatureView(
        name="driver_quality", entities=[existing_driver], ttl=dt.timedelta(days=7)
    )
    return to_feast(
        read_definition(source),
        {"driver": existing_driver},
        existing_views={"driver_quality": existing_view},
    )


def _value_type(name):
    from feast import ValueType

    return ValueType[name]


def test_to_feast_builds_the_proposed_objects_in_dependency_order():
    from feast import Entity, FeatureView, FileSource
    from feast.types import Float32, Int64

    objects = feast_objects()
    assert [type(o) for o in objects] == [Entity, FileSource, FeatureView]
    trip, source, view = objects
    assert (trip.name, trip.join_key, trip.owner) == ("trip", "trip_id", "ana@rides.example")
    assert trip.value_type == _value_type("INT64")  # from the schema's trip_id column
    assert (source.name, source.path, source.timestamp_field) == (
        "trips",
        "data/trips.parquet",
        "event_timestamp",
    )
    assert source.created_timestamp_column == "created"
    assert view.name == "trip_stats"
    assert view.ttl == dt.timedelta(days=2, hours=3)
    assert view.owner == "ana@rides.example"
    assert view.tags == {"team": "trips"}
    assert sorted(view.entities) == ["driver", "trip"]
    assert [(f.name, f.dtype) for f in view.features] == [
        ("distance_km", Float32),
        ("wait_s", Int64),
    ]
    assert view.features[0].description == "Length of the ride in km"
    assert [c.name for c in view.entity_columns] == ["trip_id"]
    assert view.batch_source is source


def test_to_feast_reuses_existing_entities_and_views_by_name():
    from feast import FeatureService
    from feast.types import Array, String

    source = textwrap.dedent(
        """
        from feast import Entity, FeatureService, FeatureView, Field, FileSource
        from feast.types import Array, String

        driver = Entity(name="driver", join_keys=["driver_id"], description="not applied")
        tags = FeatureView(
            name="driver_tags",
            entities=[driver],
            schema=[Field(name="labels", dtype=Array(String), description="labels")],
            source=FileSource(name="tags", path="data/tags.parquet", timestamp_field="ts"),
            owner="ana@rides.example",
        )
        both = FeatureService(name="tagged_quality", features=[tags, "driver_quality"], owner="o")
        """
    )
    objects = feast_objects(source)
    assert [o.name for o in objects] == ["tags", "driver_tags", "tagged_quality"]
    view, service = objects[1], objects[2]
    assert view.ttl == dt.timedelta(0)  # Feast's "no ttl"
    assert view.features[0].dtype == Array(String)
    assert isinstance(service, FeatureService)
    assert [p.name for p in service.feature_view_projections] == ["driver_tags", "driver_quality"]
    assert service.owner == "o"


def test_the_objects_apply_to_a_real_feature_store(tmp_path):
    import pandas as pd
    from feast import Entity, FeatureStore, ValueType
    from feast.repo_config import RepoConfig

    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {
            "trip_id": [1, 2],
            "driver_id": [1001, 1002],
            "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "created": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "distance_km": pd.Series([3.5, 12.0], dtype="float32"),
            "wait_s": [120, 300],
        }
    ).to_parquet(data / "trips.parquet", index=False)
    config = RepoConfig(
        project="rides",
        provider="local",
        registry=str(tmp_path / "registry.db"),
        offline_store={"type": "file"},
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        entity_key_serialization_version=3,
        repo_path=str(tmp_path),
    )
    store = FeatureStore(config=config)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    store.apply([driver])
    store.apply(to_feast(read_definition(GOOD), {"driver": store.get_entity("driver")}))
    view = store.get_feature_view("trip_stats")
    assert view.ttl == dt.timedelta(days=2, hours=3)
    assert [f.name for f in view.features] == ["distance_km", "wait_s"]
    assert store.get_entity("trip").owner == "ana@rides.example"
