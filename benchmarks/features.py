"""The feature catalog at scale: search over 1,000 feature views, statistics of a 1-million-row
source, and what `import hubml.widgets` costs with the FeatureBrowser in it.

One real hub with the features service (`seed_example: true`, so the example project `rides` is
written as on a first start) and a second project `bench`, registered with Feast on the same SQL
registry before the hub starts: 1,000 generated feature views (names, descriptions, tags, owners,
four features each, over ten shared small Parquet sources) and one view over a 1,000,000-row
Parquet source. Everything is timed as a client sees it: over HTTP through the hub's proxy
(configurable-http-proxy) as a user (alice), with her token.

- search: `GET api/search?q=latency` (about 50 of the 1,000 views) and `GET api/search` (all of
  them, the first 50 returned). The service keeps each project's catalog as last built; every
  `CATALOG_CHECK_S` (5 s) a request reads the registry's last-updated stamp of the project, and
  only when it moved is the catalog rebuilt, in the background, while the previous one answers.
  Timed: the first search after the service is ready (it builds the search index from the
  catalogs read at start); warm searches (some of them do the 5 s check); the search right after
  a check is due (an idle pause just over `CATALOG_CHECK_S`, nothing changed); searches while the
  catalog is rebuilt after someone else's change, and how long until the change is found. The
  changes are made with Feast from this process on the same registry, outside the service: one
  small feature view alone (as `feast apply` of a new file writes it), then twice a view applied
  with the project's description changed (Feast moves the project's stamp only when the project
  itself changes). After each, a pause just over `CATALOG_CHECK_S` (the service's last check was
  before the change) and a burst of searches for `BURST_S`: the first does the check and, when
  it sees the change, starts the rebuild in the background; then searches until the new view is
  found (at most `VISIBLE_TIMEOUT_S`). Last, the writer's own request, `POST
  api/projects/bench/feature-services` (2 existing features, a new name each time): the service
  rebuilds the catalog inside it, so its answer, and the writer's next read, already hold it.
- statistics: `GET api/projects/bench/feature-views/<the 1M view>/stats`. Cold is a cache miss
  (the source file's mtime is moved before each sample: the cache key is path, size, mtime; the
  file itself stays in the OS page cache), cached is the next call.
- baseline, in the same run through the same proxy: the hub's `GET /hub/api/` and the features
  service's own `GET hubml/health`, i.e. the machine's request overhead.
- imports: `import hubml.widgets` against the same package without its three features entries
  (written to a temporary folder), fresh interpreters (`benchmarks.imports`); and which of feast,
  pandas, pyarrow are in `sys.modules` after `import hubml.widgets` and after
  `from hubml.widgets import FeatureBrowser`.

Targets (issue 13): search ≤ 100 ms at the service (warm and while a rebuild runs: p95; right
after a check: each); a change made outside the service found by search (within 15 s); the
writer's own request: none (it includes the rebuild), but its answer holds the change; a view's
statistics of a 1M-row source ≤ 2 s cold and ≤ 100 ms cached; `import hubml.widgets` unchanged,
feast not imported by it. `python -m benchmarks.features` exits 1 when a target is missed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from hubml.extensions.features.service import CATALOG_CHECK_S
from tests.hubprocess import ROOT, start_hub

VIEWS = 1000
BIG_ROWS = 1_000_000
BIG_VIEW = "clickstream_1m"
TERM = "latency"
SOURCES = 10
SOURCE_ROWS = 200
CHECKS = 4  # searches right after a registry check (each after an idle CATALOG_CHECK_S)
# changes made outside the service, each followed by a burst of searches: a new view alone (as
# `feast apply` of a new file writes it), then a new view with the project's description changed
CHANGES = (False, True, True)
BURST_S = 1.5  # how long each burst lasts
VISIBLE_TIMEOUT_S = 15.0  # how long a change may take to be found before it counts as missed
WRITES = 3  # feature services saved through the service
TARGETS_MS = {
    "search": 100.0,  # warm and during a rebuild: p95; right after a check: each
    "stats_cold": 2000.0,
    "stats_cached": 100.0,
}

DOMAINS = [
    "payments",
    "search",
    "ads",
    "fraud",
    "logistics",
    "support",
    "growth",
    "pricing",
    "inventory",
    "risk",
]
SUBJECTS = [
    "clicks",
    "sessions",
    "orders",
    "refunds",
    "latency",
    "ratings",
    "visits",
    "carts",
    "churn",
    "margin",
    "basket",
    "device",
    "region",
    "spend",
    "returns",
    "coupons",
    "queries",
    "dwell",
    "bounce",
    "tickets",
]
STATS = ["count", "sum", "mean", "max", "min", "p95"]
WINDOWS = {"1h": "hourly", "24h": "daily", "7d": "weekly", "30d": "monthly"}
ENTITIES = [("customer", "customer_id"), ("item", "item_id"), ("merchant", "merchant_id")]
TIERS = ["gold", "silver", "bronze"]

SETTINGS = {
    "features": {
        "enabled": True,
        "seed_example": True,
        "projects": {
            "rides": {"readers": ["*"], "description": "The example project"},
            "bench": {"readers": ["*"], "description": "1,000 generated feature views"},
        },
    },
}


# -- the bench project, written with Feast before the hub starts ------------------------------


def _big_frame(now: dt.datetime):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(13)
    countries = np.array(
        "us de fr gb es it nl se pl br mx ar in jp kr cn au ca za ng eg tr ru ua pt ie be at ch dk".split(),  # noqa: SIM905
    )
    seconds = rng.integers(0, 30 * 86400, BIG_ROWS)
    frame = pd.DataFrame(
        {
            "customer_id": rng.integers(1, 100_001, BIG_ROWS).astype("int64"),
            "event_timestamp": pd.Timestamp(now) - pd.to_timedelta(seconds, unit="s"),
            "amount": np.round(rng.lognormal(3, 1, BIG_ROWS), 2),
            "clicks": rng.poisson(4, BIG_ROWS).astype("int64"),
            "dwell_s": rng.gamma(2, 30, BIG_ROWS).astype("float32"),
            "country": countries[rng.integers(0, len(countries), BIG_ROWS)],
        }
    )
    frame.loc[rng.choice(BIG_ROWS, BIG_ROWS // 100, replace=False), "amount"] = None
    return frame


def _small_frame(now: dt.datetime, key: str, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {
        key: np.arange(1, SOURCE_ROWS + 1, dtype="int64"),
        "event_timestamp": [
            now - dt.timedelta(hours=int(h)) for h in rng.integers(0, 48, SOURCE_ROWS)
        ],
    }
    for subject in SUBJECTS:
        for stat in STATS:
            data[f"{subject}_{stat}"] = rng.random(SOURCE_ROWS)
    return pd.DataFrame(data)


def definitions(folder: Path, now: dt.datetime) -> list:
    """The bench project's Feast objects (and its Parquet files under ``folder``)."""
    import random

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64, String

    folder.mkdir(parents=True, exist_ok=True)
    entities = {
        name: Entity(
            name=name,
            join_keys=[key],
            value_type=ValueType.INT64,
            description=f"A {name}, by its numeric id",
            owner="platform@bench.example",
        )
        for name, key in ENTITIES
    }
    sources = []
    for i in range(SOURCES):
        ent, key = ENTITIES[i % len(ENTITIES)]
        path = folder / f"{DOMAINS[i]}_events.parquet"
        _small_frame(now, key, i).to_parquet(path, index=False)
        sources.append(
            (
                ent,
                FileSource(
                    name=f"{DOMAINS[i]}_events",
                    path=str(path),
                    timestamp_field="event_timestamp",
                    description=f"Events of the {DOMAINS[i]} domain",
                    owner=f"{DOMAINS[i]}-data@bench.example",
                ),
            )
        )
    rng = random.Random(13)
    views = []
    for i in range(VIEWS):
        d = i % SOURCES
        domain = DOMAINS[d]
        subject = SUBJECTS[(i // SOURCES) % len(SUBJECTS)]
        window = list(WINDOWS)[(i // (SOURCES * len(SUBJECTS))) % len(WINDOWS)]
        ent, source = sources[d]
        stats = rng.sample(STATS, 4)
        views.append(
            FeatureView(
                name=f"{domain}_{subject}_{window}_{i:04d}",
                entities=[entities[ent]],
                ttl=dt.timedelta(days=30),
                schema=[
                    Field(
                        name=f"{subject}_{stat}",
                        dtype=Float64,
                        description=f"{stat} of the {ent}'s {subject} over {window}",
                    )
                    for stat in stats
                ],
                source=source,
                online=False,
                owner=f"{domain}-team-{i % 7}@bench.example",
                description=(
                    f"{subject.capitalize()} of each {ent} over the last {window}, "
                    f"kept by the {domain} team ({TIERS[i % 3]} tier)"
                ),
                tags={
                    "domain": domain,
                    "team": f"{domain}-team",
                    "refresh": WINDOWS[window],
                    "tier": TIERS[i % 3],
                },
            )
        )
    big_path = folder / f"{BIG_VIEW}.parquet"
    _big_frame(now).to_parquet(big_path, index=False)
    big = FeatureView(
        name=BIG_VIEW,
        entities=[entities["customer"]],
        ttl=dt.timedelta(days=30),
        schema=[
            Field(name="amount", dtype=Float64, description="Order amount in USD"),
            Field(name="clicks", dtype=Int64, description="Clicks in the session"),
            Field(name="dwell_s", dtype=Float32, description="Seconds on the page"),
            Field(name="country", dtype=String, description="Where the session came from"),
        ],
        source=FileSource(
            name=BIG_VIEW,
            path=str(big_path),
            timestamp_field="event_timestamp",
            description="One million clickstream sessions over 30 days",
            owner="web-data@bench.example",
        ),
        online=False,
        owner="web-data@bench.example",
        description="Sessions of each customer: amount, clicks, dwell time, country",
        tags={"domain": "web", "team": "web-data", "refresh": "hourly", "tier": "gold"},
    )
    return [*entities.values(), *(s for _e, s in sources), *views, big]


def register(settings) -> dict:
    """Write the bench project to the registry the service will open; what it took."""
    from hubml.extensions.features.store import Stores, data_dir

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = time.perf_counter()
    objects = definitions(data_dir(settings, "bench"), now)
    generated = time.perf_counter() - t0
    store = Stores(settings).get("bench")
    t0 = time.perf_counter()
    store.apply(objects)
    applied = time.perf_counter() - t0
    listed = len(store.list_feature_views())
    if listed != VIEWS + 1:
        raise RuntimeError(f"registered {listed} feature views, expected {VIEWS + 1}")
    return {"generate_s": generated, "apply_s": applied, "views": listed}


def breakdown(settings, reps: int = 3) -> dict:
    """Where a rebuild, a registry check, a search and a statistics answer spend their time, in
    this process on the same registry and files (medians of ``reps``): what the service does."""
    from hubml.extensions.features.catalog import Index, project_catalog
    from hubml.extensions.features.stats import StatsCache, compute
    from hubml.extensions.features.store import Stores

    store = Stores(settings).get("bench")
    f = settings.features
    out: dict[str, list[float]] = {}

    def timed(name, fn, *args, **kw):
        t0 = time.perf_counter()
        value = fn(*args, **kw)
        out.setdefault(name, []).append(time.perf_counter() - t0)
        return value

    for _ in range(reps):
        timed("registry_stamp_s", store.registry.get_project, "bench", allow_cache=False)
        timed("list_feature_views_s", store.list_feature_views)
        cat = timed("project_catalog_s", project_catalog, store, "bench")
        index = timed("index_build_s", Index, [cat])
        hits = timed("index_search_q_s", index.search, TERM)
        timed("index_search_all_s", index.search, "")
        timed("json_encode_s", json.dumps, {"total": hits[0], "results": hits[1]}, default=str)
        view = next(v for v in cat["feature_views"] if v["name"] == BIG_VIEW)
        timed("stats_key_s", StatsCache(settings).key, view)
        answer = timed(
            "stats_compute_s", compute, view, f.stats_max_rows, f.stats_max_seconds, f.sample_rows
        )
        timed("stats_json_encode_s", json.dumps, answer, default=str)
    return {k: statistics.median(v) for k, v in out.items()}


# -- timing through the hub --------------------------------------------------------------------


def _p95(values: list[float]) -> float:
    return sorted(values)[math.ceil(len(values) * 0.95) - 1]


def _ms(values: list[float]) -> dict:
    return {
        "median_ms": statistics.median(values) * 1000,
        "p95_ms": _p95(values) * 1000,
        "max_ms": max(values) * 1000,
        "n": len(values),
    }


def _ms_or_none(values: list[float]) -> dict | None:
    return _ms(values) if values else None


class Client:
    """alice, through the hub's proxy: the features service and, for the baseline, the hub."""

    def __init__(self, hub, user: str = "alice"):
        self.hub = hub
        self.base = hub.service_url("features")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {hub.user_token(user)}"
        self.hub_session = requests.Session()

    def get(self, path: str, **params) -> tuple[float, requests.Response]:
        t0 = time.perf_counter()
        r = self.session.get(self.base + path, params=params, timeout=120)
        took = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} {params}: {r.status_code} {r.text[:500]}")
        return took, r

    def post(self, path: str, body: dict) -> tuple[float, requests.Response]:
        t0 = time.perf_counter()
        r = self.session.post(self.base + path, json=body, timeout=120)
        return time.perf_counter() - t0, r

    def hub_api(self) -> float:
        t0 = time.perf_counter()
        r = self.hub_session.get(f"{self.hub.url}hub/api/", timeout=30)
        took = time.perf_counter() - t0
        r.raise_for_status()
        return took

    def wait_ready(self, timeout: float = 300) -> float:
        t0 = time.monotonic()
        while True:
            try:
                r = self.session.get(self.base + "api/projects", timeout=60)
                if r.ok and r.json()["ready"]:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the features service not ready in {timeout}s")
            time.sleep(0.3)


def after_check(client: Client) -> tuple[list[float], list[float]]:
    """The search that reads the registry's stamp (nothing changed): each after an idle pause
    just over ``CATALOG_CHECK_S``, so the check is due when it arrives; and, interleaved, the
    service's ``hubml/health`` after the same pause (what the idle pause alone costs a request:
    connections the proxy closed meanwhile, caches gone cold)."""
    search, health = [], []
    for _ in range(CHECKS):
        time.sleep(CATALOG_CHECK_S + 0.3)
        health.append(client.get("hubml/health")[0])
        time.sleep(CATALOG_CHECK_S + 0.3)
        search.append(client.get("api/search", q=TERM)[0])
    return search, health


def outside_view(store, n: int):
    """A small feature view of ``bench`` as someone else applies it, with Feast and not through
    the service; ``q=TERM`` finds it (its name and its feature have the term)."""
    from feast import FeatureView, Field
    from feast.types import Float64

    return FeatureView(
        name=f"outside_{TERM}_{n}",
        entities=[store.get_entity(ENTITIES[0][0])],
        ttl=dt.timedelta(days=30),
        schema=[
            Field(name=f"{TERM}_mean", dtype=Float64, description="mean, applied outside"),
        ],
        source=store.get_data_source(f"{DOMAINS[0]}_events"),
        online=False,
        owner="someone-else@bench.example",
        description=f"Applied with Feast directly, outside the service (change {n})",
        tags={"domain": DOMAINS[0], "team": "outside"},
    )


def outside_change(client: Client, store, n: int, project_too: bool) -> dict:
    """Apply one view to the registry from this process (``project_too``: with the project's
    description changed in the same apply); after a pause just over ``CATALOG_CHECK_S`` (the
    service's last check was before the change), searches for ``BURST_S``: the first does the
    check and, when it sees the change, starts the rebuild in the background; the rest are
    answered meanwhile. Then more searches until the new view is found (``VISIBLE_TIMEOUT_S``
    after the change at most)."""
    from feast.project import Project

    _took, r = client.get("api/search", q=TERM)
    before = r.json()["total"]
    view = outside_view(store, n)
    objects = [view]
    if project_too:
        objects.append(Project(name="bench", description=f"{VIEWS:,} generated views ({n})"))
    t0 = time.perf_counter()
    store.apply(objects)
    applied = time.perf_counter()
    time.sleep(CATALOG_CHECK_S + 0.3)
    burst, seen = [], None
    checked = time.perf_counter()
    while time.perf_counter() - checked < BURST_S:
        took, r = client.get("api/search", q=TERM)
        new = r.json()["total"] > before
        burst.append((took, new))
        if new and seen is None:
            seen = time.perf_counter()
    while seen is None and time.perf_counter() - applied < VISIBLE_TIMEOUT_S:
        time.sleep(0.05)
        _took, r = client.get("api/search", q=TERM)
        if r.json()["total"] > before:
            seen = time.perf_counter()
    _took, r = client.get("api/projects/bench")
    listed = view.name in {v["name"] for v in r.json()["feature_views"]}
    return {
        "what": "view and project" if project_too else "view",
        "apply_s": applied - t0,
        "burst": burst,
        "old_answers": sum(1 for _t, new in burst if not new),
        "found": seen is not None and listed,
        "after_change_s": (seen - applied) if seen else None,
        "after_check_s": (seen - checked) if seen else None,
    }


def writes(client: Client) -> dict:
    """``WRITES`` feature services of 2 existing features saved through the service, each under
    a new name: the request's time (it includes the rebuild) and whether its answer, and the
    writer's next read of the project, already hold the new service."""
    _took, r = client.get("api/projects/bench")
    view = next(v for v in r.json()["feature_views"] if v["name"] != BIG_VIEW)
    refs = [f"{view['name']}:{f['name']}" for f in view["features"][:2]]
    took, shown = [], []
    tag = int(time.time())
    for i in range(WRITES):
        name = f"bench_training_set_{tag}_{i}"
        body = {"name": name, "features": refs, "description": "saved by the benchmark"}
        t, r = client.post("api/projects/bench/feature-services", body)
        if r.status_code != 201:
            raise RuntimeError(f"POST feature-services {name}: {r.status_code} {r.text[:500]}")
        took.append(t)
        answer = r.json()
        _t, again = client.get("api/projects/bench")
        listed = name in {s["name"] for s in again.json()["feature_services"]}
        shown.append(
            answer.get("name") == name and sorted(answer.get("refs", [])) == sorted(refs) and listed
        )
    return {"took": took, "shown": shown}


def measure(hub, samples: int, big_path: Path, store) -> dict:
    client = Client(hub)
    out: dict = {"ready_after_hub_s": client.wait_ready()}

    for _ in range(3):  # connections and token caches, on both sides of the proxy
        client.hub_api()
        client.get("hubml/health")
    took, r = client.get("api/search", q=TERM)  # the first search builds the index
    out["search_first"] = took
    out["search_q_total"] = r.json()["total"]
    out["search_q_bytes"] = len(r.content)

    hub_api, health, search_q, search_all = [], [], [], []
    for _ in range(samples):
        hub_api.append(client.hub_api())
        health.append(client.get("hubml/health")[0])
        search_q.append(client.get("api/search", q=TERM)[0])
        took, r = client.get("api/search", limit="50")
        search_all.append(took)
    out["search_all_total"] = r.json()["total"]
    out["search_all_bytes"] = len(r.content)

    path = f"api/projects/bench/feature-views/{BIG_VIEW}/stats"
    took, r = client.get(path)
    stats = r.json()
    if stats.get("cached") or stats.get("rows_read") != BIG_ROWS or stats.get("partial"):
        raise RuntimeError(f"unexpected first statistics: {json.dumps(stats)[:500]}")
    out["stats_first"] = took
    out["stats_service_seconds"] = [stats["seconds"]]
    out["stats_bytes"] = len(r.content)
    cold, cached = [], []
    for _ in range(samples):
        st = os.stat(big_path)
        os.utime(big_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        took, r = client.get(path)
        if r.json()["cached"]:
            raise RuntimeError("statistics were cached after the source's mtime moved")
        cold.append(took)
        out["stats_service_seconds"].append(r.json()["seconds"])
        took, r = client.get(path)
        if not r.json()["cached"]:
            raise RuntimeError("the second statistics call was not cached")
        cached.append(took)

    checked, idle_health = after_check(client)
    changes = [outside_change(client, store, n, both) for n, both in enumerate(CHANGES)]
    written = writes(client)
    out.update(
        hub_api=_ms(hub_api),
        health=_ms(health),
        search_q=_ms(search_q),
        search_all=_ms(search_all),
        search_check=_ms(checked),
        health_idle=_ms(idle_health),
        # the bursts after the changes the service saw, so it rebuilt meanwhile (and the others)
        search_rebuild=_ms_or_none([t for c in changes if c["found"] for t, _n in c["burst"]]),
        search_unseen=_ms_or_none([t for c in changes if not c["found"] for t, _n in c["burst"]]),
        # of those, the answers before the new view appeared: while the rebuild ran
        search_during=_ms_or_none(
            [t for c in changes if c["found"] for t, new in c["burst"] if not new]
        ),
        changes=[{k: v for k, v in c.items() if k != "burst"} for c in changes],
        write=_ms(written["took"]),
        write_shown=written["shown"],
        stats_cold=_ms(cold),
        stats_cached=_ms(cached),
    )
    out["stats_service_seconds_median"] = statistics.median(out.pop("stats_service_seconds"))
    return out


# -- imports -----------------------------------------------------------------------------------

PROBE = (
    "import sys; {stmt}; "
    "print(','.join(m for m in ('feast', 'pandas', 'pyarrow') if m in sys.modules))"
)
# (what, the statement timed; `import hubml` comes before it, untimed)
IMPORTS = [
    ("hubml.widgets", "import hubml.widgets"),
    ("without_features", "import hubml_widgets_base"),
    ("FeatureBrowser", "from hubml.widgets import FeatureBrowser"),
]
TIMED = "import time, hubml; t0 = time.perf_counter(); {stmt}; print(time.perf_counter() - t0)"


def _inside(statement: str) -> float:
    """Seconds ``statement`` takes in a fresh interpreter, timed inside it."""
    done = subprocess.run(
        [sys.executable, "-c", TIMED.format(stmt=statement)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def imports(samples: int) -> dict:
    """`import hubml.widgets` against the same package without its features entries (written
    to a temporary folder), and what each import pulls in. Two measures, interleaved so
    machine noise hits all alike: the import's own time inside the interpreter (after
    `import hubml`, timed with ``perf_counter``: what the comparison is made on) and, as
    ``benchmarks.imports`` measures it, a fresh interpreter's wall time minus ``pass``'s."""
    from benchmarks.imports import _time

    with tempfile.TemporaryDirectory() as tmp:
        source = (ROOT / "widgets" / "__init__.py").read_text()
        kept = [line for line in source.splitlines() if "hubml.widgets.features" not in line]
        if len(kept) == len(source.splitlines()):
            raise RuntimeError("widgets/__init__.py has no hubml.widgets.features entries")
        (Path(tmp) / "hubml_widgets_base").mkdir()
        (Path(tmp) / "hubml_widgets_base" / "__init__.py").write_text("\n".join(kept) + "\n")
        env_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tmp, env_path) if p)
        try:
            inside: dict[str, list[float]] = {name: [] for name, _s in IMPORTS}
            wall: dict[str, list[float]] = {name: [] for name, _s in IMPORTS}
            empty = []
            for _ in range(samples):
                empty.append(_time("pass"))
                for name, stmt in IMPORTS:
                    inside[name].append(_inside(stmt))
                    wall[name].append(_time("import hubml; " + stmt))
            loaded = {}
            for name, stmt in IMPORTS:
                probe = subprocess.run(
                    [sys.executable, "-c", PROBE.format(stmt="import hubml; " + stmt)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                loaded[name] = [m for m in probe.stdout.strip().split(",") if m]
        finally:
            if env_path:
                os.environ["PYTHONPATH"] = env_path
            else:
                os.environ.pop("PYTHONPATH", None)
    base = statistics.median(empty)
    out = {"interpreter_s": base, "loaded": loaded}
    for name, _s in IMPORTS:
        out[name + "_s"] = statistics.median(inside[name])
        out[name + "_wall_s"] = max(0.0, statistics.median(wall[name]) - base)
    return out


# -- the run -----------------------------------------------------------------------------------

IMPORT_NOISE_S = 0.001  # medians of two identical imports, timed inside, differ by less


def checks(result: dict) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, passed) per target."""
    rows = []
    for key, what in [
        ("search_q", f"search q={TERM} (warm)"),
        ("search_all", "search everything, limit 50 (warm)"),
    ]:
        m = result[key]
        rows.append(
            (
                what,
                f"{m['median_ms']:.1f} ms median, {m['p95_ms']:.1f} ms p95",
                "<= 100 ms",
                m["p95_ms"] <= TARGETS_MS["search"],
            )
        )
    first = result["search_first"] * 1000
    rows.append(
        (
            "search, first after start (builds the index)",
            f"{first:.1f} ms",
            "<= 100 ms",
            first <= 100,
        )
    )
    m = result["search_check"]
    rows.append(
        (
            f"search, right after a {CATALOG_CHECK_S:.0f} s registry check ({m['n']}x)",
            f"{m['median_ms']:.1f} ms median, {m['max_ms']:.1f} ms max (health "
            f"{result['health_idle']['median_ms']:.1f} ms)",
            "<= 100 ms",
            m["max_ms"] <= TARGETS_MS["search"],
        )
    )
    m = result["search_rebuild"]
    rows.append(
        (
            f"search, while rebuilt after an outside change ({m['n'] if m else 0}x)",
            f"{m['median_ms']:.1f} ms median, {m['p95_ms']:.1f} ms p95, {m['max_ms']:.0f} max"
            if m
            else "no rebuild seen (no change found)",
            "<= 100 ms p95",
            bool(m) and m["p95_ms"] <= TARGETS_MS["search"],
        )
    )
    for what, label in [("view", "a new view"), ("view and project", "a new view + project")]:
        mine = [c for c in result["changes"] if c["what"] == what]
        if not mine:
            continue
        found = [c for c in mine if c["found"]]
        rows.append(
            (
                f"{label}, applied outside: found ({len(found)}/{len(mine)})",
                (
                    ", ".join(f"{c['after_change_s']:.2f}" for c in found)
                    + " s after ("
                    + ", ".join(f"{c['after_check_s']:.2f}" for c in found)
                    + " s after the check)"
                )
                if found
                else f"not found in {VISIBLE_TIMEOUT_S:.0f} s",
                f"found within {VISIBLE_TIMEOUT_S:.0f} s",
                len(found) == len(mine),
            )
        )
    m = result["write"]
    rows.append(
        (
            f"POST feature-services, the writer's own ({m['n']}x)",
            f"{m['median_ms']:.0f} ms median, {m['max_ms']:.0f} ms max; "
            f"in its answer {sum(result['write_shown'])}/{m['n']}",
            "none; its answer has it",
            all(result["write_shown"]),
        )
    )
    m = result["stats_cold"]
    rows.append(
        (
            f"stats of {BIG_ROWS:,} rows, cold",
            f"{m['median_ms']:.0f} ms median, {m['p95_ms']:.0f} ms p95",
            "<= 2000 ms",
            m["p95_ms"] <= TARGETS_MS["stats_cold"],
        )
    )
    first = result["stats_first"] * 1000
    rows.append(("stats, the service's first", f"{first:.0f} ms", "<= 2000 ms", first <= 2000))
    m = result["stats_cached"]
    rows.append(
        (
            "stats, cached",
            f"{m['median_ms']:.1f} ms median, {m['p95_ms']:.1f} ms p95",
            "<= 100 ms",
            m["p95_ms"] <= TARGETS_MS["stats_cached"],
        )
    )
    imp = result["imports"]
    delta = imp["hubml.widgets_s"] - imp["without_features_s"]
    rows.append(
        (
            "import hubml.widgets vs without the features entries",
            f"{imp['hubml.widgets_s'] * 1000:.2f} ms vs {imp['without_features_s'] * 1000:.2f} ms "
            f"({delta * 1000:+.2f} ms)",
            f"unchanged (within {IMPORT_NOISE_S * 1000:.0f} ms)",
            delta <= IMPORT_NOISE_S,
        )
    )
    for name, stmt, forbidden in [
        ("hubml.widgets", "import hubml.widgets", ("feast", "pandas", "pyarrow")),
        (
            "FeatureBrowser",
            "from hubml.widgets import FeatureBrowser",
            ("feast", "pandas", "pyarrow"),
        ),
    ]:
        loaded = imp["loaded"][name]
        rows.append(
            (
                f"{stmt}: loads",
                ", ".join(loaded) or "none of feast, pandas, pyarrow",
                "no " + ", ".join(forbidden),
                not set(loaded) & set(forbidden),
            )
        )
    return rows


def run(samples: int = 7) -> dict:
    from hubml.hub_config.settings import load_settings

    result: dict = {"samples": samples}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hubml-bench-features-") as tmp:
        data_dir = Path(tmp) / "hub"
        settings_file = Path(tmp) / "features.yaml"
        settings_file.write_text(yaml.safe_dump(SETTINGS))
        # the settings the service gets (the same file, the same data dir)
        settings = load_settings(settings_file, environ={"HUBML_DATA_DIR": str(data_dir)})
        result["register"] = register(settings)
        result["breakdown"] = breakdown(settings)
        from hubml.extensions.features.store import Stores
        from hubml.extensions.features.store import data_dir as project_dir

        big_path = project_dir(settings, "bench") / f"{BIG_VIEW}.parquet"
        store = Stores(settings).get("bench")  # for the changes made outside the service
        hub = start_hub(data_dir, SETTINGS)
        try:
            result.update(measure(hub, samples, big_path, store))
        finally:
            hub.stop()
    result["imports"] = imports(samples)
    result["run_s"] = time.monotonic() - started
    result["checks"] = [list(row) for row in checks(result)]
    result["passed"] = all(row[3] for row in result["checks"])
    return result


def report(result: dict) -> str:
    reg, b = result["register"], result["breakdown"]
    base, health = result["hub_api"], result["health"]
    lines = [
        f"feature catalog at scale ({reg['views']} feature views in project bench + rides; "
        f"median/p95 of {result['samples']}, through the hub's proxy as alice):",
        f"  registering: generating the views and Parquet {reg['generate_s']:.1f} s, "
        f"one store.apply {reg['apply_s']:.1f} s; service ready {result['ready_after_hub_s']:.1f} s "
        "after the hub answered",
        f"  baseline GET /hub/api/                      {base['median_ms']:.1f} ms median, "
        f"{base['p95_ms']:.1f} ms p95",
        f"  baseline GET services/features/hubml/health {health['median_ms']:.1f} ms median, "
        f"{health['p95_ms']:.1f} ms p95",
    ]
    sq, sa, imp = result["search_q"], result["search_all"], result["imports"]
    h = health["median_ms"]
    lines += [
        f"  search q={TERM}: {result['search_q_total']} hits, {result['search_q_bytes']} B; "
        f"{sq['median_ms'] / h:.2f}x health",
        f"  search everything: {result['search_all_total']} hits, first 50, "
        f"{result['search_all_bytes']} B; {sa['median_ms'] / h:.2f}x health",
        f"  stats: {result['stats_bytes']} B; the service's own compute {result['stats_service_seconds_median']:.3f} s "
        f"median; cached {result['stats_cached']['median_ms'] / h:.2f}x health",
        "  outside changes (applied with Feast from this process; then an idle "
        f"{CATALOG_CHECK_S + 0.3:.1f} s and {BURST_S:.1f} s of searches): "
        + "; ".join(
            f"{c['what']}: apply {c['apply_s']:.2f} s, {c['old_answers']} answers from the previous "
            "catalog, "
            + (f"found {c['after_check_s']:.2f} s after the check" if c["found"] else "not found")
            for c in result["changes"]
        )
        + (
            f"; of the bursts after the seen changes, the {result['search_during']['n']} answers "
            f"before the change showed: {result['search_during']['median_ms']:.1f} ms median, "
            f"{result['search_during']['p95_ms']:.1f} ms p95, "
            f"{result['search_during']['max_ms']:.0f} ms max"
            if result["search_during"]
            else ""
        )
        + (
            f"; searches after the unseen changes {result['search_unseen']['median_ms']:.1f} ms "
            f"median, {result['search_unseen']['p95_ms']:.1f} ms p95"
            if result["search_unseen"]
            else ""
        ),
        "  imports (timed inside a fresh interpreter, median; its wall time minus `pass`'s "
        f"{imp['interpreter_s'] * 1000:.0f} ms in brackets): hubml.widgets "
        f"{imp['hubml.widgets_s'] * 1000:.2f} ms ({imp['hubml.widgets_wall_s'] * 1000:.0f} ms), "
        f"without the features entries {imp['without_features_s'] * 1000:.2f} ms "
        f"({imp['without_features_wall_s'] * 1000:.0f} ms), FeatureBrowser "
        f"{imp['FeatureBrowser_s'] * 1000:.0f} ms ({imp['FeatureBrowser_wall_s'] * 1000:.0f} ms)",
        "  in this process on the same registry (median of 3): "
        + ", ".join(f"{k[:-2]} {v * 1000:.1f} ms" for k, v in b.items()),
        "",
        f"  {'what':58s} {'measured':52s} {'target':28s} result",
    ]
    for what, measured, target, passed in result["checks"]:
        lines.append(f"  {what:58s} {measured:52s} {target:28s} {'PASS' if passed else 'FAIL'}")
    lines.append(
        f"  {'all targets met' if result['passed'] else 'TARGETS MISSED'}; the benchmark took "
        f"{result['run_s']:.0f} s"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from tests.hubprocess import resolve_localhost

    parser = argparse.ArgumentParser(prog="python -m benchmarks.features")
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args(argv)
    resolve_localhost()
    result = run(samples=args.samples)
    print(report(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
