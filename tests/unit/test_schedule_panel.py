"""The schedule panel's logic with a stand-in for the jobs service (the real one: browser tier)."""

from __future__ import annotations

import time

import pytest

from hubml.widgets.jobs import JobsAPIError, SchedulePanel, history_html

NOTEBOOK = '{"cells": [], "nbformat": 4, "nbformat_minor": 5}'


class FakeJobs:
    def __init__(self, refuse: str | None = None):
        self.calls = []
        self.refuse = refuse
        self.runs = []
        self.jobs = []

    def request(self, method, path, body=None, params=None):
        self.calls.append((method, path, body, params))
        if path == "profiles":
            return {
                "profiles": [
                    {
                        "slug": "cpu-small",
                        "display_name": "Small CPU",
                        "price_per_hour": 0.1,
                        "gpu": None,
                        "default": True,
                    },
                    {
                        "slug": "gpu-t4",
                        "display_name": "T4",
                        "price_per_hour": 0.6,
                        "gpu": "1 x T4",
                        "default": False,
                    },
                ]
            }
        if path == "notebook":
            assert (
                method == "POST" and body["content"] == NOTEBOOK
            )  # the panel sends the saved notebook
            return {
                "notebook": body["notebook"],
                "parameters": {
                    "epochs": {"type": "int", "default": 3},
                    "lr": {"type": "float", "default": 0.1},
                    "layers": {"type": "list", "default": [8, 4]},
                    "tag": {"type": "str", "default": "a"},
                    "fast": {"type": "bool", "default": False},
                },
            }
        if path == "cron":
            return {
                "description": "Every day at 02:00 UTC",
                "next_runs": ["2026-11-25T02:00:00Z"],
                "runs_per_month": 30,
            }
        if method == "POST" and path == "jobs":
            if self.refuse:
                raise JobsAPIError(400, self.refuse)
            return {
                "id": "abc123",
                "schedule": body["schedule"],
                "schedule_description": "Every day at 02:00 UTC",
                "next_run_at": "2026-11-25T02:00:00Z",
            }
        if path.endswith("/runs"):
            return {"runs": self.runs}
        if method == "GET" and path == "jobs":  # the notebook's schedules made before
            return {"jobs": self.jobs}
        raise AssertionError(path)


def ready_panel(fake) -> SchedulePanel:
    panel = SchedulePanel(
        notebook="train.ipynb", client=fake, refresh_s=0.05, read=lambda path: NOTEBOOK
    )
    deadline = time.monotonic() + 5
    while "epochs" not in panel.param_inputs or panel.profile.value is None:
        assert time.monotonic() < deadline, "panel did not load"
        time.sleep(0.01)
    return panel


def test_parameters_become_typed_inputs_and_the_body_carries_their_values():
    fake = FakeJobs()
    panel = ready_panel(fake)
    kinds = {name: type(wid).__name__ for name, wid in panel.param_inputs.items()}
    assert kinds == {
        "epochs": "IntText",
        "lr": "FloatText",
        "layers": "Text",
        "tag": "Text",
        "fast": "Checkbox",
    }
    panel.param_inputs["epochs"].value = 7
    panel.param_inputs["layers"].value = "[16, 8]"
    panel.schedule.value = "0 2 * * *"
    assert "Every day at 02:00 UTC" in panel.preview.value
    assert "per month (30 runs)" in panel.cost.value  # 10 min × $0.10/h × 30
    job = panel.create_schedule()
    assert job["id"] == "abc123"
    body = next(c[2] for c in fake.calls if c[:2] == ("POST", "jobs"))
    assert body == {
        "notebook": "train.ipynb",
        "content": NOTEBOOK,
        "parameters": {"epochs": 7, "lr": 0.1, "layers": [16, 8], "tag": "a", "fast": False},
        "profile": "cpu-small",
        "schedule": "0 2 * * *",
        "timezone": "UTC",
    }
    assert "Scheduled: Every day at 02:00 UTC" in panel.status.value


