"""``ModelMaintenance``: what a registered model's maintainers and admins change outside the
promotion flow (its gate policy, its owners, its versions), and the per-model locks that every
change of a model takes. :class:`.service.RegistryService` builds on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from ..owners import MODEL_MAINTAINERS_TAG, MODEL_OWNER_TAG
from .audit import AuditEntry, AuditLog
from .models import Owners
from .permissions import Actor, check_may_assign_owners, check_may_maintain, check_may_set_policy
from .policy import GatePolicy, set_policy
from .store import aliases_of, limit_mlflow_requests, mlflow_errors, require_registered_model
from .validation import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    validate_groups,
    validate_model_name,
    validate_owner,
    validate_reason,
    validate_user,
    validate_version,
)
from .versions import move_alias, require_version

log = logging.getLogger(__name__)


class ModelMaintenance:
    """Policy, owners and version deletion over one MLflow registry and one audit log.

    Constructing one bounds this process's MLflow client retries
    (:func:`.store.limit_mlflow_requests`). Every method blocks on network and disk: call it
    from a worker thread in an async server.
    """

    def __init__(self, client, audit: AuditLog, *, lock_timeout: float = 30.0):
        self.client = client
        self.audit = audit
        #: seconds a change waits for another change of the same model before a 409
        self.lock_timeout = lock_timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        limit_mlflow_requests()

    def _move(self, name: str, alias: str, version: str | None, **kw):
        return move_alias(self.client, self.audit, name, alias, version, **kw)

    @contextlib.contextmanager
    def _locked(self, name: str):
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise RegistryError(
                f"another change of {name!r} is in progress; try again in a moment", 409
            )
        try:
            yield
        finally:
            lock.release()

    @mlflow_errors
    def owners(self, name: str) -> Owners:
        name = validate_model_name(name)
        return Owners.from_tags(name, require_registered_model(self.client, name).tags)

    @mlflow_errors
    def set_policy(
        self,
        name: str,
        policy: GatePolicy,
        *,
        user: str,
        user_groups: Iterable[str] = (),
        admin: bool = False,
        reason: str = "",
    ) -> GatePolicy:
        """Change the policy of a registered model (404 when there is none: a policy does not
        reserve a name). See :func:`.permissions.check_may_set_policy` for who may."""
        name, user, reason = validate_model_name(name), validate_user(user), validate_reason(reason)
        if not isinstance(policy, GatePolicy):
            raise RegistryError(f"policy must be a GatePolicy, not {type(policy).__name__}")
        actor = Actor.of(user, user_groups, admin)
        with self._locked(name):
            model = require_registered_model(self.client, name)
            check_may_set_policy(actor, name, model.tags, policy)
            set_policy(self.client, name, policy, user)
            self.audit.record(
                action="set_policy",
                model=name,
                actor=user,
                reason=reason or json.dumps(policy.to_dict(), sort_keys=True),
            )
        return policy

    @mlflow_errors
    def delete_version(
        self,
        name: str,
        version: Any,
        *,
        user: str,
        user_groups: Iterable[str] = (),
        admin: bool = False,
        reason: str = "",
    ) -> AuditEntry:
        """Delete a version (its owner, maintainers, admins); 409 while ``@champion`` or
        ``@challenger`` points at it. Other aliases on it go with it, each recorded."""
        name, version = validate_model_name(name), validate_version(version)
        user, reason = validate_user(user), validate_reason(reason)
        actor = Actor.of(user, user_groups, admin)
        model = require_registered_model(self.client, name)
        check_may_maintain(actor, name, model.tags, "delete versions of")
        with self._locked(name):
            aliases = aliases_of(self.client.get_registered_model(name))
            for alias in (CHAMPION, CHALLENGER):
                if aliases.get(alias) == version:
                    raise RegistryError(
                        f"version {version} of {name!r} is @{alias}; move @{alias} to another "
                        "version (approve, roll back or publish) before deleting it",
                        409,
                    )
            require_version(self.client, name, version)
            self.client.delete_model_version(name, version)
            entry = self.audit.record(
                action="delete_version",
                model=name,
                actor=user,
                from_version=version,
                reason=reason,
            )
            for alias in sorted(a for a, v in aliases.items() if v == version):
                self.audit.record(
                    action="delete_version",
                    model=name,
                    actor=user,
                    alias=alias,
                    from_version=version,
                    reason=reason,
                )
        log.info("version %s of %s deleted by %s", version, name, user)
        return entry

    @mlflow_errors
    def set_owners(
        self,
        name: str,
        *,
        user: str,
        admin: bool = False,
        owner: Any = None,
        maintainers: Any = None,
        reason: str = "",
    ) -> Owners:
        """Assign the model's owner and/or maintainer groups (admins only); ``None`` keeps one."""
        name, user, reason = validate_model_name(name), validate_user(user), validate_reason(reason)
        if owner is None and maintainers is None:
            raise RegistryError("give owner (a hub user name) and/or maintainers (group names)")
        owner = None if owner is None else validate_owner(owner)
        maintainers = None if maintainers is None else validate_groups(maintainers)
        actor = Actor.of(user, (), admin)
        with self._locked(name):
            model = require_registered_model(self.client, name)
            check_may_assign_owners(actor, name, model.tags)
            before = Owners.from_tags(name, model.tags)
            if owner is not None:
                self.client.set_registered_model_tag(name, MODEL_OWNER_TAG, owner)
            if maintainers is not None:
                self.client.set_registered_model_tag(
                    name, MODEL_MAINTAINERS_TAG, ",".join(maintainers)
                )
            after = Owners(
                name,
                before.owner if owner is None else owner,
                before.maintainers if maintainers is None else maintainers,
            )
            change = {
                "owner": after.owner,
                "maintainers": after.maintainers,
                "was": {"owner": before.owner, "maintainers": before.maintainers},
            }
            self.audit.record(
                action="set_owners",
                model=name,
                actor=user,
                reason=json.dumps({**change, "reason": reason}, sort_keys=True),
            )
        log.info("owners of %s set by %s: %s", name, user, change)
        return after
