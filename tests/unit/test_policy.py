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
