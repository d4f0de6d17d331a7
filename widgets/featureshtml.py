"""What the FeatureBrowser shows, as HTML and code: a feature view (schema, freshness,
statistics with small histograms, sample rows), its lineage, a proposal's review, and the
``get_historical_features`` cell "Insert code" writes. Pure functions of the service's answers.
"""

from __future__ import annotations

import html
import json
import os

e = html.escape


def history_code(project: str, refs: list[str], keys: dict[str, list]) -> str:
    """The cell "Insert code" writes: entity rows from real keys, and the features chosen."""
    columns = "".join(f"        {k!r}: {json.dumps(v)},\n" for k, v in keys.items())
    features = "".join(f"        {r!r},\n" for r in refs)
    return (
        "import pandas as pd\n"
        "from hubml.widgets import feature_store\n\n"
        f"store = feature_store({project!r})\n"
        "# one row per entity and moment you want the features as of\n"
        "entity_df = pd.DataFrame(\n"
        "    {\n"
        f"{columns}"
        '        "event_timestamp": pd.Timestamp.now(tz="UTC").floor("h"),\n'
        "    }\n"
        ")\n"
        "training_df = store.get_historical_features(\n"
        "    entity_df=entity_df,\n"
        "    features=[\n"
        f"{features}"
        "    ],\n"
        ").to_df()\n"
        "training_df"
    )


def _histogram_svg(hist: dict | None) -> str:
    if not hist or not hist.get("counts"):
        return ""
    counts = hist["counts"]
    top = max(counts) or 1
    bars = "".join(
        f"<rect x='{i * 8}' y='{20 - 20 * c / top:.1f}' width='7' height='{20 * c / top:.1f}' "
        f"fill='#1f6feb'><title>{c}</title></rect>"
        for i, c in enumerate(counts)
    )
    return (
        f"<svg width='{8 * len(counts)}' height='20' role='img' aria-label='histogram'>{bars}</svg>"
    )


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return e(str(x))


def _age(seconds) -> str:
    if seconds is None:
        return "never"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def view_html(view: dict, stats: dict | None) -> str:
    f = view["freshness"]
    state = {"fresh": "#1a7f37", "stale": "#cf222e", "never": "#9a6700"}[f["state"]]
    ttl = f"{view['ttl_s'] // 3600} h" if view["ttl_s"] else "none"
    src = view.get("source") or {}
    feature_stats = (stats or {}).get("features", {})
    rows = []
    for feat in view["features"]:
        s = feature_stats.get(feat["name"], {})
        extra = ""
        if s.get("kind") == "numeric":
            extra = f"{_num(s.get('min'))} – {_num(s.get('max'))}, mean {_num(s.get('mean'))} {_histogram_svg(s.get('histogram'))}"
        elif s.get("top"):
            extra = ", ".join(f"{e(str(t['value']))} ({t['count']})" for t in s["top"][:4])
        rows.append(
            f"<tr><td><b>{e(feat['name'])}</b></td><td>{e(feat['dtype'])}</td>"
            f"<td>{e(feat['description'] or '(no description)')}</td>"
            f"<td>{_num(s.get('nulls'))}</td><td>{_num(s.get('distinct'))}</td><td>{extra}</td></tr>"
        )
    parts = [
        f"<div class='hubml-feature-view'><h3 style='margin:.3em 0'>{e(view['project'])} / {e(view['name'])}</h3>",
        f"<p>{e(view['description'] or '(no description)')}</p>",
        f"<p><b>Owner</b> {e(view['owner'] or 'unknown')} · <b>Entities</b> {e(', '.join(view['entities']))} "
        f"({e(', '.join(view['join_keys']))}) · <b>ttl</b> {e(ttl)} · <b>Source</b> {e(src.get('name') or '')}"
        f" <code>{e(os.path.basename(src.get('path') or ''))}</code></p>",
        f"<p class='hubml-freshness'><b>Freshness</b> <span style='color:{state}'><b>{e(f['state'])}</b></span>: "
        f"last materialized {e(_age(f['age_s']))}"
        + (f" ({e(f['last_materialized'])})" if f["last_materialized"] else "")
        + "</p>",
        "<p><b>Tags</b> "
        + (e(", ".join(f"{k}={v}" for k, v in view["tags"].items())) or "none")
        + " · <b>Feature services</b> "
        + (e(", ".join(view["feature_services"])) or "none")
        + "</p>",
        "<table class='hubml-schema'><tr><th>Feature</th><th>Type</th><th>Description</th>"
        "<th>Nulls</th><th>Distinct</th><th>Values</th></tr>" + "".join(rows) + "</table>",
    ]
    if stats and stats.get("available"):
        parts.append(
            f"<p><small>Statistics of {stats['rows_read']:,} of {stats['rows_total']:,} rows"
            + (" (partial: the time cap was reached)" if stats.get("partial") else "")
            + (", cached" if stats.get("cached") else "")
            + "</small></p>"
        )
        cols = stats["sample"]["columns"]
        body = "".join(
            "<tr>" + "".join(f"<td>{_num(r.get(c))}</td>" for c in cols) + "</tr>"
            for r in stats["sample"]["rows"]
        )
        parts.append(
            "<details class='hubml-sample' open><summary>Sample rows (newest)</summary><table><tr>"
            + "".join(f"<th>{e(c)}</th>" for c in cols)
            + f"</tr>{body}</table></details>"
        )
    elif stats:
        parts.append(f"<p><small>No statistics: {e(stats.get('reason', ''))}</small></p>")
    parts.append("</div>")
    return "".join(parts)


