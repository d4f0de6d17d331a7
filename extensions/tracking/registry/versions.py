"""A registered model's versions and aliases as the registry sees them: the champion and its
run's metrics, who authored a version, whether it came through the gates, and moving an alias
together with its audit record.
"""

from __future__ import annotations

import logging

from .audit import AuditLog
from .gates import Champion, GateReport, GateResult
from .store import aliases_of, get_run, is_not_found
from .validation import AUTHOR_TAG, CHALLENGER, CHAMPION, RUN_USER_TAGS, RegistryError

log = logging.getLogger(__name__)


def run_metrics(client, run_id: str | None) -> dict[str, float]:
    return dict(get_run(client, run_id).data.metrics) if run_id else {}


def champion_of(client, model, version: str | None = None) -> Champion | None:
    """The version ``@champion`` (or ``version``) of ``model`` with its run's metrics."""
    if model is None:
        return None
    version = version or aliases_of(model).get(CHAMPION)
    if version is None:
        return None
    mv = client.get_model_version(model.name, version)
    return Champion(str(version), run_metrics(client, mv.run_id))


def require_version(client, name: str, version: str):
    """The model version; 404 listing the versions there are."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as e:
        if not is_not_found(e):
            raise
    versions = client.search_model_versions(f"name = '{name}'")
    known = ", ".join(sorted((str(v.version) for v in versions), key=int)) or "none"
    raise RegistryError(f"model {name!r} has no version {version} (versions: {known})", 404)


def publisher_of(audit: AuditLog, name: str, version: str) -> str | None:
    """Who published ``version`` through the gates, according to the audit log."""
    for e in audit.entries(name):
        if e.action == "publish" and e.alias == CHALLENGER and e.to_version == version:
            return e.actor
    return None


def require_gated_version(client, audit: AuditLog, name: str, version: str):
    """The model version, if the registry published it after its gates passed.

    The proof is the audit log's ``publish`` entry, not the version's tags: tags can be
    written by anyone with MLflow access, the audit log only by the registry.
    """
    mv = require_version(client, name, version)
    if publisher_of(audit, name, version) is None:
        raise RegistryError(
            f"version {version} of {name!r} was not published through the gates; publish its "
            "run with the publish panel first",
            409,
        )
    return mv


def authors_of(client, audit: AuditLog, mv) -> set[str]:
    """The publisher and the user who made the source run: none of them may approve."""
    authors = {publisher_of(audit, mv.name, str(mv.version)), mv.tags.get(AUTHOR_TAG)}
    if mv.run_id:
        tags = get_run(client, mv.run_id).data.tags
        authors |= {tags.get(t) for t in RUN_USER_TAGS}
    return {a for a in authors if a}


def set_alias(client, name: str, alias: str, version: str | None) -> None:
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)


def move_alias(
    client,
    audit: AuditLog,
    name: str,
    alias: str,
    version: str | None,
    *,
    previous: str | None,
    action: str,
    actor: str,
    reason: str,
    gates: GateReport | list[GateResult] | None = None,
):
    """Point ``@alias`` at ``version`` (None: remove it), then record the move; returns the
    audit entry. Call it under the model's lock, with ``previous``: where the alias points now.

    If the audit write fails the alias is put back: a move that is not in the history must
    not stay.
    """
    set_alias(client, name, alias, version)
    try:
        entry = audit.record(
            action=action,
            model=name,
            actor=actor,
            alias=alias,
            from_version=previous,
            to_version=version,
            reason=reason,
            gates=gates,
        )
    except Exception:
        log.exception("audit write failed; reverting @%s of %s to %s", alias, name, previous)
        set_alias(client, name, alias, previous)
        raise
    log.info(
        "@%s of %s moved from %s to %s by %s (%s)", alias, name, previous, version, actor, action
    )
    return entry
