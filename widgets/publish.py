"""The publish panel: compare a logged model with the current champion, run the gates, publish
it as ``@challenger``, ask for promotion, approve, roll back, and read the audit history.

Everything goes through the mlflow hub service's registry API (``.../hubml/api/models/``), which
enforces the gates and the approval rules on the server; this panel only shows and asks.
"""

from __future__ import annotations

import html
import os

import ipywidgets as w

from hubml.extensions.tracking.auditwords import describe_move


class RegistryAPIError(RuntimeError):
    """A refusal from the registry API; the message is the service's plain-words explanation."""

    def __init__(self, status: int, message: str, data: dict | None = None):
        super().__init__(message)
        self.status, self.data = status, data or {}


class RegistryClient:
    """Small client of the registry API, authenticated like the kernel's MLflow calls."""

    def __init__(self, tracking_uri: str | None = None, token: str | None = None):
        self.base = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")).rstrip(
            "/"
        ) + "/hubml/api/models/"
        self.token = token or os.environ.get("MLFLOW_TRACKING_TOKEN", "")

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        params: dict | None = None,
        retry_s: float | None = None,
    ) -> dict:
        from urllib.parse import quote

        import requests

        from ._http import call

        if path.startswith("/"):  # beside the models: "/approvals"
            url = self.base.removesuffix("models/") + path.lstrip("/")
        else:
            name, _, rest = path.partition("/")
            url = self.base + quote(name, safe="") + (f"/{rest}" if rest else "")
        try:
            status, data, reason = call(
                method, url, self.token, body=body, params=params, timeout=300, retry_s=retry_s
            )
        except requests.RequestException as e:
            raise RegistryAPIError(
                0, f"the tracking service did not answer ({type(e).__name__})"
            ) from None
        if status >= 400 and status != 422:
            raise RegistryAPIError(status, data.get("message", reason), data)
        return data


def comparison_html(data: dict) -> str:
    champ = data.get("champion_version")
    head = (
        f"candidate (run {html.escape(data['run_id'][:8])})",
        f"@champion (v{champ})" if champ else "@champion (none yet)",
    )
    rows = "".join(
        "<tr{style}><td>{m}</td><td>{a}</td><td>{b}</td><td>{d}</td></tr>".format(
            style=" style='font-weight:600'" if r["gated"] else "",
            m=html.escape(r["metric"]) + (" (gate)" if r["gated"] else ""),
            a=_num(r["candidate"]),
            b=_num(r["champion"]),
            d=_num(r["delta"], signed=True),
        )
        for r in data["rows"]
    )
    return (
        "<table class='hubml-compare' style='border-collapse:collapse'>"
        f"<tr><th>metric</th><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th><th>Δ</th></tr>"
        f"{rows}</table>"
    )


def _verdict(passed: bool) -> str:
    """A gate's verdict in words and colour (emoji render as boxes where no emoji font is)."""
    colour, word = ("#116329", "passed") if passed else ("#82071e", "failed")
    return (
        f"<span class='hubml-gate-{word}' style='color:#fff;background:{colour};"
        f"border-radius:3px;padding:0 5px;font-size:11px'>{word}</span>"
    )


def gates_html(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{_verdict(g['passed'])}</td><td>{html.escape(g['name'])}</td>"
        f"<td>{html.escape(g['detail'])}</td></tr>"
        for g in report["results"]
    )
    return f"<table class='hubml-gates'>{rows}</table>"


def history_html(entries: list[dict]) -> str:
    if not entries:
        return "<i>No history yet.</i>"
    rows = "".join(
        "<tr><td>{at}</td><td>{actor}</td><td>{action}</td><td>{move}</td><td>{reason}</td></tr>".format(
            at=html.escape(e["at"][:19].replace("T", " ")),
            actor=html.escape(e["actor"]),
            action=html.escape(e["action"]),
            move=html.escape(describe_move(e)),
            reason=html.escape(e.get("reason") or ""),
        )
        for e in entries
    )
    return (
        "<table class='hubml-history'><tr><th>when (UTC)</th><th>who</th><th>action</th><th>alias move</th>"
        f"<th>reason</th></tr>{rows}</table>"
    )


