"""The cost ledger's arithmetic, its store, its reports and its Prometheus text."""

from __future__ import annotations

import datetime as dt

import pytest

from hubml.extensions.common import migrate
from hubml.extensions.cost import ledger, report

T0 = dt.datetime(2026, 12, 3, 10, 0, 0)


@pytest.fixture
def engine(tmp_path):
    return ledger.open_ledger_at(f"sqlite:///{tmp_path / 'ledger.db'}")


def test_the_revisions_build_exactly_the_ledger_the_code_declares(engine):
    from tests.unit.test_migrations import differences

    assert differences(engine, ledger.metadata) == []
    assert migrate.revision(engine, "cost") == "cost_0002"


def opened(engine, kind, ref, user="alice", price=3.67, start=T0, groups=("gpu-users",)):
    return ledger.open_charge(
        engine,
        kind,
        ref,
        user=user,
        profile="gpu-a100",
        price_per_hour=price,
        started_at=start,
        groups=groups,
    )


def test_a_charge_is_price_times_running_time_and_never_counted_twice(engine):
    assert opened(engine, "server", "alice/@1")
    assert not opened(engine, "server", "alice/@1")  # re-read after a restart: the same charge
    assert ledger.close_charge(engine, "server", "alice/@1", T0 + dt.timedelta(minutes=30))
    assert not ledger.close_charge(engine, "server", "alice/@1", T0 + dt.timedelta(hours=5))
    assert ledger.spent(engine, "alice", T0 + dt.timedelta(hours=9)) == pytest.approx(3.67 / 2)
    # running: counted until now
    assert opened(engine, "job", "run1", price=0.0971, start=T0 + dt.timedelta(hours=1))
    assert ledger.spent(engine, "alice", T0 + dt.timedelta(hours=3)) == pytest.approx(
        3.67 / 2 + 0.0971 * 2
    )
    assert ledger.spent(engine, "bob", T0 + dt.timedelta(hours=3)) == 0
    with pytest.raises(ValueError, match="kind: one of server, app, job"):
        opened(engine, "gpu", "x")


def test_a_month_counts_only_its_own_part_of_what_ran_across_it(engine):
    start = dt.datetime(2026, 11, 30, 23, 0)
    opened(engine, "server", "alice/@nov", price=1.0, start=start)
    ledger.close_charge(engine, "server", "alice/@nov", dt.datetime(2026, 12, 1, 2, 0))
    dec = report.usage(engine, dt.datetime(2026, 12, 2), user="alice")
    nov = report.usage(engine, dt.datetime(2026, 12, 2), month="2026-11", user="alice")
    assert dec["spent_usd"] == pytest.approx(2.0) and nov["spent_usd"] == pytest.approx(1.0)
    assert dec["by_day"] == {"2026-12-01": {"app": 0.0, "job": 0.0, "server": 2.0}}
    with pytest.raises(ValueError, match="month: YYYY-MM"):
        report.usage(engine, T0, month="December")


def test_reports_by_kind_profile_group_and_what_runs_with_its_projected_month(engine):
    opened(engine, "server", "alice/@1", price=3.67)
    opened(engine, "app", "alice/app-demo@1", price=1.0, groups=())
    opened(engine, "job", "run1", user="bob", price=0.5, groups=("analysts",))
    ledger.close_charge(engine, "job", "run1", T0 + dt.timedelta(hours=2))
    now = T0 + dt.timedelta(hours=1)
    everyone = report.usage(engine, now)
    assert everyone["by_kind"] == {"app": 1.0, "job": 0.5, "server": 3.67}
    assert everyone["by_group"] == {"analysts": 0.5, "gpu-users": 3.67}
    assert [t["user"] for t in everyone["top_spenders"]] == ["alice", "bob"]
    [server, app] = report.usage(engine, now, user="alice")["running"]
    hours_left = (dt.datetime(2027, 1, 1) - now).total_seconds() / 3600
    assert server["projected_month_usd"] == pytest.approx(3.67 * (1 + hours_left), abs=0.01)
    csv = report.csv_text(everyone).splitlines()
    assert csv[0].startswith("user,kind,what,profile") and len(csv) == 4


def test_the_metrics_parse_as_prometheus_text(engine):
    from prometheus_client.parser import text_string_to_metric_families

    opened(engine, "server", 'al"ice/@1', user='al"ice')
    text = report.prometheus(engine, T0 + dt.timedelta(hours=2))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families["hubml_cost_usd"].samples
    assert sample.labels == {"user": 'al"ice', "kind": "server", "profile": "gpu-a100"}
    assert sample.value == pytest.approx(7.34)
    assert families["hubml_running"].samples[0].value == 1
    assert families["hubml_cost_group_usd"].samples[0].labels["group"] == "gpu-users"


def settings_with_budgets(users=None, groups=None):
    from hubml.hub_config.settings import load_settings

    s = load_settings(None, environ={})
    cost = s.cost.model_copy(
        update={
            "budgets": s.cost.budgets.model_copy(
                update={"users": users or {}, "groups": groups or {}}
            )
        }
    )
    auth = s.auth.model_copy(update={"admin_users": ["admin"]})
    return s.model_copy(update={"cost": cost, "auth": auth})


def test_a_start_is_refused_past_what_is_left_saying_spent_left_cost_and_who_can_raise_it(engine):
    from hubml.extensions.cost.budgets import check, projected_cost

    settings = settings_with_budgets(users={"alice": 5})
    now = T0 + dt.timedelta(hours=1)
    opened(engine, "server", "alice/@1", price=4.5)
    ledger.close_charge(engine, "server", "alice/@1", now)  # $4.50 spent
    a100 = settings.profile("gpu-a100")
    cost, what = projected_cost(a100, None, settings.cost.unlimited_hours)
    assert cost == pytest.approx(3.67 * 8)
    answer = check(engine, settings, "alice", [], cost, what, now)
    assert not answer["allowed"]
    assert answer["message"] == (
        "This would cost up to $29.36 (NVIDIA A100 40GB at $3.67/h for its 8 h limit), and your "
        "budget has $0.500 left of $5.00 this month ($4.50 spent). Choose a cheaper profile, or ask "
        "admin to raise the budget."
    )
    assert answer["warnings"] == ["Your budget is 90% spent: $0.500 left of $5.00 this month."]
    small = check(engine, settings, "alice", [], 0.3, "a small CPU", now)
    assert small["allowed"] and small["message"] == ""
    # nobody else is held to alice's budget; a group's budget holds all its members together
    assert check(engine, settings, "bob", [], cost, what, now)["allowed"]
    grouped = settings_with_budgets(groups={"gpu-users": 30})
    assert check(engine, grouped, "carol", ["gpu-users"], cost, what, now)["allowed"] is False
    assert check(engine, grouped, "carol", ["analysts"], cost, what, now)["allowed"]
