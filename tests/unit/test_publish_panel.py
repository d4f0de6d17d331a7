"""The publish panel's wording, with a stand-in for the registry API."""

from hubml.widgets.publish import PublishPanel, RegistryAPIError, comparison_html, history_html


class MockRegistry:
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def request(self, method, path, body=None, params=None, retry_s=None):
        self.calls.append((method, path, body, params))
        if path == "/approvals" and "approvals" not in self.replies:
            return {"to_approve": [], "mine": [], "decided": []}
        reply = self.replies[path.rsplit("/", 1)[-1]]
        if isinstance(reply, Exception):
            raise reply
        return reply


REPORT_FAIL = {
    "model_uri": "runs:/r/model",
    "passed": False,
    "results": [
        {
            "name": "metric",
            "passed": False,
            "detail": "accuracy 0.81 < champion 0.93 (v3) - tolerance 0",
            "numbers": {},
        },
        {"name": "inference", "passed": True, "detail": "ok", "numbers": {}},
    ],
}


def test_failed_gate_names_the_gate_and_keeps_numbers():
    api = MockRegistry({"publish": {"ok": False, "version": None, "gates": REPORT_FAIL}})
    panel = PublishPanel("churn", run_id="r", client=api)
    panel._run(panel.publish)
    assert "Not published: failed gate(s) metric. Aliases are untouched." in panel.status.value
    assert "accuracy 0.81 &lt; champion 0.93" in panel.output.value
    assert ("POST", "churn/publish") in [c[:2] for c in api.calls]


def test_refusals_are_shown_in_plain_words_escaped():
    api = MockRegistry(
        {"approve": RegistryAPIError(403, "<b>alice</b> may not approve her own version")}
    )
    panel = PublishPanel("churn", client=api)
    panel.version.value = "2"
    panel._run(panel.approve)
    assert "&lt;b&gt;alice&lt;/b&gt; may not approve her own version" in panel.status.value
    assert all(not b.disabled for b in panel.buttons.values())


def test_missing_name_is_asked_for():
    panel = PublishPanel("", client=MockRegistry({}))
    panel._run(panel.compare)
    assert "type the registered model&#x27;s name first" in panel.status.value


def test_tables():
    html = comparison_html(
        {
            "run_id": "abcdef123",
            "champion_version": "3",
            "rows": [
                {
                    "metric": "accuracy",
                    "candidate": 0.95,
                    "champion": 0.93,
                    "delta": 0.02,
                    "gated": True,
                }
            ],
        }
    )
    assert "@champion (v3)" in html and "+0.02" in html and "accuracy (gate)" in html
    assert "No history yet" in history_html([])
    row = history_html(
        [
            {
                "at": "2026-11-24T15:00:00+00:00",
                "actor": "bob",
                "action": "approve",
                "alias": "champion",
                "from_version": None,
                "to_version": "1",
                "reason": "ok",
            }
        ]
    )
    assert "@champion: none → v1" in row and "bob" in row
    # a request moves nothing, and does not read as if it had
    asked = history_html(
        [
            {
                "at": "2026-11-24T14:00:00+00:00",
                "actor": "alice",
                "action": "request_promotion",
                "alias": "champion",
                "from_version": None,
                "to_version": "1",
                "reason": "better recall",
            }
        ]
    )
    assert "asks v1 as @champion (now none)" in asked and "→" not in asked


def test_the_inbox_offers_an_approval_and_shows_your_own_requests():
    inbox = {
        "to_approve": [
            {
                "model": "churn",
                "version": "2",
                "requested_by": "alice",
                "reason": "<b>better</b> recall",
                "champion": "1",
                "approvers": "members of group reviewers",
                "gates": [{"name": "metric", "passed": True, "detail": ""}],
            }
        ],
        "mine": [{"model": "fraud", "version": "4", "approvers": "anyone but its author"}],
        "decided": [{"model": "fraud", "version": "3", "approved_by": "carol", "reason": "ok"}],
    }
    api = MockRegistry({"approvals": inbox, "approve": {"to_version": "2", "from_version": "1"}})
    panel = PublishPanel(client=api)
    (offer, mine) = panel.inbox.children
    text, button = offer.children
    assert "asked by alice" in text.value and "&lt;b&gt;better&lt;/b&gt;" in text.value
    assert "metric passed" in text.value and button.description == "Approve v2"
    assert "fraud v4: waiting for anyone but its author" in mine.value
    assert "fraud v3: approved by carol" in mine.value
    assert "Approve" not in panel.buttons  # no button that can only fail for the author
    button.click()
    assert ("POST", "churn/versions/2/approve") in [c[:2] for c in api.calls]
    assert "Version 2 is now @champion (was 1)." in panel.status.value
