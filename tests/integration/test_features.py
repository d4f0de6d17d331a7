"""The feature catalog against a real hub: the seeded project is searched and opened (schema,
freshness, statistics, sample rows), plain Feast in another process reads it as its user, a
project is invisible outside its readers' groups, proposals are checked and reviewed, and a
job's MLflow run that fetched features is listed with its registered model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "tracking": {"enabled": True},
    "jobs": {"enabled": True},
    "features": {
        "enabled": True,
        "projects": {
            "rides": {"readers": ["*"], "owners": ["feature-owners"]},
            "finance": {"readers": ["finance"], "owners": ["finance"]},
        },
    },
    "auth": {"groups": {"feature-owners": ["olga", "oscar"], "finance": ["fiona", "frank"]}},
}


class Features:
    def __init__(self, hub, user: str):
        self.base = hub.service_url("features")
        self.token = hub.user_token(user)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=60, **kw)

    def ok(self, path: str, **params) -> dict:
        r = self("GET", path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from tests.hubprocess import start_hub

    hub = start_hub(tmp_path_factory.mktemp("features"), SETTINGS)
    try:
        api = Features(hub, "alice")
        deadline = time.monotonic() + 90
        while not (r := api("GET", "api/projects")).ok or not r.json()["ready"]:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)
        JobsAPI(hub, hub.token).wait_up()
        yield hub
    finally:
        hub.stop()


def finance_view(hub) -> None:
    """The finance project gets a view of its own: fiona proposes, frank approves."""
    folder = hub.data_dir / "features" / "data" / "finance"
    folder.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    pd.DataFrame(
        {
            "account_id": [1, 2, 3],
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),
            "balance": [1200.5, 80.0, 15000.0],
        }
    ).to_parquet(folder / "balances.parquet")
    fiona, frank = Features(hub, "fiona"), Features(hub, "frank")
    r = fiona("POST", "api/projects/finance/proposals", json={"source": BALANCES})
    assert r.status_code == 201, r.text
    r = frank(
        "POST",
        f"api/proposals/{r.json()['id']}/review",
        json={"decision": "approve", "comment": "ok"},
    )
    assert r.status_code == 200 and r.json()["state"] == "applied", r.text


BALANCES = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64

account = Entity(name="account", join_keys=["account_id"], description="A customer account",
                 owner="fin@example.com")
balances = FileSource(name="balances", path="balances.parquet", timestamp_field="event_timestamp")
account_balance = FeatureView(
    name="account_balance", entities=[account], ttl=timedelta(days=1), source=balances,
    schema=[Field(name="balance", dtype=Float64, description="End-of-hour balance in USD")],
    owner="fin@example.com", description="Balances of customer accounts", tags={"pii": "yes"},
)
"""


