"""The home page as HTML: one section per kind of thing a person runs, from :mod:`.gather`.

Rendered on the server (the page works without its script); the script only counts running
costs up and sends the buttons' actions to ``api/act`` with the session's XSRF token.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote

from hubml.extensions.common import urls
from hubml.hub_config.catalog import format_duration, format_usd

e = html.escape

STYLE = """
<style>
  body { max-width: 64rem !important; }
  section { margin: 2rem 0; }
  h2 { font-size: 1.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
  table.home { border-collapse: collapse; width: 100%; }
  .home th, .home td { text-align: left; padding: .45rem .4rem; border-bottom: 1px solid #eaeef2;
                       vertical-align: top; }
  .home th { font-weight: 600; color: #57606a; font-size: .85rem; }
  .home button { margin: 0 .3rem .3rem 0; }
  .empty { color: #57606a; }
  .problem { background: #fff8c5; padding: .4rem .7rem; border-radius: 6px; }
  .ok { color: #116329; } .bad { color: #82071e; } .paused { color: #9a6700; font-weight: 600; }
  .pill { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: .8rem;
          border: 1px solid currentColor; margin: 0 .2rem .2rem 0; }
  #said { padding: .5rem .8rem; border-radius: 6px; } #said:empty { display: none; }
  #said.error { background: #ffebe9; color: #82071e; } #said.ok { background: #dafbe1; }
  nav.jump a { margin-right: 1rem; }
</style>
"""

SCRIPT = """
<script>
(function () {
  var base = document.body.getAttribute("data-base");
  var xsrf = document.body.getAttribute("data-xsrf");
  var said = document.getElementById("said");
  function say(text, kind) { said.textContent = text; said.className = kind; }
  function money(x) { return x >= 1 ? "$" + x.toFixed(2) : x >= 0.0001 ? "$" + x.toFixed(4) : "under $0.0001"; }
  function span(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
    return (h ? h + " h " : "") + (h || m ? m + " min" : "") + (h ? "" : " " + s + " s");
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-started][data-price]").forEach(function (row) {
      var started = Date.parse(row.getAttribute("data-started"));
      var price = parseFloat(row.getAttribute("data-price"));
      if (isNaN(started) || isNaN(price)) return;
      var seconds = Math.max(0, (now - started) / 1000);
      var el = row.querySelector("[data-role=elapsed]"), cost = row.querySelector("[data-role=cost]");
      if (el) el.textContent = span(seconds).trim();
      if (cost) cost.textContent = money(price * seconds / 3600);
    });
  }
  tick();
  setInterval(tick, 1000);
  document.querySelectorAll("button[data-do]").forEach(function (button) {
    button.addEventListener("click", async function () {
      var body = JSON.parse(button.getAttribute("data-args"));
      body["do"] = button.getAttribute("data-do");
      var ask = button.getAttribute("data-confirm");
      if (ask && !window.confirm(ask)) return;
      if (body["do"] === "approve") {
        var reason = window.prompt("Approve " + body.model + " version " + body.version +
                                   " as @champion. Why (kept in the audit log)?", "");
        if (reason === null) return;
        body.reason = reason;
      }
      if (body["do"] === "reschedule") {
        var expr = window.prompt("New cron schedule for " + button.getAttribute("data-name") +
                                 " (for example 0 2 * * * for 02:00 daily):", body.schedule || "");
        if (expr === null) return;
        body.schedule = expr;
      }
      button.disabled = true;
      try {
        var r = await fetch(base + "api/act", {
          method: "POST", credentials: "same-origin",
          headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
          body: JSON.stringify(body)
        });
        var data = {};
        try { data = await r.json(); } catch (err) {}
        if (!r.ok) throw new Error(data.message || ("HTTP " + r.status));
        window.location.reload();
      } catch (err) {
        button.disabled = false;
        say(button.getAttribute("data-name") + ": " + err.message, "error");
      }
    });
  });
})();
</script>
"""


def money(amount) -> str:
    """``$2.35``, ``$0.042``, ``$0.0003``; ``under $0.0001`` rather than a row of zeros."""
    if amount is None:
        return ""
    if amount >= 0.001:
        return format_usd(amount)
    return f"${amount:.4f}" if amount >= 0.0001 else ("$0" if amount <= 0 else "under $0.0001")


def took(seconds) -> str:
    """``0.8 s``, ``42 s``, ``3 min``, ``1 h 5 min`` for a run's duration."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return format_duration(int(seconds))


def when(iso: str | None) -> str:
    """``2026-12-02 18:16 UTC`` from an ISO time."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else ""


def button(do: str, label: str, subject: str, confirm: str = "", **args) -> str:
    """A button for action ``do`` on ``subject`` (what messages name), with its arguments."""
    return (
        f"<button data-do='{e(do)}' data-name='{e(subject)}' data-args='{e(json.dumps(args))}'"
        + (f" data-confirm='{e(confirm)}'" if confirm else "")
        + f">{e(label)}</button>"
    )


def table(headers: list[str], rows: list[str], label: str) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return (
        f"<table class='home' aria-label='{e(label)}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def section(key: str, title: str, data: dict, body) -> str:
    """A section, or in its place what kept it from being shown."""
    problem = data["problems"].get(key)
    inner = f"<p class='problem'>Not shown now: {e(problem)}.</p>" if problem else body()
    return f"<section id='{e(key)}'><h2>{e(title)}</h2>{inner}</section>"


def servers_html(data: dict) -> str:
    servers = data.get("servers") or []
    spawn = f"{urls.hub_public_url()}/hub/spawn"
    if not servers:
        return (
            "<p class='empty'>No server of yours is running, so nothing is being charged. "
            f"<a href='{e(spawn)}'>Start one</a>.</p>"
        )
    rows = []
    for s in servers:
        name = s["name"] or "your server"
        state = "starting" if s.get("pending") else "running" if s.get("ready") else "stopped"
        rows.append(
            f"<tr data-started='{e(s.get('started') or '')}' "
            f"data-price='{'' if s.get('price_per_hour') is None else s['price_per_hour']}'>"
            f"<td><a href='{e(s['url'])}'>{e(name)}</a> <small>{e(state)}</small></td>"
            f"<td>{e(s.get('profile_name') or '')}</td>"
            f"<td>{e(money(s.get('price_per_hour')))}/h</td>"
            f"<td data-role='elapsed'>{e(took(s.get('running_s')))}</td>"
            f"<td data-role='cost'>{e(money(s.get('cost_usd')))}</td></tr>"
        )
    return table(["Server", "Machine", "Price", "Running for", "Cost so far"], rows, "your servers")


def gates_html(gates: list[dict]) -> str:
    if not gates:
        return "<small>no gate results</small>"
    return "".join(
        f"<span class='pill {'ok' if g.get('passed') else 'bad'}' title='{e(g.get('detail') or '')}'>"
        f"{'passed' if g.get('passed') else 'failed'}: {e(g.get('name') or '')}</span>"
        for g in gates
    )


def approvals_html(data: dict, mlflow_public: str) -> str:
    approvals = data.get("approvals") or {}
    parts = []
    waiting = approvals.get("to_approve") or []
    if waiting:
        rows = []
        for a in waiting:
            link = f"{mlflow_public}#/models/{quote(a['model'], safe='')}/versions/{a['version']}"
            champion = (
                f"now @champion: version {a['champion']}"
                if a.get("champion")
                else "no @champion yet"
            )
            label = f"{a['model']} version {a['version']}"
            rows.append(
                f"<tr data-approval='{e(label)}'><td><a href='{e(link)}'>{e(label)}</a>"
                f"<br><small>{e(champion)}</small></td>"
                f"<td>{e(a.get('requested_by') or '')}<br><small>{e(when(a.get('requested_at')))}</small></td>"
                f"<td>{e(a.get('reason') or '')}</td><td>{gates_html(a.get('gates') or [])}</td>"
                f"<td>{button('approve', 'Approve', label, model=a['model'], version=str(a['version']))}</td></tr>"
            )
        parts.append(
            table(["Model", "Asked by", "Why", "Gates", ""], rows, "approvals waiting for you")
        )
    else:
        parts.append("<p class='empty'>Nothing is waiting for your approval.</p>")
    mine = approvals.get("mine") or []
    if mine:
        parts.append(
            "<h3 style='font-size:1rem'>Your requests, waiting</h3><ul>"
            + "".join(
                f"<li>{e(m['model'])} version {e(str(m['version']))} to @champion, asked "
                f"{e(when(m.get('requested_at')))}: waiting for {e(m.get('approvers') or 'an approver')}</li>"
                for m in mine
            )
            + "</ul>"
        )
    decided = (approvals.get("decided") or [])[:5]
    if decided:
        parts.append(
            "<h3 style='font-size:1rem'>Your requests, decided lately</h3><ul>"
            + "".join(
                f"<li>{e(d['model'])} version {e(str(d['version']))}: approved by "
                f"{e(d.get('approved_by') or '')} {e(when(d.get('approved_at')))}</li>"
                for d in decided
            )
            + "</ul>"
        )
    return "".join(parts)


def proposals_html(data: dict) -> str:
    proposals = data.get("proposals") or {}
    waiting, mine = proposals.get("to_review") or [], proposals.get("mine") or []

    def views(p):
        return ", ".join(v["name"] for v in p["definition"]["feature_views"]) or p["title"]

    parts = []
    if waiting:
        rows = [
            f"<tr data-proposal='{p['id']}'><td>{e(p['project'])}</td><td>{e(views(p))}</td>"
            f"<td>{e(p['proposed_by'])}<br><small>{e(when(p.get('proposed_at')))}</small></td></tr>"
            for p in waiting
        ]
        parts.append(
            table(["Project", "Feature views", "Proposed by"], rows, "feature proposals for you")
            + "<p><small>Review them in a notebook: <code>from hubml.widgets import "
            "FeatureBrowser; FeatureBrowser()</code></small></p>"
        )
    else:
        parts.append("<p class='empty'>No feature proposal waits for your review.</p>")
    if mine:
        parts.append(
            "<h3 style='font-size:1rem'>Your proposals, waiting</h3><ul>"
            + "".join(
                f"<li>{e(views(p))} to {e(p['project'])}, proposed {e(when(p.get('proposed_at')))}</li>"
                for p in mine
            )
            + "</ul>"
        )
    return "".join(parts)


def schedules_html(data: dict, settings, jobs_public: str) -> str:
    schedules = data.get("schedules") or []
    if not schedules:
        return (
            "<p class='empty'>No schedules yet. Make one from a notebook with the launcher's "
            "<b>Schedule this notebook</b> card.</p>"
        )
    rows = []
    for j in schedules:
        profile = settings.profile(j["profile"])
        nxt = (
            "<span class='paused'>Paused</span>"
            if j["paused"]
            else e(when(j.get("next_run_at")) or "on demand only")
        )
        last = j.get("last_run")
        last_html = (
            f"<span class='{'ok' if last['status'] == 'succeeded' else 'bad' if last['status'] in ('failed', 'timed_out') else ''}'>"
            f"{e(last['status'])}</span> <small>{e(when(last.get('finished_at') or last.get('created_at')))}</small>"
            if last
            else "<small>no run yet</small>"
        )
        toggle = (
            button("resume", "Resume", j["name"], id=j["id"])
            if j["paused"]
            else button("pause", "Pause", j["name"], id=j["id"])
        )
        rows.append(
            f"<tr data-job='{e(j['id'])}' data-name='{e(j['name'])}'><td><b>{e(j['name'])}</b><br>"
            f"<small>{e(j['notebook'])} · {e(profile.display_name if profile else j['profile'])}</small></td>"
            f"<td>{e(j.get('schedule_description') or 'on demand')}</td><td>{nxt}</td><td>{last_html}</td>"
            f"<td>{button('run', 'Run now', j['name'], id=j['id'])}{toggle}"
            + button(
                "reschedule",
                "Edit schedule",
                j["name"],
                id=j["id"],
                schedule=j.get("schedule") or "",
            )
            + button(
                "delete-schedule",
                "Delete",
                j["name"],
                confirm=f"Delete the schedule {j['name']}? Its run history is deleted too.",
                id=j["id"],
            )
            + "</td></tr>"
        )
    return table(["Job", "Schedule", "Next run", "Last run", ""], rows, "your schedules") + (
        f"<p><small>More (parameters, retries, history) on <a href='{e(jobs_public)}'>the schedules page</a>.</small></p>"
    )


def runs_html(data: dict) -> str:
    runs = data.get("runs") or []
    if not runs:
        return "<p class='empty'>No job runs yet.</p>"
    rows = []
    for r in runs:
        status = r["status"]
        kind = (
            "ok"
            if status == "succeeded"
            else "bad"
            if status in ("failed", "timed_out", "skipped")
            else ""
        )
        links = [
            f"<a href='{e(r['links']['html'])}'>output</a>",
            f"<a href='{e(r['links']['log'])}'>log</a>",
        ]
        if r.get("mlflow_url"):
            links.append(f"<a href='{e(r['mlflow_url'])}'>MLflow run</a>")
        rows.append(
            f"<tr data-run='{e(r['id'])}'><td>{e(r.get('job_name') or r['job_id'])}<br><small>{e(r['trigger'])}</small></td>"
            f"<td><span class='{kind}'>{e(status)}</span>"
            + (f"<br><small>{e(r['error'][:200])}</small>" if r.get("error") else "")
            + f"</td><td>{e(when(r.get('started_at') or r.get('created_at')))}</td>"
            f"<td>{e(took(r.get('duration_s')))}</td>"
            f"<td>{e(money(r.get('cost_usd')))}</td><td>{' · '.join(links)}</td></tr>"
        )
    return table(["Job", "Status", "Started", "Took", "Cost", ""], rows, "your recent runs")


def _shared_with(a: dict) -> str:
    access = a.get("access") or {}
    who = [*(access.get("users") or []), *(f"group {g}" for g in access.get("groups") or [])]
    links = sum(1 for s in a.get("shares") or [] if s.get("kind") == "link")
    if links:
        who.append(f"{links} link{'s' if links > 1 else ''}")
    return ", ".join(who) or "only you"


def apps_html(data: dict, apps_public: str) -> str:
    apps = data.get("apps") or []
    parts = []
    if apps:
        rows = []
        for a in apps:
            running = a.get("status") == "running"
            toggle = (
                button("stop-app", "Stop", a["name"], name=a["name"])
                if running
                else button("start-app", "Start", a["name"], name=a["name"])
            )
            visited = (
                f"{e(a['last_used_by'])} <small>{e(when(a.get('last_used_at')))}</small>"
                if a.get("last_used_by")
                else "<small>no visits yet</small>"
            )
            started = a.get("started_at") if running else ""
            rows.append(
                f"<tr data-app='{e(a['name'])}' data-started='{e(started or '')}' "
                f"data-price='{'' if not running or a.get('price_per_hour') is None else a['price_per_hour']}'>"
                f"<td><a href='{e(a['url'])}'>{e(a['name'])}</a><br><small>{e(a['url'])}</small></td>"
                f"<td>{e(a.get('status') or '')}"
                + (
                    f"<br><small>{e(a['stopped_reason'])}</small>"
                    if not running and a.get("stopped_reason")
                    else ""
                )
                + f"</td><td>{e(_shared_with(a))}</td><td>{visited}</td>"
                f"<td data-role='cost'>{e(money(a.get('cost_usd')))}</td>"
                f"<td>{toggle}"
                + button(
                    "delete-app",
                    "Delete",
                    a["name"],
                    confirm=f"Delete the app {a['name']}? Its link stops working for everyone it is shared with.",
                    name=a["name"],
                )
                + "</td></tr>"
            )
        parts.append(
            table(
                ["App", "Status", "Shared with", "Last visitor", "Cost so far", ""],
                rows,
                "your apps",
            )
        )
        parts.append(
            f"<p><small>Share, unshare and read logs in <a href='{e(apps_public)}'>the apps gallery</a>.</small></p>"
        )
    else:
        parts.append(
            "<p class='empty'>No apps yet. Share a demo from a notebook with the launcher's "
            "<b>Share an app</b> card.</p>"
        )
    shared = data.get("shared_with_me") or []
    if shared:
        parts.append(
            "<h3 style='font-size:1rem'>Shared with you</h3><ul>"
            + "".join(
                f"<li><a href='{e(a['url'])}'>{e(a['name'])}</a> <small>by {e(a['owner'])}"
                f" · {e(a.get('status') or '')}</small></li>"
                for a in shared
            )
            + "</ul>"
        )
    return "".join(parts)


def home_html(data: dict, settings) -> str:
    """The page's body (everything inside ``page_html``)."""
    mlflow_public = urls.service_public_url("mlflow")
    jobs_public = urls.service_public_url("jobs")
    apps_public = urls.service_public_url("apps")
    parts = [
        STYLE,
        f"<p>Signed in as <b>{e(data['user'])}</b>. What you run on the platform, what it costs, "
        "and what waits for you.</p>",
    ]
    jump = [("servers", "Servers")]
    if "approvals" in data:
        jump.append(("approvals", "Approvals"))
    if "schedules" in data:
        jump += [("schedules", "Schedules"), ("runs", "Recent runs")]
    if "apps" in data:
        jump.append(("apps", "Apps"))
    if "proposals" in data:
        jump.append(("proposals", "Feature proposals"))
    parts.append(
        "<nav class='jump'>" + "".join(f"<a href='#{k}'>{e(t)}</a>" for k, t in jump) + "</nav>"
    )
    month = data.get("month")
    if month:
        kinds = ", ".join(f"{k}s {money(v)}" for k, v in month["by_kind"].items() if v)
        parts.append(
            f"<p class='month'>This month so far: <b>{e(money(month['spent_usd']) or '$0')}</b>"
            + (f" ({e(kinds)})" if kinds else "")
            + f" · <a href='{e(urls.service_public_url('cost'))}'>what you spent</a></p>"
        )
        for warning in (month.get("budget") or {}).get("warnings") or []:
            parts.append(f"<p class='problem budget-warning' role='alert'>{e(warning)}</p>")
    elif data["problems"].get("month"):
        parts.append(
            f"<p class='problem'>This month's spend is not shown now: {e(data['problems']['month'])}.</p>"
        )
    parts.append("<p id='said' role='status' aria-live='polite'></p>")
    parts.append(section("servers", "Servers", data, lambda: servers_html(data)))
    if "approvals" in data:
        parts.append(
            section("approvals", "Approvals", data, lambda: approvals_html(data, mlflow_public))
        )
    if "schedules" in data:
        parts.append(
            section(
                "schedules", "Schedules", data, lambda: schedules_html(data, settings, jobs_public)
            )
        )
        parts.append(section("runs", "Recent runs", data, lambda: runs_html(data)))
    if "apps" in data:
        parts.append(section("apps", "Apps", data, lambda: apps_html(data, apps_public)))
    if "proposals" in data:
        parts.append(section("proposals", "Feature proposals", data, lambda: proposals_html(data)))
    parts.append(SCRIPT)
    return "".join(parts)