def _num(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _labelled() -> dict:
    """Labels read whole ("Model name", not "Model na…"), and the fields line up."""
    return {"style": {"description_width": "90px"}, "layout": w.Layout(width="420px")}


class PublishPanel(w.VBox):
    """``PublishPanel(model_name="churn", run_id=panel.run_id)``"""

    def __init__(
        self, model_name: str = "", run_id: str = "", artifact_path: str = "model", client=None
    ):
        self.client = client or RegistryClient()
        self.name = w.Text(
            value=model_name,
            description="Model name",
            placeholder="e.g. churn-classifier",
            **_labelled(),
        )
        self.run_id = w.Text(
            value=run_id, description="Run id", placeholder="run with a logged model", **_labelled()
        )
        self.artifact_path = w.Text(value=artifact_path, description="Artifact", **_labelled())
        self.version = w.Text(
            value="", description="Version", placeholder="for promotion / approval", **_labelled()
        )
        self.reason = w.Text(
            value="", description="Reason", placeholder="why (kept in the audit log)", **_labelled()
        )
        # approving happens from the inbox, which offers only what the approval rule allows
        buttons = [
            ("Compare", self.compare),
            ("Run gates & publish", self.publish),
            ("Request promotion", self.request_promotion),
            ("Roll back", self.rollback),
            ("History", self.history),
            ("Refresh inbox", self.refresh_inbox),
        ]
        self.buttons = {}
        for label, action in buttons:
            b = w.Button(description=label, layout=w.Layout(width="auto"))  # never cut
            b.on_click(lambda _, action=action: self._run(action))
            self.buttons[label] = b
        self.buttons["Run gates & publish"].button_style = "primary"
        self.output = w.HTML("")
        self.status = w.HTML("")
        self.inbox = w.VBox([])
        self.inbox.add_class("hubml-inbox")
        super().__init__(
            [
                w.HTML("<b>Publish a model</b>"),
                self.name,
                self.run_id,
                self.artifact_path,
                w.HBox([self.buttons["Compare"], self.buttons["Run gates & publish"]]),
                self.version,
                self.reason,
                w.HBox([self.buttons[k] for k in ("Request promotion", "Roll back", "History")]),
                self.status,
                self.output,
                w.HBox([w.HTML("<b>Approvals</b>"), self.buttons["Refresh inbox"]]),
                self.inbox,
            ]
        )
        self.add_class("hubml-publish-panel")
        try:  # at once, without waiting out a restarting service: the button tries again
            self.refresh_inbox(retry_s=0)
        except (RegistryAPIError, ValueError) as e:
            self.inbox.children = [
                w.HTML(
                    f"<i>Approvals could not be loaded ({html.escape(str(e))}); Refresh inbox to try again.</i>"
                )
            ]

    def _say(self, message: str, kind: str = "info") -> None:
        colour = {"info": "#57606a", "error": "#82071e", "ok": "#116329"}[kind]
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    def _run(self, action) -> None:
        for b in self.buttons.values():
            b.disabled = True
        try:
            action()
        except RegistryAPIError as e:
            self._say(str(e), "error")
        except ValueError as e:
            self._say(str(e), "error")
        finally:
            for b in self.buttons.values():
                b.disabled = False

    def _model(self) -> str:
        name = self.name.value.strip()
        if not name:
            raise ValueError("type the registered model's name first")
        return name

    def compare(self) -> dict:
        data = self.client.request(
            "GET", f"{self._model()}/compare", params={"run_id": self.run_id.value.strip()}
        )
        self.output.value = comparison_html(data)
        self._say("Candidate next to the current champion.")
        return data

    def publish(self) -> dict:
        data = self.client.request(
            "POST",
            f"{self._model()}/publish",
            {
                "run_id": self.run_id.value.strip(),
                "artifact_path": self.artifact_path.value.strip() or "model",
                "reason": self.reason.value,
            },
        )
        self.output.value = gates_html(data["gates"])
        if data["ok"]:
            self.version.value = str(data["version"])
            self._say(f"All gates passed: version {data['version']} is now @challenger.", "ok")
        else:
            failed = ", ".join(g["name"] for g in data["gates"]["results"] if not g["passed"])
            self._say(f"Not published: failed gate(s) {failed}. Aliases are untouched.", "error")
        return data

    def _version(self) -> str:
        v = self.version.value.strip()
        if not v:
            raise ValueError("type the version number first")
        return v

    def request_promotion(self) -> dict:
        data = self.client.request(
            "POST",
            f"{self._model()}/versions/{self._version()}/request-promotion",
            {"reason": self.reason.value},
        )
        self._say(
            f"Promotion of version {data['to_version']} requested; it is in the approvers' inbox.",
            "ok",
        )
        self.refresh_inbox()
        return data

    def approve(self) -> dict:
        data = self.client.request(
            "POST",
            f"{self._model()}/versions/{self._version()}/approve",
            {"reason": self.reason.value},
        )
        self._say(
            f"Version {data['to_version']} is now @champion (was {data.get('from_version') or 'none'}).",
            "ok",
        )
        return data

    def refresh_inbox(self, retry_s: float | None = None) -> dict:
        """What waits for you (with an Approve button each), and what you asked for."""
        data = self.client.request("GET", "/approvals", retry_s=retry_s)
        rows: list[w.Widget] = []
        for item in data.get("to_approve", []):
            gates = ", ".join(
                f"{g['name']} {'passed' if g['passed'] else 'FAILED'}"
                for g in item.get("gates", [])
            )
            text = (
                f"<b>{html.escape(item['model'])}</b> v{html.escape(str(item['version']))} "
                f"for @champion (now {html.escape(str(item.get('champion') or 'none'))}), asked by "
                f"{html.escape(item['requested_by'])}: {html.escape(item.get('reason') or 'no reason given')}"
                + (f"<br><small>gates: {html.escape(gates)}</small>" if gates else "")
            )
            button = w.Button(description=f"Approve v{item['version']}", button_style="success")
            button.add_class("hubml-approve")
            button.on_click(lambda _, item=item: self._run(lambda: self._approve_item(item)))
            buttons = [button]
            if item.get("run_id"):
                compare = w.Button(description=f"Compare v{item['version']}")
                compare.add_class("hubml-inbox-compare")
                compare.on_click(lambda _, item=item: self._run(lambda: self._compare_item(item)))
                buttons.insert(0, compare)
            rows.append(w.HBox([w.HTML(text), *buttons]))
        if not rows:
            rows.append(w.HTML("<i>Nothing waits for your approval.</i>"))
        mine = [
            f"<li>{html.escape(i['model'])} v{html.escape(str(i['version']))}: waiting for "
            f"{html.escape(i['approvers'])}</li>"
            for i in data.get("mine", [])
        ] + [
            f"<li>{html.escape(d['model'])} v{html.escape(str(d['version']))}: approved by "
            f"{html.escape(d['approved_by'])} ({html.escape(d.get('reason') or 'no reason given')})</li>"
            for d in data.get("decided", [])
        ]
        if mine:
            rows.append(w.HTML(f"<b>Your requests</b><ul class='hubml-mine'>{''.join(mine)}</ul>"))
        self.inbox.children = rows
        return data

    def _compare_item(self, item: dict) -> dict:
        """The requested version's run next to the current champion, before approving."""
        data = self.client.request(
            "GET", f"{item['model']}/compare", params={"run_id": item["run_id"]}
        )
        self.output.value = comparison_html(data)
        self._say(
            f"{item['model']} v{item['version']} next to @champion "
            f"(now {item.get('champion') or 'none'})."
        )
        return data

    def _approve_item(self, item: dict) -> dict:
        self.name.value, self.version.value = item["model"], str(item["version"])
        data = self.approve()
        self.refresh_inbox()
        return data

    def rollback(self) -> dict:
        data = self.client.request(
            "POST", f"{self._model()}/rollback", {"reason": self.reason.value}
        )
        self._say(
            f"@champion rolled back from {data.get('from_version')} to {data['to_version']}.", "ok"
        )
        return data

    def history(self) -> list:
        entries = self.client.request("GET", f"{self._model()}/history")["entries"]
        self.output.value = history_html(entries)
        self._say(f"{len(entries)} recorded action(s).")
        return entries