def test_search_narrows_and_a_view_shows_schema_freshness_statistics_and_samples(hub):
    api = Features(hub, "alice")
    everything = api.ok("api/search")
    assert {r["name"] for r in everything["results"]} == {
        "driver_hourly_stats",
        "driver_quality",
        "rider_profile",
    }
    assert {r["name"] for r in api.ok("api/search", q="rating")["results"]} == {
        "driver_quality",
        "rider_profile",
    }
    assert [r["name"] for r in api.ok("api/search", entity="rider")["results"]] == ["rider_profile"]
    assert [r["name"] for r in api.ok("api/search", tag="refresh=daily")["results"]] == [
        "driver_quality"
    ]
    assert api.ok("api/search", owner="rider-growth")["total"] == 1
    assert api.ok("api/search", q="no such thing anywhere")["total"] == 0

    view = api.ok("api/projects/rides/feature-views/driver_hourly_stats")
    assert [(f["name"], f["dtype"]) for f in view["features"]] == [
        ("conv_rate", "Float32"),
        ("acc_rate", "Float32"),
        ("avg_daily_trips", "Int64"),
    ]
    assert all(f["description"] for f in view["features"])
    assert view["owner"] == "driver-ops@rides.example" and view["ttl_s"] == 86400
    assert view["freshness"]["state"] == "fresh" and view["feature_services"] == ["driver_ranking"]
    stale = api.ok("api/projects/rides/feature-views/driver_quality")["freshness"]
    assert stale["state"] == "stale" and stale["age_s"] > stale["ttl_s"]

    stats = api.ok("api/projects/rides/feature-views/driver_hourly_stats/stats")
    assert stats["rows_total"] == stats["rows_read"] == 50 * 14 * 24 and not stats["cached"]
    acc = stats["features"]["acc_rate"]
    assert (
        acc["nulls"] == stats["rows_total"] // 50 and 0 < acc["min"] < acc["mean"] < acc["max"] <= 1
    )
    assert sum(acc["histogram"]["counts"]) == acc["count"] - acc["nulls"]
    rows = stats["sample"]["rows"]
    assert len(rows) == 10 and {"driver_id", "event_timestamp", "conv_rate"} <= set(rows[0])
    assert rows[0]["event_timestamp"] >= rows[-1]["event_timestamp"]  # newest first
    again = api.ok("api/projects/rides/feature-views/driver_hourly_stats/stats")
    assert again["cached"] and again["features"] == stats["features"]
    payment = api.ok("api/projects/rides/feature-views/rider_profile/stats")["features"]
    assert {t["value"] for t in payment["preferred_payment"]["top"]} == {"card", "cash", "wallet"}

    r = api("GET", "api/projects/rides/feature-views/nope")
    assert r.status_code == 404 and "driver_hourly_stats" in r.json()["message"]
    r = api("GET", "api/search", params={"limit": "0"})
    assert r.status_code == 400 and r.json()["message"].startswith("limit:")


