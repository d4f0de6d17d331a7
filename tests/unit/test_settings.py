"""Settings: layering, validation, and the one-line errors a bad file produces."""

import textwrap

import pytest

from hubml.hub_config.settings import load_settings, parse_duration, parse_memory
from hubml.hub_config.yamlsource import SettingsError

PROFILE = """
  - slug: {slug}
    display_name: Thing
    cpu: {{guarantee: 1, limit: 2}}
    memory: {{guarantee: 1G, limit: 2G}}
    price_per_hour: 0.5
    image: img
"""


def write(tmp_path, text, name="settings.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(path, environ=None):
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message, "settings errors are one line"
    return message


def test_defaults_give_the_six_contract_profiles(tmp_path):
    s = load_settings(None, environ={}, cwd=tmp_path)
    assert [p.slug for p in s.profiles] == [
        "cpu-small",
        "cpu-large",
        "gpu-t4",
        "gpu-a10g",
        "gpu-a100",
        "gpu-h100",
    ]
    assert s.hub.port == 8000
    assert s.data_dir == tmp_path / ".hubml"
    a100 = s.profile("gpu-a100")
    assert (a100.gpu_model, a100.gpu_count, a100.price_per_hour) == ("A100", 1, 3.67)
    assert s.default_profile.slug == "cpu-small"
    assert all(p.price_per_hour > 0 for p in s.profiles)


def test_layers_file_over_defaults_and_environment_over_file(tmp_path):
    path = write(
        tmp_path,
        """
        hub: {port: 9001, log_level: DEBUG}
        auth:
          groups: {ml-team: [alice]}
    """,
    )
    s = load_settings(path, environ={"HUBML_PORT": "9100", "HUBML_DATA_DIR": str(tmp_path / "d")})
    assert s.hub.port == 9100  # env wins over the file
    assert s.hub.log_level == "DEBUG"  # file wins over defaults
    assert s.hub.ip == "127.0.0.1"  # untouched defaults stay
    assert s.data_dir == tmp_path / "d"
    assert set(s.auth.groups) == {"gpu-users", "ml-team"}  # mappings merge


def test_settings_file_from_environment(tmp_path):
    path = write(tmp_path, "hub: {port: 9002}\n")
    s = load_settings(None, environ={"HUBML_SETTINGS": str(path)})
    assert s.hub.port == 9002


def test_profiles_list_replaces_the_catalog(tmp_path):
    path = write(tmp_path, "profiles:" + PROFILE.format(slug="only-one"))
    s = load_settings(path, environ={})
    assert [p.slug for p in s.profiles] == ["only-one"]


def test_duplicate_slug(tmp_path):
    path = write(tmp_path, "profiles:" + PROFILE.format(slug="a") + PROFILE.format(slug="a"))
    msg = error_of(path)
    assert (
        msg
        == f"{path}:9: profiles[1].slug: duplicate slug 'a' (also profiles[0]); slugs must be unique"
    )


def test_negative_gpu_count(tmp_path):
    path = write(
        tmp_path, "profiles:" + PROFILE.format(slug="g") + "    gpu: {model: A100, count: -1}\n"
    )
    msg = error_of(path)
    assert msg == f"{path}:8: profiles[0].gpu.count: must be ≥ 0 (got -1)"


def test_missing_price(tmp_path):
    text = "profiles:" + PROFILE.format(slug="p").replace("    price_per_hour: 0.5\n", "")
    path = write(tmp_path, text)
    msg = error_of(path)
    assert msg == f"{path}:2: profiles[0].price_per_hour: is required but missing"


def test_unknown_group(tmp_path):
    path = write(
        tmp_path, "profiles:" + PROFILE.format(slug="p") + "    allowed_groups: [nobody-here]\n"
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:8: profiles[0].allowed_groups[0]: unknown group 'nobody-here'")
    assert "declare it under auth.groups (known: gpu-users)" in msg


def test_unknown_field_lists_allowed_ones(tmp_path):
    path = write(
        tmp_path,
        """
        hub:
          port: 8000
          prot: 9000
    """,
    )
    msg = error_of(path)
    assert msg.startswith(
        f"{path}:3: hub.prot: unknown field 'prot'; allowed: port, ip, public_url, data_dir"
    )


def test_unknown_field_in_a_profile(tmp_path):
    path = write(tmp_path, "profiles:" + PROFILE.format(slug="p") + "    gpus: 2\n")
    msg = error_of(path)
    assert msg.startswith(
        f"{path}:8: profiles[0].gpus: unknown field 'gpus'; allowed: slug, display_name"
    )


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(
        tmp_path,
        """
        hub:
          port: 8000
        auth: {groups: [unclosed
        gpus: {}
    """,
    )
    msg = error_of(path)
    assert msg.startswith(f"{path}:4: YAML syntax error")


def test_missing_settings_file(tmp_path):
    msg = error_of(tmp_path / "nope.yaml")
    assert msg == f"{tmp_path / 'nope.yaml'}: settings file not found"


def test_bad_port_from_environment(tmp_path):
    with pytest.raises(
        SettingsError, match="environment variable HUBML_PORT: must be a port number"
    ):
        load_settings(None, environ={"HUBML_PORT": "eighty"})


def test_short_password_from_environment_names_the_variable():
    with pytest.raises(SettingsError) as info:
        load_settings(None, environ={"HUBML_SHARED_PASSWORD": "short"})
    assert str(info.value) == (
        "environment variable HUBML_SHARED_PASSWORD: auth.shared_password: "
        "must be at least 8 characters (or empty to generate one)"
    )


def test_bad_slug_and_bad_memory(tmp_path):
    path = write(tmp_path, "profiles:" + PROFILE.format(slug="Bad_Slug"))
    assert "profiles[0].slug: must be lower-case letters" in error_of(path)
    path = write(
        tmp_path, "profiles:" + PROFILE.format(slug="ok").replace("limit: 2G", "limit: 2GB")
    )
    assert (
        "profiles[0].memory.limit: must be a size such as 512M, 8G or 1T (got '2GB')"
        in error_of(path)
    )


def test_unknown_spawner_lists_choices(tmp_path):
    path = write(tmp_path, "hub: {spawner: docker}\n")
    assert (
        error_of(path)
        == f"{path}:1: hub.spawner: must be one of 'local' or 'kubernetes' (got 'docker')"
    )


def test_declared_gpu_inventory_rejects_duplicate_index(tmp_path):
    path = write(
        tmp_path,
        """
        gpus:
          inventory:
            - {index: 0, model: A100}
            - {index: 0, model: A100}
    """,
    )
    assert error_of(path) == f"{path}:4: gpus.inventory[1].index: duplicate GPU index 0"


@pytest.mark.parametrize(
    "text,seconds",
    [(3600, 3600), ("90m", 5400), ("8h", 28800), ("1d", 86400), ("45s", 45), ("0", 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_memory_units():
    assert parse_memory("512M") == 512 * 1024**2
    assert parse_memory("16G") == 16 * 1024**3
    with pytest.raises(ValueError):
        parse_memory("16GiB")


def test_kubernetes_job_executor_settings(tmp_path):
    path = write(
        tmp_path,
        "jobs:\n  executor: kubernetes\nkubernetes:\n  proxy_url: http://proxy-public:8000/\n",
    )
    s = load_settings(path)
    assert s.jobs.executor == "kubernetes" and s.kubernetes.proxy_url == "http://proxy-public:8000"
    path = write(
        tmp_path, "jobs:\n  executor: kubernetes\nkubernetes:\n  proxy_url: proxy-public\n"
    )
    assert error_of(path).startswith(
        f"{path}:4: kubernetes.proxy_url: must be an http(s) URL such as http://proxy-public"
    )


def test_internal_ports_must_be_distinct_and_apart_from_the_public_port(tmp_path):
    path = write(tmp_path, "hub:\n  internal_ports: {hub_api: 9100, jobs: 9100}\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}:2: hub.internal_ports:"), msg
    assert "jobs and hub_api are both 9100: each needs a port of its own" in msg
    path = write(tmp_path, "hub:\n  port: 9200\n  internal_ports: {apps: 9200}\n")
    assert "internal_ports.apps is 9200, the hub's public port" in error_of(path)
    path = write(tmp_path, "hub:\n  internal_ports: {proxy_api: 70000}\n")
    assert "hub.internal_ports.proxy_api" in error_of(path)


def test_internal_ports_are_picked_once_per_data_dir_and_kept(tmp_path):
    import json

    from hubml.hub_config.topology import INTERNAL_PORTS, make_topology

    settings = load_settings(None, environ={"HUBML_DATA_DIR": str(tmp_path / "data")})
    first = make_topology(settings)
    assert sorted(first.ports) == sorted(INTERNAL_PORTS)
    assert len(set(first.ports.values())) == len(INTERNAL_PORTS)
    assert settings.hub.port not in first.ports.values()
    kept = json.loads((tmp_path / "data" / "ports.json").read_text())
    assert kept == first.ports
    # the next start of this data dir: the same addresses, so a restarted hub finds everything
    again = make_topology(settings)
    assert again.ports == first.ports and again.service_urls == first.service_urls
    assert again.service_urls["jobs"] == f"http://127.0.0.1:{first.ports['jobs']}"
    # a number in the settings wins; a garbled file is picked again, not fatal
    path = write(tmp_path, "hub:\n  internal_ports: {jobs: 9321}\n")
    pinned = load_settings(path, environ={"HUBML_DATA_DIR": str(tmp_path / "data")})
    assert make_topology(pinned).ports["jobs"] == 9321
    (tmp_path / "data" / "ports.json").write_text("{not json")
    assert sorted(make_topology(settings).ports) == sorted(INTERNAL_PORTS)
