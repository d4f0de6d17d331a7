"""The example project ``rides``: generated data and documented definitions, nothing downloaded.

Drivers and riders of a ride-hailing service. Two weeks of hourly driver statistics, daily driver
quality and rider profiles, written as Parquet relative to now, so the catalog shows something
fresh (``driver_hourly_stats``, ``rider_profile``: materialized just now), something stale
(``driver_quality``: last materialized ten days ago, its ttl is seven) and one feature service.
The same seed always writes the same values.
"""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger("hubml.features")

PROJECT = "rides"
OWNER = "driver-ops@rides.example"
DRIVERS = 50
RIDERS = 200
DAYS = 14


def _frames(now: dt.datetime, seed: int = 7):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    hours = DAYS * 24
    stamps = [now - dt.timedelta(hours=h) for h in range(hours)]
    driver_ids = np.repeat(np.arange(1001, 1001 + DRIVERS), hours)
    hourly = pd.DataFrame(
        {
            "driver_id": driver_ids,
            "event_timestamp": stamps * DRIVERS,
            "conv_rate": rng.beta(4, 6, DRIVERS * hours).astype("float32"),
            "acc_rate": rng.beta(8, 2, DRIVERS * hours).astype("float32"),
            "avg_daily_trips": rng.poisson(18, DRIVERS * hours).astype("int64"),
        }
    )
    hourly.loc[rng.choice(len(hourly), len(hourly) // 50, replace=False), "acc_rate"] = None
    days = [now - dt.timedelta(days=d) for d in range(DAYS)]
    quality = pd.DataFrame(
        {
            "driver_id": np.repeat(np.arange(1001, 1001 + DRIVERS), DAYS),
            "event_timestamp": days * DRIVERS,
            "avg_rating": np.round(rng.normal(4.6, 0.25, DRIVERS * DAYS).clip(1, 5), 2),
            "cancel_rate": rng.beta(1, 20, DRIVERS * DAYS).astype("float32"),
        }
    )
    riders = pd.DataFrame(
        {
            "rider_id": np.arange(1, RIDERS + 1),
            "event_timestamp": [
                now - dt.timedelta(hours=int(h)) for h in rng.integers(0, 72, RIDERS)
            ],
            "lifetime_trips": rng.poisson(40, RIDERS).astype("int64"),
            "avg_rating_given": np.round(rng.normal(4.7, 0.2, RIDERS).clip(1, 5), 2),
            "preferred_payment": rng.choice(["card", "cash", "wallet"], RIDERS),
        }
    )
    return {"driver_hourly": hourly, "driver_quality": quality, "rider_profile": riders}


def definitions(folder):
    """The project's Feast objects, their sources under ``folder``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64, String

    driver = Entity(
        name="driver",
        join_keys=["driver_id"],
        value_type=ValueType.INT64,
        description="A driver on the platform, by their numeric id",
        owner=OWNER,
        tags={"domain": "drivers"},
    )
    rider = Entity(
        name="rider",
        join_keys=["rider_id"],
        value_type=ValueType.INT64,
        description="A rider (customer), by their numeric id",
        owner="rider-growth@rides.example",
        tags={"domain": "riders"},
    )

    def source(name):
        return FileSource(
            name=name,
            path=str(folder / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            description=f"Generated example data ({name}.parquet)",
            owner=OWNER,
        )

    hourly = FeatureView(
        name="driver_hourly_stats",
        entities=[driver],
        ttl=dt.timedelta(days=1),
        schema=[
            Field(
                name="conv_rate",
                dtype=Float32,
                description="Share of offers the driver converted to trips in the hour",
            ),
            Field(
                name="acc_rate",
                dtype=Float32,
                description="Share of offers the driver accepted in the hour",
            ),
            Field(
                name="avg_daily_trips",
                dtype=Int64,
                description="Trips per day, averaged over the last 7 days",
            ),
        ],
        source=source("driver_hourly"),
        owner=OWNER,
        description="Hourly activity of each driver: conversion, acceptance and trips",
        tags={"domain": "drivers", "team": "driver-ops", "refresh": "hourly"},
    )
    quality = FeatureView(
        name="driver_quality",
        entities=[driver],
        ttl=dt.timedelta(days=7),
        schema=[
            Field(
                name="avg_rating",
                dtype=Float64,
                description="Mean rating riders gave the driver that day (1-5)",
            ),
            Field(
                name="cancel_rate",
                dtype=Float32,
                description="Share of accepted trips the driver cancelled that day",
            ),
        ],
        source=source("driver_quality"),
        owner=OWNER,
        description="Daily service quality of each driver: ratings and cancellations",
        tags={"domain": "drivers", "team": "driver-ops", "refresh": "daily"},
    )
    profile = FeatureView(
        name="rider_profile",
        entities=[rider],
        ttl=dt.timedelta(days=30),
        schema=[
            Field(
                name="lifetime_trips",
                dtype=Int64,
                description="Trips the rider has taken since sign-up",
            ),
            Field(
                name="avg_rating_given",
                dtype=Float64,
                description="Mean rating the rider gives drivers (1-5)",
            ),
            Field(
                name="preferred_payment",
                dtype=String,
                description="card, cash or wallet: the rider's most used payment",
            ),
        ],
        source=source("rider_profile"),
        owner="rider-growth@rides.example",
        description="Who each rider is: history, ratings given, payment habits",
        tags={"domain": "riders", "team": "rider-growth", "pii": "none"},
    )
    ranking = FeatureService(
        name="driver_ranking",
        features=[hourly, quality],
        owner=OWNER,
        description="The features the driver-ranking model trains and serves on",
        tags={"model": "driver-ranking"},
    )
    return [driver, rider, hourly, quality, profile, ranking]


def seed(store, folder, now: dt.datetime | None = None) -> None:
    """Write the example data under ``folder``, apply the definitions to ``store`` and
    materialize: two views up to now, ``driver_quality`` only up to ten days ago (stale)."""
    now = (now or dt.datetime.now(dt.UTC)).replace(minute=0, second=0, microsecond=0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in _frames(now).items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    objects = definitions(folder)
    store.apply(objects)
    views = {o.name: o for o in objects if type(o).__name__ == "FeatureView"}
    start = now - dt.timedelta(days=DAYS)
    store.materialize(start, now, feature_views=["driver_hourly_stats", "rider_profile"])
    store.materialize(start, now - dt.timedelta(days=10), feature_views=["driver_quality"])
    log.info("features: seeded the example project %s (%s feature views)", PROJECT, len(views))