def plain_feast(hub, user: str, code: str) -> subprocess.CompletedProcess:
    """``code`` in another process, as a kernel of ``user``'s runs it: their token, the URL."""
    env = {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": hub.user_token(user),
        "HUBML_FEATURES_URL": hub.service_url("features").rstrip("/"),
        "XDG_CACHE_HOME": str(hub.data_dir / f"cache-{user}"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    prelude = "from tests.hubprocess import resolve_localhost; resolve_localhost()\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=180
    )


def test_plain_feast_in_a_kernel_reads_the_project_as_its_user_and_cannot_write(hub):
    done = plain_feast(
        hub,
        "alice",
        """
import pandas as pd
from hubml.widgets import feature_store
store = feature_store("rides")
print(sorted(v.name for v in store.list_feature_views()))
rows = pd.DataFrame({"driver_id": [1001, 1002], "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h")})
df = store.get_historical_features(entity_df=rows, features=store.get_feature_service("driver_ranking")).to_df()
print(sorted(df.columns), len(df), int(df["avg_daily_trips"].notna().sum()))
try:
    store.apply([])
except PermissionError as e:
    print("refused:", e)
""",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "['driver_hourly_stats', 'driver_quality', 'rider_profile']"
    assert out[1] == (
        "['acc_rate', 'avg_daily_trips', 'avg_rating', 'cancel_rate', 'conv_rate', 'driver_id', "
        "'event_timestamp'] 2 2"
    )
    assert out[2].startswith("refused: the platform's feature registry is changed by review")


def test_outside_a_projects_groups_neither_its_catalog_nor_its_data_is_visible(hub):
    finance_view(hub)
    fiona, bob = Features(hub, "fiona"), Features(hub, "bob")
    assert {p["name"] for p in fiona.ok("api/projects")["projects"]} == {"rides", "finance"}
    assert [r["name"] for r in fiona.ok("api/search", q="balance")["results"]] == [
        "account_balance"
    ]
    assert [p["name"] for p in bob.ok("api/projects")["projects"]] == ["rides"]
    assert bob.ok("api/search", q="balance")["total"] == 0
    for path in [
        "api/projects/finance",
        "api/projects/finance/feature-views/account_balance",
        "api/projects/finance/feature-views/account_balance/stats",
        "api/projects/finance/feature-views/account_balance/lineage",
        "api/projects/finance/registry",
        "api/projects/finance/audit",
    ]:
        r = bob("GET", path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["message"] == "no feature project 'finance' that you may read; yours: rides"
    r = bob("GET", "api/search", params={"project": "finance"})
    assert r.status_code == 404
    assert bob.ok("api/proposals")["proposals"] == []
    [proposal] = fiona.ok("api/proposals", project="finance")["proposals"]
    assert bob("GET", f"api/proposals/{proposal['id']}").status_code == 404
    r = bob(
        "POST",
        "api/projects/finance/historical",
        params={"feature": "account_balance:balance"},
        data=b"",
    )
    assert r.status_code == 404
    # plain Feast as bob: the same refusal; as fiona: the rows
    done = plain_feast(
        hub,
        "bob",
        "from hubml.widgets import feature_store\n"
        "try:\n    feature_store('finance').list_feature_views()\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n",
    )
    assert "no feature project 'finance' that you may read" in done.stdout, done.stderr
    # the widget shows bob only what he may read
    from hubml.widgets.features import FeatureBrowser, FeaturesClient

    browser = FeatureBrowser(
        project="finance", client=FeaturesClient(hub.service_url("features"), bob.token)
    )
    assert [label for label, _ in browser.project.options] == ["all", "rides"]
    assert "You may read no project &#x27;finance&#x27;; yours: rides" in browser.status.value
    browser.q.value = "balance"
    assert browser.results.options == ()
    mine = FeatureBrowser(client=FeaturesClient(hub.service_url("features"), fiona.token))
    mine.q.value = "balance"
    assert [v for _, v in mine.results.options] == [("finance", "account_balance")]


GOOD = """
from datetime import timedelta
from feast import FeatureView, Field, FileSource
from feast.types import Float32

surge = FileSource(name="driver_surge", path="driver_surge.parquet", timestamp_field="event_timestamp")
driver_surge = FeatureView(
    name="driver_surge",
    entities=["driver"],
    ttl=timedelta(hours=6),
    source=surge,
    schema=[Field(name="surge_multiplier", dtype=Float32, description="Mean surge multiplier the driver drove at in the hour")],
    owner="alice@rides.example",
    description="How much surge pricing each driver drives in",
    tags={"team": "pricing"},
)
"""

DUPLICATE = """
from datetime import timedelta
from feast import FeatureView, Field, FileSource
from feast.types import Float32, Int64

hourly = FileSource(name="driver_hourly_copy", path="driver_hourly.parquet", timestamp_field="event_timestamp")
driver_activity = FeatureView(
    name="driver_activity", entities=["driver"], ttl=timedelta(days=1), source=hourly,
    schema=[
        Field(name="conv_rate", dtype=Float32, description="conversion"),
        Field(name="acc_rate", dtype=Float32, description="acceptance"),
        Field(name="avg_daily_trips", dtype=Int64, description="trips"),
    ],
    owner="alice@rides.example", description="Driver activity", tags={"team": "pricing"},
)
"""

INCOMPLETE = """
from feast import FeatureView, Field, FileSource
from feast.types import Float32

src = FileSource(name="driver_surge_raw", path="driver_surge.parquet", timestamp_field="event_timestamp")
driver_surge_raw = FeatureView(
    name="driver_surge_raw", entities=["driver"], source=src,
    schema=[Field(name="surge_multiplier", dtype=Float32)],
)
"""


def test_proposals_are_checked_reviewed_by_an_owner_and_then_fetchable(hub):
    import pandas as pd

    folder = hub.data_dir / "features" / "data" / "rides"
    pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),
            "surge_multiplier": pd.Series([1.2, 1.9], dtype="float32"),
        }
    ).to_parquet(folder / "driver_surge.parquet")
    alice, olga, oscar = Features(hub, "alice"), Features(hub, "olga"), Features(hub, "oscar")

    # a duplicate of what exists is answered with what exists, and how to reuse it
    r = alice("POST", "api/projects/rides/proposals", json={"source": DUPLICATE})
    assert r.status_code == 422, r.text
    duplicates = r.json()["review"]["duplicates"]
    assert any(d["existing"] == "driver_hourly_stats" for d in duplicates), duplicates
    assert "driver_hourly_stats" in r.json()["message"]
    # an incomplete one lists what is missing
    r = alice("POST", "api/projects/rides/proposals", json={"source": INCOMPLETE})
    assert r.status_code == 422, r.text
    missing = " ".join(m["message"] for m in r.json()["review"]["missing"])
    for word in ("owner", "description", "ttl", "tag"):
        assert word in missing, missing
    # code is read, never run; sources stay in the project's own data folder
    r = alice("POST", "api/projects/rides/proposals", json={"source": "import os\nos.system('id')"})
    assert r.status_code == 400 and "cannot be read" in r.json()["message"], r.text
    escape = GOOD.replace('path="driver_surge.parquet"', 'path="../finance/balances.parquet"')
    r = alice("POST", "api/projects/rides/proposals", json={"source": escape})
    assert r.status_code == 400 and "outside the project's data folder" in r.json()["message"]

    # a good one waits for an owner
    r = alice("POST", "api/projects/rides/proposals", json={"source": GOOD})
    assert r.status_code == 201, r.text
    proposal = r.json()
    assert proposal["state"] == "pending" and proposal["proposed_by"] == "alice"
    assert "driver_surge" not in {
        v["name"] for v in alice.ok("api/projects/rides")["feature_views"]
    }
    [listed] = olga.ok("api/proposals", project="rides", state="pending")["proposals"]
    assert listed["id"] == proposal["id"] and listed["you_may_review"]
    review = f"api/proposals/{proposal['id']}/review"
    # not an owner: refused, and nothing changes
    r = alice("POST", review, json={"decision": "approve"})
    assert r.status_code == 403 and "feature-owners" in r.json()["message"], r.text
    r = Features(hub, "fiona")("POST", review, json={"decision": "approve"})
    assert r.status_code == 403  # an owner of another project is not one of this one
    r = olga("POST", review, json={"decision": "reject"})
    assert r.status_code == 400 and r.json()["message"].startswith("comment:")
    r = olga("POST", review, json={"decision": "maybe"})
    assert r.status_code == 400
    r = olga("POST", review, json={"decision": "approve", "comment": "useful for pricing"})
    assert r.status_code == 200 and r.json()["state"] == "applied", r.text
    r = oscar("POST", review, json={"decision": "reject", "comment": "late"})
    assert r.status_code == 409  # decided once

    view = alice.ok("api/projects/rides/feature-views/driver_surge")
    assert view["owner"] == "alice@rides.example" and view["ttl_s"] == 6 * 3600
    done = plain_feast(
        hub,
        "alice",
        "import pandas as pd\nfrom hubml.widgets import feature_store\n"
        "rows = pd.DataFrame({'driver_id': [1002], 'event_timestamp': pd.Timestamp.now(tz='UTC')})\n"
        "df = feature_store('rides').get_historical_features(entity_df=rows, "
        "features=['driver_surge:surge_multiplier']).to_df()\n"
        "print(round(float(df['surge_multiplier'][0]), 2))\n",
    )
    assert done.stdout.strip() == "1.9", done.stderr
    actions = [(a["actor"], a["action"]) for a in alice.ok("api/projects/rides/audit")["audit"]]
    assert actions[:3] == [("olga", "applied"), ("olga", "approved"), ("alice", "proposed")]


