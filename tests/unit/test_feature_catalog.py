"""The feature catalog's own logic on a real Feast registry (SQLite, in a temporary folder):
freshness states, search and its filters, statistics with their caps and cache."""

from __future__ import annotations

import datetime as dt
import os
from types import SimpleNamespace

import pytest

from hubml.hub_config.schema import FeaturesSection


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from hubml.extensions.features import catalog, seed, store

    settings = SimpleNamespace(
        data_dir=str(tmp_path_factory.mktemp("features")), features=FeaturesSection()
    )
    fs = store.Stores(settings).get("rides")
    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
    seed.seed(fs, store.data_dir(settings, "rides"), now=now)
    return settings, catalog.project_catalog(fs, "rides", now), now


def test_freshness_follows_materialization_against_ttl(seeded):
    from hubml.extensions.features.catalog import refresh_freshness

    _settings, cat, now = seeded
    views = {v["name"]: v for v in cat["feature_views"]}
    assert views["driver_hourly_stats"]["freshness"] == {
        "state": "fresh",
        "last_materialized": "2026-12-03T12:00:00Z",
        "age_s": 0,
        "ttl_s": 86400,
    }
    quality = views["driver_quality"]["freshness"]
    assert quality["state"] == "stale" and quality["age_s"] == 10 * 86400
    # two days on, the hourly view (ttl one day) is stale too; the rider profile (30 d) is not
    refresh_freshness(cat, now + dt.timedelta(days=2))
    assert views["driver_hourly_stats"]["freshness"]["state"] == "stale"
    assert views["rider_profile"]["freshness"]["state"] == "fresh"
    refresh_freshness(cat, now)  # (back, for the other tests)
    cat["_aged_at"] = 0
    refresh_freshness(cat, now)
    assert views["driver_hourly_stats"]["freshness"]["state"] == "fresh"


def test_search_ranks_names_first_and_filters_by_tag_owner_entity_and_project(seeded):
    from hubml.extensions.features.catalog import Index

    _settings, cat, _now = seeded
    index = Index([cat])
    total, hits = index.search("rating")
    assert total == 2 and [h["name"] for h in hits] == ["driver_quality", "rider_profile"]
    # a feature's own name counts more than a word of a description
    assert [h["name"] for h in index.search("conv_rate")[1]] == ["driver_hourly_stats"]
    # every term must match
    assert index.search("conversion payment")[0] == 0
    assert [h["name"] for h in index.search(tag="team=rider-growth")[1]] == ["rider_profile"]
    assert index.search(tag="team")[0] == 3 and index.search(tag="team=nobody")[0] == 0
    assert [h["name"] for h in index.search(entity="rider")[1]] == ["rider_profile"]
    assert index.search(owner="DRIVER-OPS")[0] == 2
    assert index.search(project="other")[0] == 0
    assert index.search(limit=1)[0] == 3 and len(index.search(limit=1)[1]) == 1


def test_statistics_are_capped_cached_and_read_again_when_the_source_changes(seeded):
    from hubml.extensions.features.stats import StatsCache, compute

    settings, cat, _now = seeded
    view = next(v for v in cat["feature_views"] if v["name"] == "driver_hourly_stats")
    full = compute(view, max_rows=10**6, max_seconds=60, sample_rows=5)
    assert full["rows_total"] == full["rows_read"] == 16800 and not full["partial"]
    conv = full["features"]["conv_rate"]
    assert conv["kind"] == "numeric" and sum(conv["histogram"]["counts"]) == conv["count"]
    assert len(full["sample"]["rows"]) == 5
    stamps = [r["event_timestamp"] for r in full["sample"]["rows"]]
    assert stamps == sorted(stamps, reverse=True) and stamps[0].startswith("2026-12-03T12:00")
    capped = compute(view, max_rows=1000, max_seconds=60, sample_rows=5)
    assert capped["rows_total"] == 16800 and capped["rows_read"] == 1000
    rushed = compute(view, max_rows=10**6, max_seconds=0, sample_rows=5)
    assert rushed["partial"] and len(rushed["features"]) < 3

    cache = StatsCache(settings)
    assert not cache.get(view)["cached"] and cache.get(view)["cached"]
    path = view["source"]["path"]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert not cache.get(view)["cached"]  # a new file is read again

    missing = {**view, "source": {**view["source"], "path": path + ".gone"}}
    assert compute(missing, 1000, 1, 1) == {
        "available": False,
        "reason": f"the source file {path}.gone is not there",
    }
    renamed = {**view, "features": [*view["features"], {"name": "nope", "dtype": "Int64"}]}
    with pytest.raises(KeyError, match="has no column"):
        compute(renamed, 1000, 1, 1)
