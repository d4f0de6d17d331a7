"""What every hubml spawner shares: the catalog, the selector form, profile validation, progress.

A spawner class mixes :class:`ProfileSpawnerMixin` in front of a JupyterHub spawner and
implements :meth:`~ProfileSpawnerMixin.apply_profile` (turn a validated profile into its own
traits) and :meth:`~ProfileSpawnerMixin.profile_availability` (what the card says about
capacity). The user's choice arrives as ``user_options = {"profile": "<slug>"}`` from the form or
the REST API and is validated here, on the server, either way.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tornado import web
from traitlets import Dict, Float, HasTraits, List, Unicode, default

from ..catalog import (
    ProfileChoiceError,
    choose_profile,
    describe_gpu,
    describe_policy,
    format_cores,
    format_estimate,
    format_usd,
    visible_profiles,
)
from ..settings import Profile


class QuietRefusals(logging.Filter):
    """A spawn hubml refuses on purpose (a 4xx from its options: an unknown or forbidden
    profile, a busy GPU) is one line in the hub's log, not a traceback: JupyterHub logs every
    exception of ``apply_user_options`` with its stack, and the person has already been told."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.HTTPError) and exc.status_code < 500:
            record.msg, record.args = (
                "%s: refused (%s): %s",
                (
                    record.getMessage(),
                    exc.status_code,
                    getattr(exc, "jupyterhub_message", None) or exc.log_message or exc.reason,
                ),
            )
            record.exc_info = record.exc_text = None
        return True


def quiet_refusals(logger: logging.Logger) -> None:
    if not any(isinstance(f, QuietRefusals) for f in logger.filters):
        logger.addFilter(QuietRefusals())


TEMPLATES = Path(__file__).parent.parent / "templates"
# a published app runs on its owner's named server app-<name> (extensions/apps/store.py)
APP_SERVER_PREFIX = "app-"


def http_error(status: int, message: str) -> web.HTTPError:
    """An HTTPError whose message JupyterHub shows as is (API JSON, spawn page, progress)."""
    e = web.HTTPError(status, message.replace("%", "%%"))
    e.jupyterhub_message = message
    return e


class Availability:
    """What a card says about capacity; ``ok=False`` disables the card."""

    def __init__(self, ok: bool, text: str, kind: str = "ok"):
        self.ok, self.text, self.kind = ok, text, kind