def test_a_training_set_is_saved_as_a_feature_service(hub):
    alice = Features(hub, "alice")
    refs = ["driver_hourly_stats:conv_rate", "rider_profile:lifetime_trips"]
    r = alice(
        "POST", "api/projects/rides/feature-services", json={"name": "eta_v1", "features": refs}
    )
    assert r.status_code == 201, r.text
    assert sorted(r.json()["refs"]) == sorted(refs) and r.json()["owner"] == "alice"
    r = alice(
        "POST", "api/projects/rides/feature-services", json={"name": "eta_v1", "features": refs}
    )
    assert r.status_code == 409
    r = alice(
        "POST", "api/projects/rides/feature-services", json={"name": "x", "features": ["nope:x"]}
    )
    assert r.status_code == 400 and "no feature nope:x" in r.json()["message"]


TRAIN = """
import mlflow, pandas as pd
from sklearn.linear_model import LinearRegression
from hubml.widgets import feature_store

store = feature_store("rides")
rows = pd.DataFrame({"driver_id": list(range(1001, 1011)), "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h")})
mlflow.set_experiment("driver-ranking")
with mlflow.start_run(run_name="ranker") as run:
    df = store.get_historical_features(entity_df=rows, features=store.get_feature_service("driver_ranking")).to_df()
    X = df[["conv_rate", "avg_rating"]].fillna(0)
    model = LinearRegression().fit(X, df["avg_daily_trips"])
    mlflow.sklearn.log_model(model, name="model", registered_model_name="driver-ranker", input_example=X.head(2))
print(run.info.run_id)
"""


