"""The "Schedule this notebook" panel: run it now or on a cron schedule, on a chosen profile.

Pre-filled from the calling notebook: its path (from the hubml server extension) and its
parameters (from the jobs service, which reads the cell tagged ``parameters``), shown as typed
inputs. The run history refreshes while runs are going. Everything goes through the jobs hub
service's API (``/services/jobs/api/``), which checks every value again on the server.
"""

from __future__ import annotations

import html
import json
import threading
import time

import ipywidgets as w

from .jobsclient import JobsAPIError, JobsClient

__all__ = ["JobsAPIError", "JobsClient", "SchedulePanel", "history_html"]

SCHEDULES = [
    ("Run once, now (no schedule)", "once"),
    ("Hourly (minute 0)", "0 * * * *"),
    ("Nightly (02:00)", "0 2 * * *"),
    ("Weekly (Monday 06:00)", "0 6 * * 1"),
    ("Custom cron…", "custom"),
]
ACTIVE = ("queued", "running")


def _budget_warnings() -> list[str]:
    """This person's budget warnings (80 % spent and more), from the cost service; none when
    there is no cost service or it does not answer (the panel works on without)."""
    import os

    if not os.environ.get("HUBML_COST_URL"):
        return []
    from .cost import CostError, cost

    try:
        return list((cost(timeout=5, retry_s=0).get("budget") or {}).get("warnings") or [])
    except (CostError, OSError, ValueError):
        return []
    except Exception:  # requests' errors: the panel does not depend on the ledger
        return []


def _usd(x: float | None) -> str:
    if x is None:
        return "–"
    return f"${x:,.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"


