"""The compute catalog as people see it: who may use what, and what it costs.

Pure functions over :class:`~hubml.hub_config.settings.Profile`; the spawn page, the ``hubml
profiles`` command, jobs and apps all describe compute the same way through these.
"""

from __future__ import annotations

from collections.abc import Iterable

from .settings import Profile


def visible_profiles(profiles: Iterable[Profile], groups: Iterable[str]) -> list[Profile]:
    """Profiles a member of ``groups`` may use, in catalog order."""
    groups = set(groups)
    return [p for p in profiles if p.allows(groups)]


class ProfileChoiceError(ValueError):
    """A requested profile that cannot be used: ``status`` 400 (malformed, unknown) or 403."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def choose_profile(profiles: list[Profile], slug, groups: Iterable[str], who: str) -> Profile:
    """The profile ``slug`` names, if ``who`` (a member of ``groups``) may use it.

    The one rule for every way compute is requested (the spawn form and REST API, jobs, apps),
    so every refusal reads the same. An empty ``slug`` means the catalog's default (or the first
    profile ``who`` may use).
    """
    allowed = visible_profiles(profiles, groups)
    valid = ", ".join(p.slug for p in allowed) or "(none)"
    if slug in (None, ""):
        if not allowed:
            raise ProfileChoiceError(
                403, f"{who} may not use any compute profile; ask an admin to add you to a group."
            )
        return next((p for p in allowed if p.default), allowed[0])
    if not isinstance(slug, str):
        raise ProfileChoiceError(
            400, f"'profile' must be a profile slug (a string); valid profiles: {valid}."
        )
    profile = next((p for p in profiles if p.slug == slug), None)
    if profile is None:
        raise ProfileChoiceError(400, f"Unknown profile {slug!r}. Valid profiles: {valid}.")
    if profile not in allowed:
        groups_text = ", ".join(profile.allowed_groups)
        raise ProfileChoiceError(
            403, f"Profile {slug!r} is limited to members of {groups_text}; {who} may use: {valid}."
        )
    return profile


def format_usd(amount: float) -> str:
    """``$29.36``; amounts under a dollar keep three decimals so cheap sizes don't read $0.10."""
    if 0 < amount < 1:
        return f"${amount:.3f}"
    return f"${amount:,.2f}"


def session_hours(profile: Profile, hours: float) -> float:
    """``hours``, or fewer when the profile stops sessions sooner (``max_runtime``)."""
    if profile.max_runtime:
        return min(float(hours), profile.max_runtime / 3600)
    return float(hours)


def estimate_cost(profile: Profile, hours: float) -> float:
    """What a session of ``hours`` costs at most: never more than the profile lets it run."""
    return round(profile.price_per_hour * session_hours(profile, hours), 2)


def format_estimate(profile: Profile, hours: float) -> str:
    """``8 h ≈ $29.36``; past the profile's limit, ``4 h (its limit) ≈ $14.68``."""
    capped = session_hours(profile, hours)
    limit = " (its limit)" if capped < hours else ""
    return f"{capped:g} h{limit} ≈ ${estimate_cost(profile, hours):,.2f}"


def format_duration(seconds: int) -> str:
    """``30 min``, ``8 h``, ``1 d 2 h``; 0 reads ``no limit``."""
    if not seconds:
        return "no limit"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days} d" if days else "",
        f"{hours} h" if hours else "",
        f"{minutes} min" if minutes else "",
    ]
    if not any(parts):
        return f"{secs} s"
    return " ".join(p for p in parts if p)


def format_cores(value: float) -> str:
    return f"{value:g}"


def describe_gpu(profile: Profile) -> str:
    """``1 × A100`` or ``No GPU``"""
    if not profile.gpu_model:
        return "No GPU"
    return f"{profile.gpu_count} × {profile.gpu_model}"


def describe_policy(profile: Profile) -> str:
    """``Stops after 30 min idle · at most 8 h per session``"""
    idle = (
        f"Stops after {format_duration(profile.idle_timeout)} idle"
        if profile.idle_timeout
        else "Never stopped for idleness"
    )
    runtime = (
        f"at most {format_duration(profile.max_runtime)} per session"
        if profile.max_runtime
        else "no session limit"
    )
    return f"{idle} · {runtime}"


def profile_summary(profile: Profile) -> dict:
    """A plain dict of what people need to know about a profile (``hubml profiles --json``)."""
    return {
        "slug": profile.slug,
        "display_name": profile.display_name,
        "description": profile.description,
        "cpu": {"guarantee": profile.cpu.guarantee, "limit": profile.cpu.limit},
        "memory": {"guarantee": profile.memory.guarantee, "limit": profile.memory.limit},
        "gpu": {"model": profile.gpu_model, "count": profile.gpu_count}
        if profile.gpu_model
        else None,
        "price_per_hour": profile.price_per_hour,
        "image": profile.image,
        "node_selector": dict(profile.node_selector),
        "tolerations": [t.model_dump(exclude_defaults=True) for t in profile.tolerations],
        "allowed_groups": list(profile.allowed_groups),
        "idle_timeout_s": profile.idle_timeout,
        "max_runtime_s": profile.max_runtime,
        "default": profile.default,
    }


def format_table(profiles: Iterable[Profile]) -> str:
    """The catalog as a fixed-width text table."""
    header = ("SLUG", "NAME", "CPU", "MEMORY", "GPU", "USD/H", "8 H", "GROUPS", "IDLE", "MAX")
    rows = [header]
    for p in profiles:
        rows.append(
            (
                p.slug,
                p.display_name,
                f"{format_cores(p.cpu.guarantee)}-{format_cores(p.cpu.limit)}",
                f"{p.memory.guarantee}-{p.memory.limit}",
                describe_gpu(p),
                format_usd(p.price_per_hour),
                f"${estimate_cost(p, 8):,.2f}",
                ",".join(p.allowed_groups) or "everyone",
                format_duration(p.idle_timeout),
                format_duration(p.max_runtime),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
