"""Promotion requests as people meet them: the approver's inbox and the author's "waiting".

Read from the audit log alone (every request and approval is there, in order): a request of
``@champion`` for a version is open until that version becomes ``@champion`` (an approval), is
deleted, or is asked again (the newer request replaces it). For each open request the service
says whether the person asking may approve it, by the same rule the approval itself applies
(:func:`.permissions.check_may_approve`), so the inbox never offers an approval that would fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .permissions import Actor, check_may_approve
from .policy import GatePolicy
from .store import aliases_of, get_registered_model
from .validation import CHAMPION, RegistryError, validate_user
from .versions import authors_of, require_gated_version

RECENT_DECISIONS = 20


def _state(entries) -> tuple[dict, dict]:
    """(open requests, decisions) keyed by (model, version), from the log in order."""
    open_: dict[tuple[str, str], Any] = {}
    decided: dict[tuple[str, str], tuple[Any, Any]] = {}
    for e in entries:
        key = (e.model, str(e.to_version) if e.to_version is not None else "")
        if e.action == "request_promotion" and e.alias == CHAMPION:
            open_[key] = e
        elif e.action == "approve" and e.alias == CHAMPION and key in open_:
            decided[key] = (open_.pop(key), e)
        elif e.action == "delete_version":
            gone = (e.model, str(e.from_version or e.to_version or ""))
            open_.pop(gone, None)
    return open_, decided


def approvers_of(policy: GatePolicy) -> str:
    """Who may approve a request under ``policy``, as people read it."""
    if policy.approver_group:
        return f"members of group {policy.approver_group}"
    return "anyone but its author"


def promotion_facts(service, name: str, version: str) -> tuple[str, str | None]:
    """(who may approve ``name``'s requests, who asked for ``version`` last), for notices."""
    model = get_registered_model(service.client, name)
    policy = GatePolicy.from_tags(model.tags) if model is not None else GatePolicy()
    author = None
    for e in service.audit.entries(name):
        if e.action == "request_promotion" and str(e.to_version) == str(version):
            author = e.actor
    return approvers_of(policy), author


def promotions(service, user: str, groups: Iterable[str] = ()) -> dict:
    """``to_approve``: open requests ``user`` may approve; ``mine``: ``user``'s open requests,
    with who may approve them; ``decided``: ``user``'s requests approved lately (newest first)."""
    user = validate_user(user)
    actor = Actor.of(user, groups)
    open_, decided = _state(service.audit.entries())
    to_approve, mine = [], []
    models: dict[str, Any] = {}
    for (name, version), request in sorted(open_.items(), key=lambda kv: kv[1].id, reverse=True):
        model = models.get(name) or get_registered_model(service.client, name)
        if model is None:
            continue
        models[name] = model
        champion = aliases_of(model).get(CHAMPION)
        if champion == version:
            continue  # promoted some other way (a rollback): nothing is waiting
        policy = GatePolicy.from_tags(model.tags)
        item = {
            "model": name,
            "version": version,
            "requested_by": request.actor,
            "requested_at": request.at,
            "reason": request.reason,
            "champion": champion,
            "approvers": approvers_of(policy),
        }
        if request.actor == user:
            mine.append(item)
        try:
            mv = require_gated_version(service.client, service.audit, name, version)
            check_may_approve(
                actor, name, version, policy, authors_of(service.client, service.audit, mv)
            )
        except RegistryError:
            continue
        # the run it was made from: the inbox compares it with the current champion
        item = {**item, "gates": _gates(mv), "run_id": getattr(mv, "run_id", None)}
        to_approve.append(item)
    done = [
        {
            "model": request.model,
            "version": version,
            "approved_by": approval.actor,
            "approved_at": approval.at,
            "reason": approval.reason,
        }
        for (_, version), (request, approval) in sorted(
            decided.items(), key=lambda kv: kv[1][1].id, reverse=True
        )
        if request.actor == user
    ][:RECENT_DECISIONS]
    return {"to_approve": to_approve, "mine": mine, "decided": done}


def _gates(mv) -> list[dict]:
    import json

    from .validation import GATES_TAG

    raw = (mv.tags or {}).get(GATES_TAG)
    try:
        report = json.loads(raw) if raw else None
    except ValueError:
        report = None
    return [
        {"name": r.get("name"), "passed": bool(r.get("passed")), "detail": r.get("detail", "")}
        for r in (report or {}).get("results") or []
    ]
