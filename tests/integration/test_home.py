"""The home page (``/services/home/``): one person's servers, schedules, runs, apps and approvals,
gathered with their own token, and actions relayed as them; approvals announced by webhook."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest
import requests

from tests.jobsutil import JobsAPI, notebook

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests"


class Receiver:
    """An HTTP receiver of webhooks on a free loopback port: what it heard, headers and body."""

    def __init__(self):
        heard = self.heard = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                heard.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/approvals"

    def wait(self, event: str, timeout: float = 30) -> tuple[dict, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in self.heard:
                data = json.loads(body)
                if data["event"] == event:
                    return headers, {"raw": body, **data}
            time.sleep(0.1)
        raise TimeoutError(f"no {event} event: {[b for _, b in self.heard]}")


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, receiver):
    from tests.hubprocess import start_hub

    hub = start_hub(
        tmp_path_factory.mktemp("home"),
        {
            "tracking": {
                "enabled": True,
                "approvals_webhook_url": receiver.url,
                "approvals_webhook_secret": SECRET,
            },
            "jobs": {"enabled": True},
            "apps": {"enabled": True},
        },
    )
    try:
        JobsAPI(hub, hub.token).wait_up()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def tokens(hub):
    return {u: hub.user_token(u) for u in ("alice", "bob")}


def home(hub, token, path="api/home", method="GET", **kw):
    return requests.request(
        method,
        hub.service_url("home") + path,
        headers={"Authorization": f"token {token}"},
        timeout=60,
        **kw,
    )


def act(hub, token, **body):
    return home(hub, token, "api/act", "POST", json=body)


@pytest.fixture(scope="module")
def alices_job(hub, tokens):
    jobs = JobsAPI(hub, tokens["alice"])
    job = jobs.create(
        notebook="reports/nightly.ipynb",
        content=notebook("print('report ready')"),
        profile="cpu-small",
        schedule="0 2 * * *",
        name="nightly report",
    )
    r = jobs("POST", f"jobs/{job['id']}/runs")
    assert r.status_code == 201, r.text
    jobs.wait_runs(job["id"])
    return job


def test_each_person_sees_their_own_servers_schedules_and_runs_and_nobody_elses(
    hub, tokens, alices_job
):
    hub.spawn("alice", {"profile": "cpu-small"}, token=tokens["alice"])
    hub.wait_ready("alice")
    try:
        r = home(hub, tokens["alice"])
        assert r.status_code == 200, r.text
        mine = r.json()
        assert mine["user"] == "alice" and mine["problems"] == {}
        [server] = mine["servers"]
        assert server["profile"] == "cpu-small" and server["ready"]
        assert server["price_per_hour"] == pytest.approx(0.0971)
        assert server["running_s"] > 0 and server["cost_usd"] == pytest.approx(
            server["running_s"] / 3600 * 0.0971, rel=0.05
        )
        assert [j["name"] for j in mine["schedules"]] == ["nightly report"]
        [run] = mine["runs"]
        assert run["job_name"] == "nightly report" and run["status"] == "succeeded"
        assert run["cost_usd"] > 0 and run["links"]["html"].startswith(hub.service_url("jobs"))
        assert mine["apps"] == [] and mine["approvals"]["to_approve"] == []

        # the page, as people see it
        page = home(hub, tokens["alice"], "")
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        for text in ("nightly report", "Recent runs", "CPU", "Run now", "Pause", "No apps yet"):
            assert text in page.text, text

        # bob has nothing of alice's: not her server, schedule or run
        theirs = home(hub, tokens["bob"]).json()
        assert theirs["user"] == "bob"
        assert theirs["servers"] == [] and theirs["schedules"] == [] and theirs["runs"] == []
        assert "nightly report" not in home(hub, tokens["bob"], "").text
    finally:
        hub.stop_server("alice")


def test_actions_are_a_short_list_relayed_as_the_person(hub, tokens, alices_job):
    job_id = alices_job["id"]
    jobs = JobsAPI(hub, tokens["alice"])

    # bob cannot pause alice's schedule through the home page: the jobs service answers as to him
    r = act(hub, tokens["bob"], do="pause", id=job_id)
    assert r.status_code == 404, r.text
    assert jobs("GET", f"jobs/{job_id}").json()["paused"] is False

    # alice pauses, re-schedules and resumes it from there
    r = act(hub, tokens["alice"], do="pause", id=job_id)
    assert r.status_code == 200 and r.json()["paused"] is True, r.text
    assert home(hub, tokens["alice"]).json()["schedules"][0]["paused"] is True
    r = act(hub, tokens["alice"], do="reschedule", id=job_id, schedule="30 3 * * 1")
    assert r.status_code == 200 and r.json()["schedule"] == "30 3 * * 1", r.text
    r = act(hub, tokens["alice"], do="reschedule", id=job_id, schedule="every day")
    assert r.status_code == 400 and "schedule" in r.json()["message"], r.text
    r = act(hub, tokens["alice"], do="resume", id=job_id)
    assert r.status_code == 200 and r.json()["paused"] is False, r.text

    # anything else is refused with what is allowed, and reaches no service
    r = act(hub, tokens["alice"], do="delete-user", id=job_id)
    assert (
        r.status_code == 400 and "approve" in r.json()["message"] and "pause" in r.json()["message"]
    )
    r = act(hub, tokens["alice"], do="pause", id="../../users/bob")
    assert r.status_code == 400 and r.json()["message"].startswith("id:"), r.text
    r = act(hub, tokens["alice"], do="approve", model="churn", version="1; drop")
    assert r.status_code == 400 and r.json()["message"].startswith("version:"), r.text


def test_the_home_answers_only_people_with_access_to_it(hub, tokens):
    # no token: a JSON refusal (a browser is sent to log in instead)
    r = requests.get(hub.service_url("home") + "api/home", timeout=30)
    assert r.status_code == 403 and "token" in r.json()["message"]
    # a token narrowed to the jobs service (as a kernel's is) does not open the home page
    r = hub.api(
        "POST",
        "users/alice/tokens",
        json={"note": "jobs only", "scopes": ["access:services!service=jobs"]},
    )
    assert r.status_code == 201, r.text
    r = home(hub, r.json()["token"])
    assert r.status_code == 403, r.text
    # a browser without a session is sent to the hub's login
    r = requests.get(hub.service_url("home"), timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]


def test_a_promotion_request_reaches_the_approver_by_home_page_and_webhook(hub, tokens, receiver):
    from tests.integration.test_registry import log_runs_through_the_hub
    from tests.integration.test_tracking_service import wait_for_mlflow

    wait_for_mlflow(hub, hub.token)
    runs = log_runs_through_the_hub(hub, tokens, (("alice", "alice"),))
    mlflow = hub.service_url("mlflow") + "hubml/api/models/churn/"
    alice = {"Authorization": f"token {tokens['alice']}"}
    r = requests.post(
        mlflow + "publish",
        json={"run_id": runs["alice"], "reason": "first"},
        headers=alice,
        timeout=300,
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        mlflow + "versions/1/request-promotion",
        json={"reason": "better recall"},
        headers=alice,
        timeout=60,
    )
    assert r.status_code == 201, r.text

    # the webhook heard it, signed, in words a chat shows as they are
    headers, event = receiver.wait("promotion.requested")
    expected = hmac.new(SECRET.encode(), event["raw"], hashlib.sha256).hexdigest()
    assert headers["X-Hubml-Signature-256"] == f"sha256={expected}"
    assert (event["model"], event["version"], event["by"]) == ("churn", "1", "alice")
    assert event["approvers"] == "anyone but its author"
    assert event["text"].startswith(
        "alice asks to promote churn version 1 to @champion (better recall)"
    )
    assert event["home_url"] == hub.service_url("home") + "#approvals"

    # bob's home has it waiting for him, with its gates; alice's says with whom it waits
    bobs = home(hub, tokens["bob"]).json()["approvals"]
    [waiting] = bobs["to_approve"]
    assert (waiting["model"], waiting["version"], waiting["requested_by"]) == (
        "churn",
        "1",
        "alice",
    )
    assert waiting["gates"] and all(g["passed"] for g in waiting["gates"])
    assert "Approve" in home(hub, tokens["bob"], "").text
    alices = home(hub, tokens["alice"]).json()["approvals"]
    assert alices["to_approve"] == []  # never her own
    assert [(m["model"], m["approvers"]) for m in alices["mine"]] == [
        ("churn", "anyone but its author")
    ]

    # alice cannot approve it from the home page either; bob can
    r = act(hub, tokens["alice"], do="approve", model="churn", version="1")
    assert r.status_code == 403, r.text
    r = act(
        hub, tokens["bob"], do="approve", model="churn", version="1", reason="checked the gates"
    )
    assert r.status_code == 200, r.text
    model = requests.get(mlflow.rstrip("/"), headers=alice, timeout=60).json()
    assert model["aliases"]["champion"] == "1"
    _, approved = receiver.wait("promotion.approved")
    assert (approved["by"], approved["author"]) == ("bob", "alice")
    assert "bob approved churn version 1 as @champion" in approved["text"]
    decided = home(hub, tokens["alice"]).json()["approvals"]["decided"]
    assert [(d["model"], d["approved_by"]) for d in decided] == [("churn", "bob")]


def test_apps_are_listed_with_who_they_are_shared_with_and_managed_by_their_owner(hub, tokens):
    from tests.integration.test_apps import GREETER, Apps

    apps = Apps(hub, tokens["alice"])
    r = apps(
        "POST", "apps", json={"name": "greeter", "source": "app.py", "files": {"app.py": GREETER}}
    )
    assert r.status_code == 201, r.text
    try:
        hub.ensure_user("bob")
        assert apps("POST", "apps/greeter/shares", json={"users": ["bob"]}).status_code == 201
        [app] = home(hub, tokens["alice"]).json()["apps"]
        assert app["name"] == "greeter" and app["status"] == "running"
        assert app["url"].startswith("http://alice.localhost:") and app["url"].endswith(
            "/user/alice/app-greeter/"
        )
        assert app["access"]["users"] == ["bob"] and app["cost_usd"] is not None
        page = home(hub, tokens["alice"], "").text
        assert "greeter" in page and "<td>bob</td>" in page  # shared with bob

        # bob sees it as shared with him, not as his, and cannot stop or delete it from his home
        bobs = home(hub, tokens["bob"]).json()
        assert bobs["apps"] == [] and [a["name"] for a in bobs["shared_with_me"]] == ["greeter"]
        for do in ("stop-app", "delete-app"):
            r = act(hub, tokens["bob"], do=do, name="greeter")
            assert r.status_code == 404, r.text
        assert home(hub, tokens["alice"]).json()["apps"][0]["status"] == "running"

        # its owner stops it, then deletes it, from hers
        r = act(hub, tokens["alice"], do="stop-app", name="greeter")
        assert r.status_code == 200 and r.json()["status"] == "stopped", r.text
        [app] = home(hub, tokens["alice"]).json()["apps"]
        assert app["status"] == "stopped" and app["cost_usd"] is None
        r = act(hub, tokens["alice"], do="delete-app", name="greeter")
        assert r.status_code == 204, r.text
        assert home(hub, tokens["alice"]).json()["apps"] == []
    finally:
        apps("DELETE", "apps/greeter")
