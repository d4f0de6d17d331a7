"""``RegistryService``: the promotion flow (publish through the gates, request, approve, roll
back) and the reads (describe, compare, aliases, history) over one MLflow registry and one audit
log; policy, owners and version deletion come from :class:`.maintenance.ModelMaintenance`.

Every operation takes the acting (hub-authenticated) user, with their groups and admin flag
where they decide (:mod:`.permissions`). Inputs are validated before anything else; refusals
raise ``RegistryError`` with an HTTP status, MLflow's errors included (:func:`.store.mlflow_errors`).

The gates run the candidate in the service's :class:`..gatesandbox.GateSandbox` (``gates``), as
the publisher's account where the sandbox can: never in this process.

Locking: alias moves read, then write, so each model's changes are serialised by a lock of its
own (within this process). Only short round trips happen under it: read the model, write an
alias, tag or version, append to the audit log. The gates (which download, load and run the
candidate) and the reads that decide permissions and metrics run before it; the state they
relied on is read again under the lock and the change refused (409) if it moved meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from ..gatesandbox import GateSandbox
from ..owners import MODEL_OWNER_TAG
from .audit import AuditEntry, previous_champion
from .gates import _model_location, check_metric, run_gates
from .maintenance import ModelMaintenance
from .models import Comparison, MetricRow, Owners, PublishResult
from .permissions import (
    Actor,
    check_may_approve,
    check_may_publish,
    check_may_rollback,
)
from .policy import GatePolicy, get_policy
from .store import (
    aliases_of,
    describe_aliases,
    ensure_registered_model,
    get_registered_model,
    get_run,
    mlflow_errors,
    require_registered_model,
)
from .validation import (
    AUTHOR_TAG,
    CHALLENGER,
    CHAMPION,
    GATES_PASSED_TAG,
    GATES_TAG,
    SOURCE_RUN_TAG,
    RegistryError,
    validate_alias,
    validate_artifact_path,
    validate_model_name,
    validate_reason,
    validate_run_id,
    validate_user,
    validate_version,
)
from .versions import (
    authors_of,
    champion_of,
    require_gated_version,
    require_version,
    run_metrics,
)

log = logging.getLogger(__name__)


class RegistryService(ModelMaintenance):
    """Publishing, approval, rollback and history over one MLflow registry and one audit log,
    with the maintenance of :class:`.maintenance.ModelMaintenance` (policy, owners, deletion).

    ``gates`` runs the candidate for gates (b) and (c): a :class:`..gatesandbox.GateSandbox`
    (default: a child process of this one, as ``hubml-<publisher>`` when this process is root).
    """

    def __init__(self, client, audit, *, gates=None, **kw):
        super().__init__(client, audit, **kw)
        self.gates = gates if gates is not None else GateSandbox()

    # reading

    @mlflow_errors
    def policy(self, name: str) -> GatePolicy:
        return get_policy(self.client, name)

    @mlflow_errors
    def describe(self, name: str) -> dict[str, Any]:
        """The model's owners, aliases, policy and versions (newest first) for the panel."""
        name = validate_model_name(name)
        model = require_registered_model(self.client, name)
        versions = self.client.search_model_versions(
            f"name = '{name}'", order_by=["version_number DESC"]
        )
        owners = Owners.from_tags(name, model.tags)
        return {
            "name": name,
            "owner": owners.owner,
            "maintainers": owners.maintainers,
            "aliases": aliases_of(model),
            "policy": GatePolicy.from_tags(model.tags).to_dict(),
            "versions": [
                {
                    "version": str(v.version),
                    "run_id": v.run_id,
                    "author": v.tags.get(AUTHOR_TAG),
                    "gates_passed": v.tags.get(GATES_PASSED_TAG) == "true",
                    "gates": _gate_report(v.tags.get(GATES_TAG)),
                    "created_ms": v.creation_timestamp,
                }
                for v in versions
            ],
        }

    @mlflow_errors
    def resolve_alias(self, name: str, alias: str) -> str:
        """The version ``@alias`` points at; 404 listing the existing aliases if it has none."""
        name, alias = validate_model_name(name), validate_alias(alias)
        model = require_registered_model(self.client, name)
        version = aliases_of(model).get(alias)
        if version is None:
            raise RegistryError(
                f"model {name!r} has no alias @{alias}; {describe_aliases(model)}", 404
            )
        return version

    def history(self, name: str) -> list[AuditEntry]:
        """Every recorded action on the model, oldest first."""
        return self.audit.entries(validate_model_name(name))

    @mlflow_errors
    def compare(self, name: str, run_id: str, against: str = CHAMPION) -> Comparison:
        """The candidate run's metrics next to those of ``@against``'s source run.

        A missing ``@champion`` is the normal first-model case (empty champion column); any
        other missing alias is a 404.
        """
        name, run_id = validate_model_name(name), validate_run_id(run_id)
        against = validate_alias(against, "against")
        candidate = get_run(self.client, run_id).data.metrics
        model = get_registered_model(self.client, name)
        policy = GatePolicy.from_tags(model.tags if model else {})
        if against == CHAMPION:
            baseline = champion_of(self.client, model)
        else:
            baseline = champion_of(self.client, model, self.resolve_alias(name, against))
        theirs = baseline.metrics if baseline else {}
        keys = sorted(set(candidate) | set(theirs), key=lambda k: (k != policy.metric, k))
        rows = []
        for key in keys:
            a, b = candidate.get(key), theirs.get(key)
            delta = a - b if a is not None and b is not None else None
            rows.append(MetricRow(key, a, b, delta, key == policy.metric))
        return Comparison(name, run_id, against, baseline.version if baseline else None, rows)

    # writing

    @mlflow_errors
    def publish(
        self,
        name: str,
        run_id: str,
        *,
        user: str,
        user_groups: Iterable[str] = (),
        admin: bool = False,
        artifact_path: str = "model",
        reason: str = "",
    ) -> PublishResult:
        """Gate ``runs:/<run_id>/<artifact_path>`` and, only if every gate passes, register it as
        a new version (tagged with author and source run) and point ``@challenger`` at it.

        A new name becomes the publisher's (tag ``hubml.owner``); an existing model takes
        versions from its owner, maintainers and admins only, refused before the gates run. A
        failed gate registers nothing and moves no alias; the result carries the report (the
        rejection is recorded in the audit log too).
        """
        name, run_id = validate_model_name(name), validate_run_id(run_id)
        user, reason = validate_user(user), validate_reason(reason)
        artifact_path = validate_artifact_path(artifact_path)
        actor = Actor.of(user, user_groups, admin)
        model_uri = f"runs:/{run_id}/{artifact_path}"
        model = get_registered_model(self.client, name)
        check_may_publish(actor, name, model.tags if model else None)
        run = get_run(self.client, run_id)
        policy = GatePolicy.from_tags(model.tags if model else {})
        report = run_gates(
            self.client,
            model_uri,
            run.data.metrics,
            champion_of(self.client, model),
            policy,
            sandbox=self.gates,
            publisher=user,
            profile=run.data.tags.get("hubml.profile"),
            groups=actor.groups,
        )
        if not report.passed:
            self.audit.record(
                action="publish_rejected", model=name, actor=user, reason=reason, gates=report
            )
            log.info(
                "publish of %s to %s by %s rejected: %s", model_uri, name, user, report.summary()
            )
            return PublishResult(name, run_id, report)
        _, model_id = _model_location(self.client, model_uri)
        source = (
            f"models:/{model_id}"
            if model_id
            else f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
        )
        with self._locked(name):
            model = ensure_registered_model(
                self.client, name, {**policy.to_tags(), MODEL_OWNER_TAG: user}
            )
            # the name may have been taken by someone else while the gates ran
            check_may_publish(actor, name, model.tags)
            version = self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                model_id=model_id,
                tags={
                    AUTHOR_TAG: user,
                    SOURCE_RUN_TAG: run_id,
                    GATES_PASSED_TAG: "true",
                    GATES_TAG: json.dumps(report.to_dict()),
                },
            ).version
            version = str(version)
            previous = aliases_of(model).get(CHALLENGER)
            self._move(
                name,
                CHALLENGER,
                version,
                previous=previous,
                action="publish",
                actor=user,
                reason=reason,
                gates=report,
            )
        log.info("published %s as %s v%s by %s", model_uri, name, version, user)
        return PublishResult(name, run_id, report, version, previous)

    @mlflow_errors
    def request_promotion(
        self, name: str, version: Any, *, user: str, reason: str = ""
    ) -> AuditEntry:
        """Record that ``user`` asks an approver to make ``version`` the champion."""
        name, version = validate_model_name(name), validate_version(version)
        user, reason = validate_user(user), validate_reason(reason)
        model = require_registered_model(self.client, name)
        require_gated_version(self.client, self.audit, name, version)
        if aliases_of(model).get(CHAMPION) == version:
            raise RegistryError(f"version {version} of {name!r} is already @champion", 409)
        return self.audit.record(
            action="request_promotion",
            model=name,
            actor=user,
            alias=CHAMPION,
            from_version=aliases_of(model).get(CHAMPION),
            to_version=version,
            reason=reason,
        )

    @mlflow_errors
    def approve(
        self,
        name: str,
        version: Any,
        *,
        approver: str,
        approver_groups: Iterable[str] = (),
        reason: str = "",
    ) -> AuditEntry:
        """Move ``@champion`` to ``version``.

        Refused (403) for the version's author (its publisher or the user who made its run)
        unless the policy allows self-approval, and for users outside the policy's approver
        group. The metric gate is checked again against the *current* champion (409 when it
        fails), since another version may have been promoted after this one was published.
        ``@challenger`` is cleared when it pointed at the promoted version.
        """
        name, version = validate_model_name(name), validate_version(version)
        approver, reason = validate_user(approver, "approver"), validate_reason(reason)
        actor = Actor.of(approver, approver_groups)
        model = require_registered_model(self.client, name)
        policy = GatePolicy.from_tags(model.tags)
        mv = require_gated_version(self.client, self.audit, name, version)
        champion = aliases_of(model).get(CHAMPION)
        if champion == version:
            raise RegistryError(f"version {version} of {name!r} is already @champion", 409)
        check_may_approve(actor, name, version, policy, authors_of(self.client, self.audit, mv))
        recheck = check_metric(
            policy, run_metrics(self.client, mv.run_id), champion_of(self.client, model)
        )
        if not recheck.passed:
            raise RegistryError(
                f"version {version} of {name!r} no longer passes the metric gate: {recheck.detail}",
                409,
            )
        with self._locked(name):
            now = self.client.get_registered_model(name)
            aliases = aliases_of(now)
            if aliases.get(CHAMPION) != champion or GatePolicy.from_tags(now.tags) != policy:
                raise RegistryError(
                    f"@champion or the gate policy of {name!r} changed while this approval was "
                    "checked; approve again",
                    409,
                )
            moved = self._move(
                name,
                CHAMPION,
                version,
                previous=champion,
                action="approve",
                actor=approver,
                reason=reason,
                gates=[recheck],
            )
            if aliases.get(CHALLENGER) == version:
                self._move(
                    name,
                    CHALLENGER,
                    None,
                    previous=version,
                    action="approve",
                    actor=approver,
                    reason=reason,
                )
        return moved

    @mlflow_errors
    def rollback(
        self,
        name: str,
        *,
        user: str,
        user_groups: Iterable[str] = (),
        admin: bool = False,
        reason: str = "",
    ) -> AuditEntry:
        """Move ``@champion`` back to the champion it replaced (repeatable, like an undo stack).

        Rolling back restores a version an approver already accepted, so the model's owner and
        maintainers may do it, as may its approver group and admins.
        """
        name, user, reason = validate_model_name(name), validate_user(user), validate_reason(reason)
        actor = Actor.of(user, user_groups, admin)
        model = require_registered_model(self.client, name)
        check_may_rollback(actor, name, model.tags, GatePolicy.from_tags(model.tags))
        with self._locked(name):
            model = self.client.get_registered_model(name)
            current = aliases_of(model).get(CHAMPION)
            if current is None:
                raise RegistryError(
                    f"model {name!r} has no @champion to roll back; {describe_aliases(model)}", 409
                )
            target = previous_champion(self.audit.entries(name))
            if target is None:
                raise RegistryError(
                    f"nothing to roll back to: v{current} is the first @champion of {name!r} in "
                    "the audit history",
                    409,
                )
            try:
                require_version(self.client, name, target)
            except RegistryError as e:
                if e.status != 404:
                    raise
                raise RegistryError(
                    f"cannot roll back {name!r} to v{target}: that version was deleted", 409
                ) from None
            return self._move(
                name,
                CHAMPION,
                target,
                previous=current,
                action="rollback",
                actor=user,
                reason=reason,
            )


def _gate_report(raw: str | None) -> dict | None:
    """A version's gate report as the gated flow wrote it (None for versions made around it)."""
    try:
        report = json.loads(raw) if raw else None
    except ValueError:
        return None
    return report if isinstance(report, dict) else None
