"""Cost and policy wording, shared by the spawn page and `hubml profiles`."""

import json

import pytest

from hubml.hub_config.catalog import (
    describe_policy,
    format_duration,
    format_estimate,
    format_table,
    format_usd,
    visible_profiles,
)
from hubml.hub_config.cli import main
from hubml.hub_config.settings import load_settings


def settings():
    return load_settings(None, environ={})


def test_estimate_matches_the_price_list():
    a100 = settings().profile("gpu-a100")
    assert format_estimate(a100, 8) == "8 h ≈ $29.36"
    assert format_usd(3.67) == "$3.67"
    assert format_usd(0.0971) == "$0.097"
    assert format_usd(1234.5) == "$1,234.50"


def test_no_estimate_exceeds_the_profiles_maximum_runtime():
    s = settings()
    h100, a100 = s.profile("gpu-h100"), s.profile("gpu-a100")
    assert h100.max_runtime == 4 * 3600
    assert format_estimate(h100, 24) == f"4 h (its limit) ≈ ${h100.price_per_hour * 4:,.2f}"
    assert format_estimate(h100, 2) == f"2 h ≈ ${h100.price_per_hour * 2:,.2f}"
    assert format_estimate(a100, 24) == "8 h (its limit) ≈ $29.36"
    for p in s.profiles:
        for hours in (1, 8, 24, 40):
            shown = float(format_estimate(p, hours).split()[0])
            assert shown <= (p.max_runtime / 3600 if p.max_runtime else hours)


def test_durations_read_like_a_person_writes_them():
    assert format_duration(1800) == "30 min"
    assert format_duration(8 * 3600) == "8 h"
    assert format_duration(26 * 3600 + 60) == "1 d 2 h 1 min"
    assert format_duration(0) == "no limit"
    assert (
        describe_policy(settings().profile("gpu-a100"))
        == "Stops after 30 min idle · at most 8 h per session"
    )


def test_group_restricted_profiles_are_hidden():
    profiles = settings().profiles
    assert [p.slug for p in visible_profiles(profiles, [])] == [
        "cpu-small",
        "cpu-large",
        "gpu-t4",
        "gpu-a10g",
    ]
    assert len(visible_profiles(profiles, ["gpu-users"])) == 6


def test_table_lists_every_profile_with_price():
    table = format_table(settings().profiles)
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["SLUG", "NAME", "CPU", "MEMORY", "GPU", "USD/H"]
    a100 = next(line for line in lines if line.startswith("gpu-a100"))
    assert "1 × A100" in a100 and "$3.67" in a100 and "$29.36" in a100 and "gpu-users" in a100


def test_hubml_profiles_command(capsys, monkeypatch):
    monkeypatch.delenv("HUBML_SETTINGS", raising=False)
    assert main(["profiles", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["slug"] for p in data][:2] == ["cpu-small", "cpu-large"]
    h100 = next(p for p in data if p["slug"] == "gpu-h100")
    assert h100["gpu"] == {"model": "H100", "count": 1}
    assert h100["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert main(["profiles"]) == 0
    assert "gpu-h100" in capsys.readouterr().out


def test_hubml_check_reports_bad_settings(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "s.yaml"
    bad.write_text("hub: {port: 0}\n")
    with pytest.raises(SystemExit) as info:
        main(["--settings", str(bad), "check"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"hubml: invalid settings: {bad}:1: hub.port: must be ≥ 1 (got 0)"
