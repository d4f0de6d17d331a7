"""The jobs service's page for people (``/services/jobs/``, the hub's Services menu): your
schedules, when they run next and how the last run went, with run now, pause, resume, edit
and delete. The page calls the service's own API with the session's XSRF token; it shows only
the signed-in person's jobs (an admin too: other people's jobs are theirs to manage).
"""

from __future__ import annotations

import html

from sqlalchemy import select

from hubml.extensions.common.handlers import ServiceHandler, page_html

from .db import jobs, runs
from .models import job_model

STYLE = """
<style>
  table.jobs { border-collapse: collapse; width: 100%; margin: 1rem 0; }
  .jobs th, .jobs td { text-align: left; padding: .5rem .4rem; border-bottom: 1px solid #d0d7de;
                       vertical-align: top; }
  .jobs th { font-weight: 600; color: #57606a; font-size: .9rem; }
  .jobs button { margin: 0 .3rem .3rem 0; }
  .jobs .edit input { width: 9rem; font-family: monospace; }
  .status-succeeded { color: #116329; } .status-failed, .status-timed_out { color: #82071e; }
  .paused { color: #9a6700; font-weight: 600; }
  #said { padding: .5rem .8rem; border-radius: 6px; }
  #said.error { background: #ffebe9; color: #82071e; } #said.ok { background: #dafbe1; }
</style>
"""

SCRIPT = """
<script>
(function () {
  var base = document.body.getAttribute("data-base");
  var xsrf = document.body.getAttribute("data-xsrf");
  var said = document.getElementById("said");
  function say(text, kind) { said.textContent = text; said.className = kind; }
  async function call(method, path, body) {
    var r = await fetch(base + path, {
      method: method, credentials: "same-origin",
      headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body)
    });
    var data = {};
    try { data = await r.json(); } catch (e) {}
    if (!r.ok) throw new Error(data.message || ("HTTP " + r.status));
    return data;
  }
  document.querySelectorAll("tr[data-job]").forEach(function (row) {
    var id = row.getAttribute("data-job"), name = row.getAttribute("data-name");
    row.querySelectorAll("button[data-act]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var act = button.getAttribute("data-act");
        try {
          if (act === "run") {
            await call("POST", "api/jobs/" + id + "/runs", {});
            say("A run of " + name + " is queued.", "ok");
            return;
          }
          if (act === "pause" || act === "resume") {
            await call("PATCH", "api/jobs/" + id, {paused: act === "pause"});
          } else if (act === "save") {
            var expr = row.querySelector("input[name=schedule]").value;
            await call("PATCH", "api/jobs/" + id, {schedule: expr});
          } else if (act === "delete") {
            if (!window.confirm("Delete the schedule " + name + "? Its run history is deleted too.")) return;
            await call("DELETE", "api/jobs/" + id);
          }
          window.location.reload();
        } catch (e) {
          say(name + ": " + e.message, "error");
        }
      });
    });
  });
})();
</script>
"""


def _last_runs(conn, job_ids: list[str]) -> dict:
    last = {}
    for job_id in job_ids:
        last[job_id] = conn.execute(
            select(runs).where(runs.c.job_id == job_id).order_by(runs.c.created_at.desc()).limit(1)
        ).first()
    return last


def _when(iso: str | None) -> str:
    """``2026-12-02 18:16 UTC`` from the API's ISO time."""
    return f"{iso[:16].replace('T', ' ')} UTC" if iso else ""


def _row(ctx, model: dict) -> str:
    e = html.escape
    profile = ctx.settings.profile(model["profile"])
    when = (
        "<span class='paused'>Paused</span>"
        if model["paused"]
        else e(_when(model["next_run_at"]) or "on demand only")
    )
    last = model.get("last_run")
    if last:
        cost = f" · ${last['cost_usd']:.3f}" if last.get("cost_usd") is not None else ""
        took = f" · {last['duration_s']:.0f} s" if last.get("duration_s") is not None else ""
        last_html = (
            f"<span class='status-{e(last['status'])}'>{e(last['status'])}</span>{took}{cost}<br>"
            f"<small><a href='{e(last['links']['html'])}'>output</a> · "
            f"<a href='{e(last['links']['log'])}'>log</a>"
            + (f" · <a href='{e(last['mlflow_url'])}'>MLflow run</a>" if last["mlflow_url"] else "")
            + "</small>"
        )
    else:
        last_html = "<small>no run yet</small>"
    schedule = model.get("schedule_description") or "on demand"
    toggle = (
        "<button data-act='resume'>Resume</button>"
        if model["paused"]
        else "<button data-act='pause'>Pause</button>"
    )
    return (
        f"<tr data-job='{e(model['id'])}' data-name='{e(model['name'])}'>"
        f"<td><b>{e(model['name'])}</b><br><small>{e(model['notebook'])} · "
        f"{e(profile.display_name if profile else model['profile'])}</small></td>"
        f"<td>{e(schedule)}<div class='edit'><input name='schedule' aria-label='cron schedule of "
        f"{e(model['name'])}' value='{e(model['schedule'] or '')}'> "
        f"<button data-act='save'>Save</button></div></td>"
        f"<td>{when}</td><td>{last_html}</td>"
        f"<td><button data-act='run'>Run now</button>{toggle}"
        f"<button data-act='delete'>Delete</button></td></tr>"
    )


class SchedulesPage(ServiceHandler):
    """``/services/jobs/``: the signed-in person's schedules, to see and manage."""

    page = True

    async def get(self):
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(
                select(jobs)
                .where(jobs.c.owner == self.user_name)
                .order_by(jobs.c.created_at.desc())
            ).all()
            last = _last_runs(conn, [j.id for j in rows])
        models = [job_model(self.ctx, j, last.get(j.id)) for j in rows]
        if models:
            table = (
                "<table class='jobs'><thead><tr><th>Job</th><th>Schedule</th><th>Next run</th>"
                "<th>Last run</th><th></th></tr></thead><tbody>"
                + "".join(_row(self.ctx, m) for m in models)
                + "</tbody></table>"
            )
        else:
            table = (
                "<p>No schedules yet. Make one from a notebook: <code>from hubml.widgets import "
                "SchedulePanel; SchedulePanel()</code>.</p>"
            )
        body = (
            STYLE
            + f"<p>Signed in as <b>{html.escape(self.user_name)}</b>. Notebooks that run on a "
            "schedule or on demand, without your server.</p>"
            "<p id='said' role='status' aria-live='polite'></p>"
            + table
            + f"<p><small>The same as JSON: <a href='{html.escape(self.ctx.public)}api/jobs'>"
            "api/jobs</a></small></p>" + SCRIPT
        )
        page = page_html("Your schedules", body)
        # the script reads where the API is and the session's XSRF token from the page itself
        attrs = (
            f"<body data-base='{html.escape(self.ctx.public)}' "
            f"data-xsrf='{html.escape(self.xsrf_token.decode())}'>"
        )
        page = page.replace("<h1>", attrs + "<h1>", 1)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)
