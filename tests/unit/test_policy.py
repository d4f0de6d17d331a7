from datetime import UTC, datetime, timedelta

from hubml.hub_config.policy import overdue_reason
from hubml.hub_config.settings import load_settings


def server(started_ago, active_ago, ready=True):
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    iso = lambda s: (now - timedelta(seconds=s)).isoformat().replace("+00:00", "Z")  # noqa: E731
    return now, {"ready": ready, "started": iso(started_ago), "last_activity": iso(active_ago)}


def test_overdue_rules():
    a100 = load_settings(None, environ={}).profile("gpu-a100")  # idle 30 min, max 8 h
    now, s = server(600, 60)
    assert overdue_reason(s, a100, now) is None
    now, s = server(600, 1800)
    assert overdue_reason(s, a100, now) == "idle 1800 s, past gpu-a100's idle timeout of 1800 s"
    now, s = server(8 * 3600 + 5, 10)
    assert overdue_reason(s, a100, now) == "ran 28805 s, past gpu-a100's maximum runtime of 28800 s"
    now, s = server(9 * 3600, 9 * 3600, ready=False)
    assert overdue_reason(s, a100, now) is None  # still starting: not ours to stop


def test_the_policy_service_stops_at_once_on_sigint_even_when_it_came_in_ignored(tmp_path):
    """The hub stops services with SIGINT and waits before it escalates: a hub started in the
    background hands SIGINT down ignored, which once made Ctrl+C of `make run` take ~30 s."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(
        os.environ,
        HUBML_DATA_DIR=str(tmp_path),
        JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api",  # nothing there: passes fail and retry
        JUPYTERHUB_API_TOKEN="x",
    )
    env.pop("HUBML_SETTINGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubml.hub_config.policy"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "enforcing idle and runtime limits" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        assert "stopping" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