def test_a_job_that_fetches_features_in_an_mlflow_run_is_listed_in_the_lineage(hub):
    alice = hub.user_token("alice")
    jobs = JobsAPI(hub, alice)
    job = jobs.create(
        notebook="ranker.ipynb", content=notebook(TRAIN), profile="cpu-small", name="ranker"
    )
    [run] = jobs.wait_runs(job["id"], timeout=240)
    assert run["status"] == "succeeded", (run, jobs("GET", f"runs/{run['id']}/log").text[-3000:])
    mlflow_run = run["mlflow_run_id"]
    r = requests.get(
        hub.service_url("mlflow") + "api/2.0/mlflow/runs/get",
        params={"run_id": mlflow_run},
        headers={"Authorization": f"token {alice}"},
        timeout=30,
    )
    tags = {t["key"]: t["value"] for t in r.json()["run"]["data"]["tags"]}
    assert tags["hubml.features.views"] == ",rides:driver_hourly_stats,rides:driver_quality,"
    assert tags["hubml.features.service"] == "driver_ranking"
    assert "driver_quality:avg_rating" in tags["hubml.features.refs"].split(",")

    lineage = Features(hub, "alice").ok("api/projects/rides/feature-views/driver_quality/lineage")
    assert lineage["mlflow"] == "ok", lineage
    assert lineage["source"]["name"] == "driver_quality"
    assert lineage["feature_services"] == ["driver_ranking"]
    [used] = [r for r in lineage["runs"] if r["run_id"] == mlflow_run]
    assert used["feature_service"] == "driver_ranking" and used["user"] == "alice"
    assert [(m["name"], m["run_id"]) for m in lineage["models"]] == [("driver-ranker", mlflow_run)]
    # a view the run did not use does not list it
    other = Features(hub, "alice").ok("api/projects/rides/feature-views/rider_profile/lineage")
    assert other["runs"] == [] and other["models"] == []


def test_the_browser_proposes_and_an_owner_reviews_in_it(hub):
    import pandas as pd

    from hubml.widgets.features import FeatureBrowser, FeaturesClient

    pd.DataFrame(
        {
            "driver_id": [1001],
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),
            "tips_usd": pd.Series([3.5], dtype="float32"),
        }
    ).to_parquet(hub.data_dir / "features" / "data" / "rides" / "driver_tips.parquet")
    url = hub.service_url("features")
    mine = FeatureBrowser(project="rides", client=FeaturesClient(url, Features(hub, "alice").token))
    mine.proposal.value = DUPLICATE
    assert mine.propose()["state"] == "refused"
    assert "Already exists" in mine.proposal_answer.value
    assert "driver_hourly_stats" in mine.proposal_answer.value
    mine.proposal.value = (
        GOOD.replace("driver_surge", "driver_tips")
        .replace("surge_multiplier", "tips_usd")
        .replace("Mean surge multiplier the driver drove at in the hour", "Tips per trip in USD")
    )
    assert mine.propose()["state"] == "pending"
    assert "waits for an owner of rides" in mine.proposal_answer.value
    assert mine.reviews.children == ()  # not hers to review

    owner = FeatureBrowser(client=FeaturesClient(url, Features(hub, "oscar").token))
    [_title, row] = owner.reviews.children
    assert "driver_tips" in row.children[0].value and "alice" in row.children[0].value
    comment, approve, reject = row.children[1].children
    reject.click()  # no comment: refused, saying why
    assert "comment" in row.children[2].value
    comment.value = "tips help ETA too"
    approve.click()
    assert "applied" in row.children[2].value and approve.disabled
    owner.q.value = "tips"
    assert [v for _, v in owner.results.options] == [("rides", "driver_tips")]


