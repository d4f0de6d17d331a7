"""The registry for people: one page per registered model, at
``/services/mlflow/hubml/models/<name>``, with its owners, aliases, policy, every version's gate
results and the audit history — what MLflow's UI shows only as raw JSON tags.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from urllib.parse import quote

from hubml.extensions.common.handlers import page_html

from ..auditwords import describe_move
from .handlers import NAME, RegistryHandler


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(ms) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _gates(report: dict | None) -> str:
    if not report:
        return "<small>no gate report (registered around the gated flow)</small>"
    items = []
    for result in report.get("results") or []:
        # in words and colour: emoji render as boxes where no emoji font is installed
        passed = bool(result.get("passed"))
        mark = (
            f"<span class='verdict {'passed' if passed else 'failed'}'>"
            f"{'passed' if passed else 'failed'}</span>"
        )
        items.append(f"<li>{mark} <b>{_e(result.get('name'))}</b>: {_e(result.get('detail'))}</li>")
    return f"<ul class='gates'>{''.join(items)}</ul>"


def render(model: dict, history: list[dict], mlflow_ui: str) -> str:
    name = model["name"]
    aliases = model.get("aliases") or {}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(f"@{alias}")
    owners = _e(model.get("owner") or "nobody (an admin may assign an owner)")
    if model.get("maintainers"):
        owners += f" · maintainers: {_e(', '.join(model['maintainers']))}"
    policy = model.get("policy") or {}
    policy_rows = [[_e(k), _e(v)] for k, v in sorted(policy.items())]
    versions = [
        [
            f"<a href='{_e(mlflow_ui)}#/models/{quote(name)}/versions/{_e(v['version'])}'>v{_e(v['version'])}</a>",
            _e(" ".join(by_version.get(str(v["version"]), []))),
            _e(v.get("author")),
            _e(_when(v.get("created_ms"))),
            _gates(v.get("gates")),
        ]
        for v in model.get("versions") or []
    ]
    moves = [
        [
            _e(e.get("at", "")[:16].replace("T", " ")),
            _e(e.get("action")),
            _e(describe_move(e)),
            _e(e.get("actor")),
            _e(e.get("reason")),
        ]
        for e in reversed(history)
    ]
    body = (
        "<style>table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}"
        "th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;"
        "vertical-align:top}ul.gates{margin:0;padding-left:1rem}ul.gates li{margin:.1rem 0}"
        ".verdict{color:#fff;border-radius:3px;padding:0 5px;font-size:.75rem}"
        ".verdict.passed{background:#116329}.verdict.failed{background:#82071e}</style>"
        f"<p>Owner: {owners}</p>"
        f"<h2>Versions</h2>{_table(['version', 'aliases', 'author', 'registered', 'gates'], versions)}"
        f"<h2>History</h2>"
        + (
            _table(["when", "action", "alias", "who", "why"], moves)
            if moves
            else "<p><small>no alias has moved yet</small></p>"
        )
        + f"<h2>Gate policy</h2>{_table(['setting', 'value'], policy_rows)}"
        f"<p><a href='{_e(mlflow_ui)}#/models/{quote(name)}'>Open in MLflow</a></p>"
    )
    return page_html(f"Model {name}", body)


class ModelPageHandler(RegistryHandler):
    page = True

    async def get(self, name):
        model = await self.call(lambda: self.registry().describe(name))
        entries = await self.call(lambda: self.registry().history(name))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(render(model, [e.to_dict() for e in entries], self.ctx.prefix))


PAGE_ROUTES = [(f"hubml/models/{NAME}", ModelPageHandler)]
