"""Who owns what in MLflow, as hubml records it: the tags, and who may change an owned thing.

Owners are stamped by the platform when a thing is created and nobody rewrites them through
MLflow (the front door refuses writes to these tags); an admin transfers ownership through the
registry API (``PUT …/hubml/api/owners``).

| thing | owner tag | who may change it |
|---|---|---|
| run | ``hubml.user`` (and ``mlflow.user``) | its user |
| experiment | ``hubml.owner`` | its creator; colleagues read it |
| logged model (MLflow 3) | ``hubml.user`` | its creator (the run's user) |
| registered model | ``hubml.owner`` + ``hubml.maintainers`` (groups) | its first publisher, its maintainer groups |
| webhooks, registry settings | — | admins |

Admins may change everything except where a rule says otherwise (``@champion`` moves only
through approval, even for admins).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

RUN_OWNER_TAGS = ("hubml.user", "mlflow.user")
EXPERIMENT_OWNER_TAG = "hubml.owner"
LOGGED_MODEL_OWNER_TAG = "hubml.user"
MODEL_OWNER_TAG = "hubml.owner"
MODEL_MAINTAINERS_TAG = "hubml.maintainers"
# the Default experiment (id 0) belongs to the platform: everyone may start runs in it
DEFAULT_EXPERIMENT_ID = "0"


def tag_map(tags) -> dict[str, str]:
    """MLflow tags as a dict, whichever shape they come in (REST list of {key, value}, dict)."""
    if isinstance(tags, Mapping):
        return {str(k): v for k, v in tags.items()}
    out = {}
    for t in tags or []:
        if isinstance(t, Mapping) and "key" in t:
            out[str(t["key"])] = t.get("value")
        elif hasattr(t, "key"):
            out[str(t.key)] = t.value
    return out


def run_owner(tags) -> str | None:
    tags = tag_map(tags)
    for key in RUN_OWNER_TAGS:
        if tags.get(key):
            return str(tags[key])
    return None


def experiment_owner(tags) -> str | None:
    return tag_map(tags).get(EXPERIMENT_OWNER_TAG) or None


def logged_model_owner(tags) -> str | None:
    return tag_map(tags).get(LOGGED_MODEL_OWNER_TAG) or None


def model_owner(tags) -> str | None:
    return tag_map(tags).get(MODEL_OWNER_TAG) or None


def model_maintainers(tags) -> list[str]:
    raw = tag_map(tags).get(MODEL_MAINTAINERS_TAG) or ""
    return [g.strip() for g in str(raw).split(",") if g.strip()]


def may_maintain_model(user: str, groups: Iterable[str], tags, admin: bool = False) -> bool:
    """May ``user`` (in ``groups``) change the registered model with these tags?"""
    if admin:
        return True
    owner = model_owner(tags)
    if owner is not None and owner == user:
        return True
    return bool(set(groups) & set(model_maintainers(tags)))


def describe_owners(tags) -> str:
    owner = model_owner(tags)
    groups = model_maintainers(tags)
    who = owner or "nobody (an admin may assign an owner)"
    return who + (f" and the group(s) {', '.join(groups)}" if groups else "")