def test_the_estimate_uses_the_notebook_s_real_run_durations_once_it_has_some():
    fake = FakeJobs()
    fake.jobs = [{"id": "j1", "notebook": "train.ipynb", "schedule": None}]
    fake.runs = [
        {"id": f"r{i}", "status": status, "duration_s": s, "created_at": f"2026-12-0{i}T00:00:00Z"}
        for i, (status, s) in enumerate(
            [("succeeded", 60.0), ("succeeded", 1800.0), ("failed", 5.0), ("succeeded", 120.0)], 1
        )
    ]
    panel = ready_panel(fake)
    deadline = time.monotonic() + 5
    while "median" not in panel.cost.value:
        assert time.monotonic() < deadline, panel.cost.value
        time.sleep(0.01)
    # the median of the three that succeeded (2 min), not the typed 10 min: $0.10/h × 2 min
    assert "≈ $0.0033 per run (median of 3 runs: 2.0 min)" in panel.cost.value, panel.cost.value


def test_errors_are_shown_in_plain_words_in_the_panel():
    panel = ready_panel(FakeJobs(refuse="schedule: '61 * * * *' is not a valid cron expression"))
    panel.param_inputs["layers"].value = "[16,"
    assert panel.run_now() is None
    assert "layers (list) JSON: not valid JSON" in panel.status.value
    panel.param_inputs["layers"].value = "[16]"
    assert panel.run_now() is None
    assert (
        "is not a valid cron expression" in panel.status.value
        and "hubml-status-error" in panel.status.value
    )
    assert panel.create_schedule() is None  # "once" is not a schedule
    assert "Choose a schedule first" in panel.status.value


def test_history_links_outputs_and_escapes_errors():
    runs = [
        {
            "id": "r2",
            "status": "failed",
            "attempt": 1,
            "scheduled_for": "2026-11-24T10:00:00Z",
            "started_at": "2026-11-24T10:00:01Z",
            "duration_s": 3.2,
            "cost_usd": 0.00009,
            "mlflow_run_id": None,
            "error": "cell 1 raised ValueError: <script>x</script>",
            "created_at": "b",
        },
        {
            "id": "r1",
            "status": "queued",
            "attempt": 1,
            "scheduled_for": "2026-11-24T09:00:00Z",
            "started_at": None,
            "duration_s": None,
            "cost_usd": None,
            "mlflow_run_id": None,
            "error": None,
            "created_at": "a",
        },
    ]
    base = "http://jobs--service.localhost:8000/services/jobs/api/runs/"
    for r in runs:
        r["links"] = {
            k: f"{base}{r['id']}/{f}" for k, f in (("html", "output.html"), ("log", "log"))
        }
    out = history_html(runs)
    assert f"{base}r2/output.html" in out and "<script>" not in out and "&lt;script&gt;" in out
    assert f"{base}r1/output.html" not in out  # nothing to open before it runs
    assert "$0.0001" in out and "3.2 s" in out


def test_without_a_jobs_service_the_panel_says_so(monkeypatch):
    from hubml.widgets.jobs import JobsClient

    for var in ("HUBML_JOBS_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JobsAPIError, match="no jobs service is configured"):
        JobsClient().request("GET", "profiles")


def test_the_panel_shows_budget_warnings_and_works_on_without_the_cost_service(monkeypatch):
    import http.server
    import json
    import threading
    import time

    from hubml.widgets.jobs import _budget_warnings

    monkeypatch.delenv("HUBML_COST_URL", raising=False)
    assert _budget_warnings() == []

    class Cost(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            assert self.path == "/services/cost/api/me"
            assert self.headers["Authorization"] == "token kernel-token"
            body = json.dumps(
                {
                    "user": "alice",
                    "month": "2026-12",
                    "spent_usd": 4.5,
                    "by_kind": {},
                    "budget": {
                        "warnings": ["Your budget is 90% spent: $0.500 left of $5.00 this month."]
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "kernel-token")
    monkeypatch.setenv("HUBML_COST_URL", f"http://127.0.0.1:{server.server_port}/services/cost")
    try:
        assert _budget_warnings() == ["Your budget is 90% spent: $0.500 left of $5.00 this month."]
    finally:
        server.shutdown()
        server.server_close()
    t0 = time.monotonic()
    assert _budget_warnings() == []  # the service is gone: nothing, and no waiting
    assert time.monotonic() - t0 < 5