def test_the_home_page_lists_the_proposals_waiting_for_each_reviewer(hub):
    import pandas as pd

    pd.DataFrame(
        {
            "driver_id": [1001],
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),
            "fuel_l": pd.Series([4.5], dtype="float32"),
        }
    ).to_parquet(hub.data_dir / "features" / "data" / "rides" / "driver_fuel.parquet")
    alice = Features(hub, "alice")
    source = (
        GOOD.replace("driver_surge", "driver_fuel")
        .replace("surge_multiplier", "fuel_l")
        .replace(
            "Mean surge multiplier the driver drove at in the hour", "Fuel in the hour, litres"
        )
        .replace("How much surge pricing each driver drives in", "Hourly fuel use of each driver")
    )
    r = alice("POST", "api/projects/rides/proposals", json={"source": source})
    assert r.status_code == 201, r.text

    def home(user):
        r = requests.get(
            hub.service_url("home") + "api/home",
            headers={"Authorization": f"token {hub.user_token(user)}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()["proposals"]

    [waiting] = home("olga")["to_review"]
    assert waiting["id"] == r.json()["id"] and waiting["proposed_by"] == "alice"
    assert [p["id"] for p in home("alice")["mine"]] == [r.json()["id"]]
    assert home("alice")["to_review"] == []
    assert home("fiona") == {"to_review": [], "mine": []}
    page = requests.get(
        hub.service_url("home"),
        headers={"Authorization": f"token {hub.user_token('oscar')}"},
        timeout=60,
    ).text
    assert "driver_fuel" in page and "Feature proposals" in page


def test_an_owner_materializes_and_the_stale_view_is_fresh_again(hub):
    alice, olga = Features(hub, "alice"), Features(hub, "olga")
    assert (
        alice.ok("api/projects/rides/feature-views/driver_quality")["freshness"]["state"] == "stale"
    )
    r = alice("POST", "api/projects/rides/materialize")
    assert r.status_code == 403 and r.json()["message"] == "only the owners of rides materialize it"
    r = olga("POST", "api/projects/rides/materialize")
    assert r.status_code == 200, r.text
    assert "driver_quality" in r.json()["materialized"]
    assert r.json()["freshness"]["driver_quality"]["state"] == "fresh"
    assert alice.ok("api/search", q="quality")["results"][0]["freshness"] == "fresh"
    [last] = alice.ok("api/projects/rides/audit")["audit"][:1]
    assert (last["actor"], last["action"]) == ("olga", "materialized")


def test_a_view_applied_outside_the_service_shows_within_seconds(hub):
    """A data engineer's own `feast apply` on the platform's registry (as the pipelines that
    write the sources would): the service notices the registry moved and lists it."""
    from types import SimpleNamespace

    from feast import FeatureView, Field, FileSource
    from feast.types import Float32

    from hubml.extensions.features.store import Stores
    from hubml.hub_config.schema import FeaturesSection

    settings = SimpleNamespace(data_dir=hub.data_dir, features=FeaturesSection())
    store = Stores(settings).get("rides")
    folder = hub.data_dir / "features" / "data" / "rides"
    store.apply(
        [
            FeatureView(
                name="driver_idle_time",
                entities=[store.get_entity("driver")],
                schema=[Field(name="idle_min", dtype=Float32, description="Idle minutes")],
                source=FileSource(
                    name="driver_idle",
                    path=str(folder / "driver_fuel.parquet"),
                    timestamp_field="event_timestamp",
                ),
                owner="data-eng@rides.example",
                description="Idle minutes of each driver per hour",
            )
        ]
    )
    alice = Features(hub, "alice")
    deadline = time.monotonic() + 20
    while not alice.ok("api/search", q="idle")["total"]:
        assert time.monotonic() < deadline, "the view applied outside never showed"
        time.sleep(0.3)
    assert alice.ok("api/search", q="idle")["results"][0]["name"] == "driver_idle_time"
