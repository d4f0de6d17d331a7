"""The publish panel's wording, with a stand-in for the registry API."""

from hubml.widgets.publish import PublishPanel, RegistryAPIError, comparison_html, history_html


class MockRegistry:
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def request(self, method, path, body=None, params=None):
        self.calls.append((method, path, body, params))
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
    assert api.calls[0][:2] == ("POST", "churn/publish")


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