class ProfileSpawnerMixin(HasTraits):
    """Catalog-driven profile selection for a JupyterHub spawner."""

    apps_runtime_url = Unicode(
        "",
        help="""The apps service's URL as an app's server reaches it (".../services/apps/"). An
        app's server fetches its bundle there and reports its log and visitors there, with its
        own token: the hub and the app's server never share files with the apps service.""",
    ).tag(config=True)

    app_python = Unicode(
        help="The Python that runs an app's launcher (in the server's image)."
    ).tag(config=True)

    @default("app_python")
    def _default_app_python(self):
        import sys

        return sys.executable

    catalog = List(
        Dict(),
        help="""
        The compute catalog: a list of profile dicts as in hub_config/catalog.yaml (slug,
        display_name, cpu, memory, gpu, price_per_hour, image, allowed_groups, ...).
        Set by hubml's configurer from the validated settings; validated again on load.
        """,
    ).tag(config=True)

    cost_service_url = Unicode(
        "",
        help="""The cost service's URL (".../services/cost/"); when set, every start is checked
        against the person's budgets there first (``api/check``).""",
    ).tag(config=True)

    cost_service_token = Unicode(
        "", help="The token the hub asks the cost service's budget checks with."
    ).tag(config=True)

    estimate_hours = Float(
        8.0,
        help="Session length (hours) the spawn page uses for its first cost estimate.",
    ).tag(config=True)

    estimate_hour_choices = List(
        [1, 4, 8, 24, 40],
        help="Session lengths (hours) people can pick on the spawn page to re-estimate costs.",
    ).tag(config=True)

    profile_events = List(help="Progress events of the current spawn, in order.")

    @property
    def profiles(self) -> list[Profile]:
        cached = getattr(self, "_hubml_profiles", None)
        if cached is None or cached[0] is not self.catalog:
            cached = (self.catalog, [Profile.model_validate(p) for p in self.catalog])
            self._hubml_profiles = cached
        return cached[1]

    @property
    def user_groups(self) -> set[str]:
        return {g.name for g in self.user.groups}

    def allowed_profiles(self) -> list[Profile]:
        return visible_profiles(self.profiles, self.user_groups)

    # -- the hooks a concrete spawner provides ------------------------------------------------

    def profile_availability(self, profile: Profile) -> Availability:
        return Availability(True, "Available")

    async def apply_profile(self, profile: Profile) -> None:
        raise NotImplementedError

    # -- validation --------------------------------------------------------------------------

    def resolve_profile(self, user_options) -> Profile:
        """The profile ``user_options`` asks for, checked against the catalog and the user.

        Raises HTTP 400 for malformed or unknown choices and 403 for a profile of a group the
        user is not in. An empty request means the catalog's default (or the first allowed).
        """
        if not isinstance(user_options, dict):
            raise http_error(
                400, 'Server options must be a JSON object such as {"profile": "cpu-small"}.'
            )
        unknown = sorted(k for k in user_options if k not in ("profile", "app"))
        if unknown:
            raise http_error(
                400,
                f"Unknown server option(s): {', '.join(unknown)}. The options are 'profile' (and 'app' for published apps).",
            )
        slug = user_options.get("profile")
        if isinstance(slug, list) and len(slug) == 1:  # raw form data
            slug = slug[0]
        try:
            return choose_profile(self.profiles, slug, self.user_groups, self.user.name)
        except ProfileChoiceError as e:
            raise http_error(e.status, str(e)) from None

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return type(self)._hubml_apply_user_options

    async def _hubml_apply_user_options(self, user_options):
        self.profile_events = []
        self._spawn_finished = False
        try:
            profile = self.resolve_profile(user_options)
            await self.check_budget(profile)
            self.profile_slug = profile.slug
            self.emit(
                f"Preparing {profile.display_name} ({format_usd(profile.price_per_hour)}/h)", 5
            )
            await self.apply_profile(profile)
            # the start the hub counts the cost from (its home page), for JupyterLab's status bar
            self.environment = {**self.environment, "HUBML_SERVER_STARTED_AT": self._started_iso()}
            app = user_options.get("app") if isinstance(user_options, dict) else None
            if app is None and self.name.startswith(APP_SERVER_PREFIX):
                # an app's server runs its app, however it is started (the hub's "Launch"
                # button, REST without options, a restart): never a Jupyter server, which its
                # shares would open to the people the app was shared with
                app = self.name[len(APP_SERVER_PREFIX) :]
            if app is not None:
                self.apply_app(app)
        except Exception:
            self._spawn_finished = True
            raise

    async def budget_answer(self, profile: Profile) -> dict | None:
        """The cost service's word on starting ``profile`` now (None: no budgets here, or the
        service does not answer: the start is not held back by a ledger that is away)."""
        if not self.cost_service_url:
            return None
        from hubml.extensions.cost.check import Unanswered, ask

        try:
            return await ask(
                self.cost_service_url,
                self.cost_service_token,
                self.user.name,
                profile.slug,
                groups=list(self.user_groups),
            )
        except Unanswered as e:
            self.log.warning("budgets not checked for %s (the cost service: %s)", self._log_name, e)
            return None

    async def check_budget(self, profile: Profile) -> None:
        """Refuse (403, in words) a start its budgets cannot pay for; else note the warnings."""
        answer = await self.budget_answer(profile)
        if answer is None:
            return
        if not answer.get("allowed", True):
            raise http_error(403, answer.get("message") or "over budget")
        for warning in answer.get("warnings") or []:
            self.emit(warning, 3)

    def apply_app(self, app) -> None:
        """Run the user's published app ``app`` instead of a Jupyter server (apps service).

        Only on the named server ``app-<app>``: the launcher serves the Gradio app and no Jupyter
        API at all, and fetches the owner's bundle from the apps service with the server's token.
        """
        import re

        if not isinstance(app, str) or not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", app):
            raise http_error(400, "'app' must be an app name (lowercase letters, digits and '-').")
        if self.name != f"{APP_SERVER_PREFIX}{app}":
            raise http_error(
                400,
                f"An app runs on its own named server 'app-{app}', not on {self.name or 'the default server'!r}.",
            )
        if not self.apps_runtime_url:
            raise http_error(400, "Apps are not enabled on this hub (no apps service).")
        self.cmd = [self.app_python, "-m", "hubml.extensions.apps.launcher"]
        self.args = []
        self.environment = {
            **self.environment,
            "HUBML_APP_NAME": app,
            "HUBML_APP_RUNTIME_URL": f"{self.apps_runtime_url.rstrip('/')}/api/apps/{app}/runtime/",
        }
        self.emit(f"Starting app {app}", 20)

    def get_env(self):
        env = super().get_env()
        if env.get("MLFLOW_TRACKING_URI") and self.api_token:
            # plain `mlflow` calls in kernels authenticate to the hub's mlflow service
            env["MLFLOW_TRACKING_TOKEN"] = self.api_token
        env["HUBML_USER"] = self.user.name
        return env

    # -- progress ----------------------------------------------------------------------------

    def emit(self, message: str, progress: int) -> None:
        self.log.info("%s: %s", self._log_name, message)
        self.profile_events = [*self.profile_events, {"progress": progress, "message": message}]

    async def progress(self):
        sent = 0
        while True:
            events = self.profile_events
            while sent < len(events):
                yield events[sent]
                sent += 1
            if getattr(self, "_spawn_finished", True) and sent >= len(self.profile_events):
                break
            await asyncio.sleep(0.1)

    # -- what the hub's home page says about a running server ---------------------------------

    def running_summary(self) -> dict | None:
        """The profile, GPU and price of this server while it runs, and when it started (for
        the hub's home page, which counts the cost so far); None when it is not running."""
        if not self.active:
            return None
        slug = (
            (self.user_options or {}).get("profile")
            if isinstance(self.user_options, dict)
            else None
        )
        profile = next((p for p in self.profiles if p.slug == (slug or self.profile_slug)), None)
        if profile is None:
            return None
        devices = list(getattr(self, "gpu_devices", []) or [])
        gpu = describe_gpu(profile)
        if devices:
            gpu += " (" + ", ".join(f"GPU {i}" for i in devices) + ")"
        return {
            "server": self.name,
            "what": "app" if self.name.startswith(APP_SERVER_PREFIX) else "server",
            "profile": profile.display_name,
            "gpu": gpu,
            "price": format_usd(profile.price_per_hour),
            "price_per_hour": profile.price_per_hour,
            "started": self._started_iso(),
            "limit": describe_policy(profile),
        }

    def _started_iso(self) -> str:
        """When the hub started this server (UTC, ISO 8601 with ``Z``); ``""`` if not known."""
        started = getattr(self.orm_spawner, "started", None)
        return started.replace(tzinfo=None).isoformat() + "Z" if started else ""

    # -- the selector ------------------------------------------------------------------------

    def make_cards(self) -> list[dict]:
        allowed = self.allowed_profiles()
        previous = (
            (self.user_options or {}).get("profile")
            if isinstance(self.user_options, dict)
            else None
        )
        cards = []
        for p in allowed:
            availability = self.profile_availability(p)
            cards.append(
                {
                    "slug": p.slug,
                    "display_name": p.display_name,
                    "description": p.description,
                    "cpu": f"{format_cores(p.cpu.guarantee)} cores guaranteed, up to {format_cores(p.cpu.limit)}",
                    "memory": f"{p.memory.guarantee} guaranteed, up to {p.memory.limit}",
                    "gpu": describe_gpu(p),
                    "price": format_usd(p.price_per_hour),
                    "price_per_hour": p.price_per_hour,
                    "max_hours": p.max_runtime / 3600 if p.max_runtime else 0,
                    "estimate": format_estimate(p, self.estimate_hours),
                    "policy": describe_policy(p),
                    "available": availability.ok,
                    "availability": availability.text,
                    "availability_class": availability.kind,
                    "checked": False,
                }
            )
        choice = next((c for c in cards if c["available"] and c["slug"] == previous), None)
        choice = choice or next(
            (c for c, p in zip(cards, allowed, strict=True) if c["available"] and p.default), None
        )
        choice = choice or next((c for c in cards if c["available"]), None)
        if choice:
            choice["checked"] = True
        return cards

    @default("options_form")
    def _default_options_form(self):
        return type(self)._options_form

    def _options_form(self):
        """The selector: at once, or (with budgets to tell of) once the cost service answered."""
        if not self.cost_service_url:
            return self._render_options_form()
        return self._options_form_with_budget()

    async def _options_form_with_budget(self) -> str:
        allowed = self.allowed_profiles()
        answer = await self.budget_answer(allowed[0]) if allowed else None
        return self._render_options_form(
            budget_warnings=(answer or {}).get("warnings") or [],
            budgets=(answer or {}).get("budgets") or [],
        )

    def _render_options_form(self, budget_warnings=(), budgets=()) -> str:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
        hours = self.estimate_hours
        cards = self.make_cards()
        return env.get_template("options_form.html").render(
            cards=cards,
            hours=int(hours) if float(hours).is_integer() else hours,
            hour_choices=self.hour_choices(cards),
            budget_warnings=list(budget_warnings),
            budgets=[
                {**b, "left": format_usd(b["left_usd"]), "budget": format_usd(b["budget_usd"])}
                for b in budgets
            ],
        )

    def hour_choices(self, cards: list[dict]) -> list[float]:
        """The session lengths worth offering: none longer than any profile here may run (the
        longest limit itself is offered); all of them when some profile has no limit."""
        limits = [c["max_hours"] for c in cards]
        if not limits or not all(limits):
            return list(self.estimate_hour_choices)
        longest = max(limits)
        longest = int(longest) if float(longest).is_integer() else longest
        offered = [h for h in self.estimate_hour_choices if h < longest]
        return [*offered, longest]

    @default("options_from_form")
    def _default_options_from_form(self):
        return _profile_from_form


def _profile_from_form(form_data):
    slug = form_data.get("profile", [""])
    return {"profile": slug[0] if isinstance(slug, list) and slug else slug}