def _price(x: float) -> str:
    """A price per hour as the hub writes it: $0.097, $3.67."""
    return f"${x:.3f}" if 0 < x < 1 else f"${x:,.2f}"


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def history_html(runs: list[dict]) -> str:
    if not runs:
        return "<i>No runs yet.</i>"
    colours = {
        "succeeded": "#116329",
        "failed": "#82071e",
        "timed_out": "#82071e",
        "running": "#0550ae",
        "queued": "#57606a",
        "cancelled": "#57606a",
        "skipped": "#57606a",
    }
    rows = []
    for r in runs:
        links = []
        if r["status"] not in ("queued", "skipped"):
            links.append(
                f"<a class='hubml-run-html' href='{html.escape(r['links']['html'])}' target='_blank'>output</a>"
            )
            links.append(f"<a href='{html.escape(r['links']['log'])}' target='_blank'>log</a>")
        if r.get("mlflow_run_id"):
            links.append(f"<a href='{html.escape(r['mlflow_url'])}' target='_blank'>MLflow run</a>")
        error = f"<br><small>{html.escape(r['error'])}</small>" if r.get("error") else ""
        rows.append(
            f"<tr class='hubml-run-row' data-status='{html.escape(r['status'])}'>"
            f"<td>{html.escape(r.get('started_at') or r['scheduled_for'] or '')[:19].replace('T', ' ')}</td>"
            f"<td style='color:{colours.get(r['status'], '#000')}'><b>{r['status']}</b>{error}</td>"
            f"<td>{r['attempt']}</td><td>{_duration(r.get('duration_s'))}</td><td>{_usd(r.get('cost_usd'))}</td>"
            f"<td>{' · '.join(links)}</td></tr>"
        )
    return (
        "<table class='hubml-run-history' style='border-collapse:collapse'>"
        "<tr><th>started (UTC)</th><th>status</th><th>attempt</th><th>duration</th><th>cost</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _input_for(name: str, spec: dict):
    kind, default = spec["type"], spec["default"]
    label = f"{name} ({kind})"
    style = {"description_width": "160px"}
    if kind == "bool":
        return w.Checkbox(value=bool(default), description=label, style=style)
    if kind == "int":
        return w.IntText(
            value=default if isinstance(default, int) else 0, description=label, style=style
        )
    if kind == "float":
        return w.FloatText(value=float(default or 0), description=label, style=style)
    if kind == "str":
        return w.Text(value=default or "", description=label, style=style)
    return w.Text(value=json.dumps(default), description=f"{label} JSON", style=style)


def _value_of(spec: dict, widget):
    if spec["type"] in ("list", "dict", "any"):
        try:
            return json.loads(widget.value)
        except ValueError as e:
            raise ValueError(f"{widget.description}: not valid JSON ({e})") from None
    return widget.value


class SchedulePanel(w.VBox):
    """Run this notebook as a job now, or on a schedule, with its parameters.

    ``SchedulePanel()`` in a notebook; ``notebook=`` for another notebook; ``client=`` and
    ``read=`` (path -> the file's saved text) for tests.
    """

    def __init__(
        self,
        notebook: str | None = None,
        client: JobsClient | None = None,
        refresh_s: float = 1.0,
        read=None,
    ):
        self.client = client or JobsClient()
        self.read = read
        self.refresh_s = refresh_s
        self.job_ids: list[str] = []
        self.declared: dict[str, dict] = {}
        self.param_inputs: dict[str, w.Widget] = {}
        self.status = w.HTML("")
        self.path = w.Text(
            value=notebook or "", description="Notebook", layout=w.Layout(width="460px")
        )
        self.params_box = w.VBox([])
        self.profile = w.Dropdown(options=[], description="Profile", layout=w.Layout(width="460px"))
        self.not_here = w.HTML("")  # profiles this platform cannot run jobs on, and why
        # this notebook's schedules (also those made before this panel): pause, resume, delete
        self.schedules = w.VBox([])
        self.minutes = w.BoundedFloatText(
            value=10,
            min=0.1,
            max=7 * 24 * 60,
            description="Run length (min)",
            style={"description_width": "120px"},
        )
        self.schedule = w.Dropdown(
            options=SCHEDULES, value=None, description="Schedule", layout=w.Layout(width="460px")
        )
        self.cron = w.Text(
            value="0 2 * * *", description="Cron", layout=w.Layout(width="300px", display="none")
        )
        self.timezone = w.Text(value="UTC", description="Timezone", layout=w.Layout(width="300px"))
        self.preview = w.HTML("")
        self.cost = w.HTML("")
        self.run_button = w.Button(description="Run now", button_style="primary", icon="play")
        self.schedule_button = w.Button(description="Schedule", icon="clock-o")
        self.history = w.HTML("<i>No runs yet.</i>")
        self.runs_per_month = 0
        self.run_button.on_click(lambda _: self.run_now())
        self.schedule_button.on_click(lambda _: self.create_schedule())
        self.schedule.observe(lambda _: self._schedule_changed(), "value")
        self.schedule.value = "once"
        for widget in (self.cron, self.timezone):
            widget.observe(lambda _: self._schedule_changed(), "value")
        for widget in (self.profile, self.minutes):
            widget.observe(lambda _: self._show_cost(), "value")
        self.path.observe(lambda change: self._load_parameters(), "value")
        # a line about the form as it was (an error, "Scheduled") goes once the form changes
        self._loading = True
        for widget in (
            self.path,
            self.profile,
            self.minutes,
            self.schedule,
            self.cron,
            self.timezone,
        ):
            widget.observe(lambda _: self._form_changed(), "value")
        super().__init__(
            [
                w.HTML(
                    "<b>Schedule this notebook</b> <small>(runs the notebook as last saved, as a job of the hub: "
                    "it keeps running when your server stops)</small>"
                ),
                self.path,
                w.HTML("<b>Parameters</b>"),
                self.params_box,
                self.profile,
                self.not_here,
                self.minutes,
                self.schedule,
                self.cron,
                self.timezone,
                self.preview,
                self.cost,
                w.HBox([self.run_button, self.schedule_button]),
                self.status,
                self.schedules,
                self.history,
            ]
        )
        self.add_class("hubml-schedule-panel")
        threading.Thread(target=self._load, daemon=True).start()

    # -- loading -------------------------------------------------------------------------------

    def _form_changed(self) -> None:
        if not self._loading:
            self.status.value = ""

    def _say(self, message: str, kind: str = "info") -> None:
        colour = {"info": "#57606a", "error": "#82071e", "ok": "#116329"}[kind]
        self.status.value = f"<span class='hubml-status-{kind}' style='color:{colour}'>{html.escape(message)}</span>"

    def _load(self) -> None:
        # a path found here loads the parameters through its observer; only a given one needs it
        given = bool(self.path.value)
        try:
            if not given:
                from hubml.kernels.context import ContextUnavailable, notebook

                try:
                    self.path.value = notebook(with_content=False)["path"]
                except ContextUnavailable as e:
                    self._say(f"Type the notebook's path: {e}")
            offered = self.client.request("GET", "profiles")["profiles"]
            profiles = [p for p in offered if not p.get("why_not_here")]
            self.not_here.value = "".join(
                f"<small class='hubml-not-here'>Not offered: {html.escape(p['display_name'])}"
                f" ({html.escape(p['why_not_here'])})</small><br>"
                for p in offered
                if p.get("why_not_here")
            )
            self.prices = {p["slug"]: p["price_per_hour"] for p in profiles}
            self.budget_warnings = _budget_warnings()
            self.profile.options = [
                (f"{p['display_name']} · {_price(p['price_per_hour'])}/h", p["slug"])
                for p in profiles
            ]
            default = next(
                (p["slug"] for p in profiles if p.get("default")),
                profiles[0]["slug"] if profiles else None,
            )
            self.profile.value = default
            if given:
                self._load_parameters()
            self._load_schedules()
            self._refresh_history()
        except Exception as e:
            self._say(str(e), "error")
        finally:
            self._loading = False

    def _load_parameters(self) -> None:
        if not self.path.value:
            return
        try:
            info = self.client.request("POST", "notebook", body=self._notebook())
        except (JobsAPIError, ValueError) as e:
            self.params_box.children = [
                w.HTML(f"<span style='color:#82071e'>{html.escape(str(e))}</span>")
            ]
            return
        self.declared = info["parameters"]
        self.param_inputs = {name: _input_for(name, spec) for name, spec in self.declared.items()}
        self.params_box.children = list(self.param_inputs.values()) or [
            w.HTML(
                "<i>No cell tagged 'parameters' in this notebook: it runs as it is. To set values "
                "per run, right-click the cell that assigns them, choose <b>Make This the "
                "Parameters Cell</b>, and save.</i>"
            )
        ]

    def _schedule_changed(self) -> None:
        custom = self.schedule.value == "custom"
        self.cron.layout.display = "" if custom else "none"
        expr = self.cron.value if custom else self.schedule.value
        if expr == "once":
            self.preview.value = "<small>Runs once, as soon as you click Run now.</small>"
            self.runs_per_month = 0
            self._show_cost()
            return
        try:
            p = self.client.request(
                "GET", "cron", params={"schedule": expr, "timezone": self.timezone.value}
            )
        except JobsAPIError as e:
            self.preview.value = f"<span style='color:#82071e'>{html.escape(str(e))}</span>"
            return
        nxt = ", ".join(t[:16].replace("T", " ") for t in p["next_runs"])
        self.runs_per_month = p.get("runs_per_month", 0)
        self.preview.value = (
            f"<small><b>{html.escape(p['description'])}</b>; next (UTC): {nxt}</small>"
        )
        self._show_cost()

    def _show_cost(self) -> None:
        price = getattr(self, "prices", {}).get(self.profile.value)
        if price is None:
            self.cost.value = ""
            return
        # once this notebook has finished runs, their median duration is the estimate, not
        # the typed run length (which stays the run's limit)
        typical = getattr(self, "typical_s", None)
        minutes = typical / 60 if typical else self.minutes.value
        basis = f"median of {self.typical_n} runs: {_duration(typical)}" if typical else ""
        per_run = price * minutes / 60
        month = (
            f"; ≈ {_usd(per_run * self.runs_per_month)} per month ({self.runs_per_month} runs)"
            if self.runs_per_month
            else ""
        )
        basis = f" ({basis})" if basis else ""
        warnings = "".join(
            f"<br><small class='hubml-budget-warning' style='color:#9a6700'>{html.escape(w)} "
            "A run its budget cannot pay for is skipped.</small>"
            for w in getattr(self, "budget_warnings", [])
        )
        self.cost.value = (
            f"<small>≈ {_usd(per_run)} per run{basis} at {_price(price)}/h{month}</small>"
            + warnings
        )

    # -- actions -------------------------------------------------------------------------------

    def _notebook(self) -> dict:
        """The notebook as last saved, read through this server: the jobs service never reads
        homes, so the request carries it."""
        from hubml.kernels.context import ContextUnavailable, saved_text

        try:
            return {
                "notebook": self.path.value,
                "content": (self.read or saved_text)(self.path.value),
            }
        except ContextUnavailable as e:
            raise ValueError(str(e)) from None

    def _body(self, schedule) -> dict:
        params = {
            name: _value_of(self.declared[name], widget)
            for name, widget in self.param_inputs.items()
        }
        return {
            **self._notebook(),
            "parameters": params,
            "profile": self.profile.value,
            "schedule": schedule,
            "timezone": self.timezone.value or "UTC",
        }

    def run_now(self) -> dict | None:
        """Create a one-off job (it runs at once); returns it."""
        return self._create(None)

    def create_schedule(self) -> dict | None:
        expr = self.cron.value if self.schedule.value == "custom" else self.schedule.value
        if expr == "once":
            self._say("Choose a schedule first (or click Run now).", "error")
            return None
        return self._create(expr)

    def _create(self, schedule) -> dict | None:
        self.run_button.disabled = self.schedule_button.disabled = True
        try:
            job = self.client.request("POST", "jobs", body=self._body(schedule))
        except (JobsAPIError, ValueError) as e:
            self._say(str(e), "error")
            return None
        finally:
            self.run_button.disabled = self.schedule_button.disabled = False
        self.job_ids.append(job["id"])
        self._load_schedules()
        if schedule:
            self._say(
                f"Scheduled: {job.get('schedule_description', schedule)}; next run {job['next_run_at']}",
                "ok",
            )
        else:
            self._say("Run started; it continues if you close this notebook.", "ok")
        self._refresh_history(follow=True)
        return job

    def _load_schedules(self) -> None:
        """This notebook's jobs, made here or before: their runs join the history, and each
        schedule gets Pause/Resume and Delete."""
        if not self.path.value:
            return
        mine = [
            j
            for j in self.client.request("GET", "jobs")["jobs"]
            if j["notebook"] == self.path.value
        ]
        for j in mine:
            if j["id"] not in self.job_ids:
                self.job_ids.append(j["id"])
        rows = []
        for j in (j for j in mine if j.get("schedule")):
            when = (
                "<b style='color:#9a6700'>paused</b>"
                if j.get("paused")
                else f"next run {html.escape((j.get('next_run_at') or '')[:16].replace('T', ' '))} UTC"
            )
            toggle = w.Button(
                description="Resume" if j.get("paused") else "Pause", layout=w.Layout(width="90px")
            )
            toggle.add_class("hubml-schedule-toggle")
            toggle.on_click(lambda _, j=j: self._patch_schedule(j["id"], not j.get("paused")))
            remove = w.Button(description="Delete", layout=w.Layout(width="90px"))
            remove.add_class("hubml-schedule-delete")
            remove.on_click(lambda _, j=j: self._delete_schedule(j))
            label = html.escape(j.get("schedule_description") or j["schedule"])
            rows.append(
                w.HBox(
                    [
                        w.HTML(f"<span class='hubml-schedule-row'>{label} · {when}</span>"),
                        toggle,
                        remove,
                    ]
                )
            )
        self.schedules.children = (
            [w.HTML("<b>Schedules of this notebook</b>"), *rows] if rows else []
        )

    def _patch_schedule(self, job_id: str, paused: bool) -> None:
        try:
            self.client.request("PATCH", f"jobs/{job_id}", body={"paused": paused})
            self._say("Paused: no run starts until you resume it." if paused else "Resumed.", "ok")
        except JobsAPIError as e:
            self._say(str(e), "error")
        self._load_schedules()

    def _delete_schedule(self, job: dict) -> None:
        try:
            self.client.request("DELETE", f"jobs/{job['id']}")
            self._say(
                f"Deleted the schedule {job.get('schedule_description') or job['schedule']}.", "ok"
            )
            if job["id"] in self.job_ids:
                self.job_ids.remove(job["id"])
        except JobsAPIError as e:
            self._say(str(e), "error")
        self._load_schedules()
        self._refresh_history()

    def _refresh_history(self, follow: bool = False) -> None:
        def fetch():
            runs = []
            for job_id in self.job_ids:
                runs += self.client.request("GET", f"jobs/{job_id}/runs")["runs"]
            runs.sort(key=lambda r: r["created_at"], reverse=True)
            took = sorted(
                r["duration_s"] for r in runs if r["status"] == "succeeded" and r.get("duration_s")
            )
            if took:
                self.typical_s, self.typical_n = took[len(took) // 2], len(took)
                self._show_cost()
            self.history.value = history_html(runs)
            return runs

        def follow_loop():
            while True:
                try:
                    runs = fetch()
                except JobsAPIError as e:
                    self._say(str(e), "error")
                    return
                if not any(r["status"] in ACTIVE for r in runs):
                    return
                time.sleep(self.refresh_s)

        if follow:
            threading.Thread(target=follow_loop, daemon=True).start()
        elif self.job_ids:
            fetch()
