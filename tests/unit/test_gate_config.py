"""Where the registry's gates run a candidate, as configuration: the settings' limits, the
runner service for the mlflow service when the hub is root, and what the service side makes of
the runner service's answers. Built from ``Config()`` and plain values, without a hub."""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml
from traitlets.config import Config

from hubml.extensions.tracking.gatesandbox import (
    GATE_RUNNER_ENV,
    GateSandbox,
    check_limits,
)
from hubml.extensions.tracking.gateverdict import ChildRun, verdict
from hubml.extensions.tracking.gatewatch import RunnerChild
from hubml.hub_config.configurer import apply_settings
from hubml.hub_config.settings import SettingsError, load_settings

ROOT = os.geteuid() == 0


def settings_with(tmp_path, data: dict):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(path, environ={"HUBML_DATA_DIR": str(tmp_path / "data")})


def services_of(settings) -> dict:
    c = Config()
    apply_settings(c, settings)
    return {s["name"]: s for s in c.JupyterHub.services}


def test_gate_limits_default_and_come_from_the_settings(tmp_path):
    defaults = settings_with(tmp_path, {})
    assert (defaults.tracking.gate_timeout_s, defaults.tracking.gate_memory_mb) == (120, 4096)
    s = settings_with(tmp_path, {"tracking": {"gate_timeout_s": 20, "gate_memory_mb": 1024}})
    sandbox = GateSandbox.from_settings(s, environ={GATE_RUNNER_ENV: "/run/x.sock"})
    assert sandbox == GateSandbox(
        timeout_s=20, memory_mb=1024, runner_socket="/run/x.sock", unix_user_prefix="hubml-"
    )
    assert GateSandbox.from_settings(s, environ={}).runner_socket is None


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("gate_timeout_s", 0, "tracking.gate_timeout_s: must be > 0"),
        ("gate_timeout_s", 7200, "tracking.gate_timeout_s: must be ≤ 3600"),
        ("gate_memory_mb", 100, "tracking.gate_memory_mb: must be ≥ 256"),
        ("gate_memory_mb", "lots", "tracking.gate_memory_mb: input should be a valid integer"),
    ],
)
def test_bad_gate_limits_name_the_file_and_key(tmp_path, key, value, says):
    with pytest.raises(SettingsError) as e:
        settings_with(tmp_path, {"tracking": {key: value}})
    assert str(e.value).startswith(f"{tmp_path / 's.yaml'}:2: ") and says in str(e.value)


def test_as_root_the_mlflow_service_runs_gates_through_the_runner_service(tmp_path):
    s = settings_with(tmp_path, {"jobs": {"enabled": False}, "apps": {"enabled": False}})
    services = services_of(s)
    env = services["mlflow"]["environment"]
    if ROOT:
        # the runner service starts for the gates alone, and the mlflow service knows its socket
        assert "hubml-runners" in services and "user" not in services["hubml-runners"]
        assert env[GATE_RUNNER_ENV] == str(s.data_dir / "run" / "runners.sock")
    else:  # one trust domain: gates run in a child of the mlflow service
        assert "hubml-runners" not in services
        assert GATE_RUNNER_ENV not in env
    shared = settings_with(tmp_path, {"hub": {"isolation": "shared"}, "jobs": {"enabled": False}})
    assert GATE_RUNNER_ENV not in services_of(shared)["mlflow"]["environment"]
    assert "hubml-runners" not in services_of(shared)


def test_the_limits_are_checked_where_they_are_used():
    check_limits(20, 120, 4096)
    for args in [(-1, 1, 4096), (True, 1, 4096), (1, 0, 4096), (1, float("inf"), 4096), (1, 1, 10)]:
        with pytest.raises(ValueError):
            check_limits(*args)
    with pytest.raises(ValueError):
        GateSandbox(memory_mb=10)


def answered(*messages) -> RunnerChild:
    """A runner child that got ``messages`` from the runner service, which then hung up."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for m in messages:
        theirs.send(json.dumps(m).encode())
    theirs.close()
    child = RunnerChild(ours)
    while child.on_control():
        pass
    return child


def run_of(child: RunnerChild, **kw) -> ChildRun:
    return ChildRun(
        [],
        kw.pop("stderr", b""),
        child.returncode,
        child.timed_out,
        False,
        1.0,
        refused=child.refused,
    )


def test_what_the_runner_service_answers_becomes_a_reason():
    refused = answered({"error": "not a hub user name: '../root'"})
    probe = verdict(run_of(refused), 3, 20, 1024, 90)
    assert (
        probe.reason == "the runner service refused the gate probe: not a hub user name: '../root'"
    )
    timed_out = answered({"started": 7}, {"exit": -9, "timed_out": True})
    assert (
        verdict(run_of(timed_out), 3, 20, 1024, 90).reason == "the model did not load within 20 s"
    )
    segfault = answered({"started": 7}, {"exit": -11, "timed_out": False})
    assert verdict(run_of(segfault), 3, 20, 1024, 90).reason == (
        "the model crashed while starting (signal SIGSEGV)"
    )
    oom = answered({"started": 7}, {"exit": 0, "timed_out": False})
    assert verdict(run_of(oom, stderr=b"MemoryError\n"), 3, 20, 1024, 90).reason == (
        "the model ran out of memory (cap 1024 MiB)"
    )
    lost = answered({"started": 7})
    assert verdict(run_of(lost), 3, 20, 1024, 90).reason == (
        "the gate's sandbox (the runner service) stopped before the model finished; publish again"
    )