def lineage_html(lineage: dict) -> str:
    src = lineage.get("source") or {}
    fv = lineage["feature_view"]
    runs = lineage.get("runs", [])
    models = lineage.get("models", [])
    run_items = "".join(
        f"<li>run <code>{e(r['run_id'][:8])}</code> {e(r['run_name'])} by {e(r['user'])}"
        + (f" (feature service {e(r['feature_service'])})" if r.get("feature_service") else "")
        + "</li>"
        for r in runs
    )
    model_items = "".join(
        f"<li>{e(m['name'])} v{e(str(m['version']))} (from run <code>{e(m['run_id'][:8])}</code>)</li>"
        for m in models
    )
    note = (
        ""
        if lineage.get("mlflow") == "ok"
        else f"<p><small>{e(lineage.get('mlflow', ''))}</small></p>"
    )
    return (
        "<div class='hubml-lineage'><b>Lineage</b>: "
        f"source {e(src.get('name') or '?')} → feature view {e(fv['name'])} → feature services "
        f"{e(', '.join(lineage.get('feature_services') or []) or 'none')}"
        f"<br>Runs that used it: {len(runs)}<ul>{run_items}</ul>"
        f"Registered models from those runs: {len(models)}<ul>{model_items}</ul>{note}</div>"
    )


PROPOSAL_TEMPLATE = """from datetime import timedelta
from feast import FeatureView, Field, FileSource
from feast.types import Float32

# a Parquet file in the project's data folder (path relative to it)
source = FileSource(name="my_source", path="my_source.parquet", timestamp_field="event_timestamp")
my_features = FeatureView(
    name="my_features",
    entities=["driver"],
    ttl=timedelta(days=1),
    source=source,
    schema=[Field(name="my_feature", dtype=Float32, description="What it measures, in words")],
    owner="you@example.com",
    description="What these features are for",
    tags={"team": "yours"},
)
"""


def findings_html(answer: dict) -> str:
    """A proposal's review as a person reads it: what is missing, what exists, what to reuse."""
    review = answer.get("review") or {}
    titles = {
        "duplicates": "Already exists",
        "collisions": "Name taken",
        "missing": "Missing",
        "similar": "Similar names (a warning)",
    }
    parts = []
    for key, title in titles.items():
        items = review.get(key) or []
        if not items:
            continue
        lis = "".join(
            f"<li>{e(i['message'])}"
            + (f"<br><code>{e(i['reuse'])}</code>" if i.get("reuse") else "")
            + "</li>"
            for i in items
        )
        parts.append(f"<div class='hubml-findings-{key}'><b>{e(title)}</b><ul>{lis}</ul></div>")
    state = answer.get("state", "")
    head = {
        "refused": "<b style='color:#cf222e'>Not proposed</b>: fix what is listed, then propose again.",
        "pending": f"<b>Proposed</b> (#{answer.get('id')}): it waits for an owner of "
        f"{e(answer.get('project', ''))} to review it.",
    }.get(state, f"<b>{e(state)}</b>")
    return f"<div class='hubml-proposal-answer'>{head}{''.join(parts)}</div>"
