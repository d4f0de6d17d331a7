"""Who may do what to a registered model: pure decisions over its tags and gate policy.

The owner (tag ``hubml.owner``, its first publisher) and the maintainer groups (``hubml.maintainers``)
maintain a model: they publish to it, change its policy, delete its versions, roll it back. The
approver group of its policy approves (never the version's author, unless an admin allowed
self-approval) and may roll back. Admins may do everything except approve outside the approver
group or their own version, and only admins assign owners or allow self-approval. A model
without an owner (registered before hubml recorded owners) is maintained by admins only.

Each ``check_*`` returns nothing or raises ``RegistryError`` 403 saying who may, and what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from ..owners import describe_owners, may_maintain_model, model_owner
from .policy import GatePolicy, stored_approver_group, stored_self_approval
from .validation import RegistryError

OWNERS_HINT = "an admin can assign one with PUT .../hubml/api/models/<name>/owners"


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who asks: the hub user (or service) name, their hub groups, whether the hub says admin."""

    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    @classmethod
    def of(cls, name: str, groups: Iterable[str] = (), admin: bool = False) -> Actor:
        return cls(name, frozenset(groups), bool(admin))


def maintains(actor: Actor, tags: Mapping[str, str]) -> bool:
    return may_maintain_model(actor.name, actor.groups, tags, admin=actor.admin)


def check_may_maintain(actor: Actor, name: str, tags: Mapping[str, str], what: str) -> None:
    """``what`` (e.g. "change the gate policy of") is for the model's owner, maintainers, admins."""
    if maintains(actor, tags):
        return
    if model_owner(tags) is None:
        raise RegistryError(
            f"{actor.name} may not {what} {name!r}: it has no owner (it was registered before "
            f"hubml recorded owners), so only admins may; {OWNERS_HINT}",
            403,
        )
    raise RegistryError(
        f"{actor.name} may not {what} {name!r}: it belongs to {describe_owners(tags)}; only they "
        "or an admin may (ask them to have one of your groups added to its maintainers)",
        403,
    )


def check_may_publish(actor: Actor, name: str, tags: Mapping[str, str] | None) -> None:
    """Anyone may publish a new name (and becomes its owner); an existing model takes versions
    from its owner, maintainers and admins only. ``tags`` is None for a name not registered."""
    if tags is None or maintains(actor, tags):
        return
    if model_owner(tags) is None:
        raise RegistryError(
            f"{actor.name} may not publish to {name!r}: it has no owner (it was registered before "
            f"hubml recorded owners), so only admins may; {OWNERS_HINT}, or publish under "
            "another name",
            403,
        )
    raise RegistryError(
        f"{actor.name} may not publish to {name!r}: it belongs to {describe_owners(tags)}; ask "
        "them to have one of your groups added to its maintainers (an admin does that), or "
        "publish under another name",
        403,
    )


def check_may_set_policy(actor: Actor, name: str, tags: Mapping[str, str], new: GatePolicy) -> None:
    """Owners, maintainers and admins set the policy; while it names an approver group, a
    non-admin must be in that group too (or an author could drop the approval they need).
    Turning ``allow_self_approval`` on is for admins; anyone who may change the policy may turn
    it off."""
    check_may_maintain(actor, name, tags, "change the gate policy of")
    group = stored_approver_group(tags)
    if group and not actor.admin and group not in actor.groups:
        raise RegistryError(
            f"{actor.name} may not change the gate policy of {name!r}: it names approver group "
            f"{group!r}, and only its members (or an admin) may change it",
            403,
        )
    if new.allow_self_approval and not stored_self_approval(tags) and not actor.admin:
        raise RegistryError(
            f"{actor.name} may not turn on allow_self_approval for {name!r}: it lets authors "
            "approve their own versions, so only an admin may turn it on (owners may turn it off)",
            403,
        )


def check_may_rollback(actor: Actor, name: str, tags: Mapping[str, str], policy: GatePolicy):
    """Rolling back restores a version an approver accepted: the model's maintainers and its
    approvers may do it."""
    group = policy.approver_group
    if maintains(actor, tags) or (group and group in actor.groups):
        return
    approvers = f"members of approver group {group!r}, " if group else ""
    owned = (
        f"its owner {describe_owners(tags)}, "
        if model_owner(tags)
        else f"its owner (it has none; {OWNERS_HINT}), "
    )
    raise RegistryError(
        f"{actor.name} may not roll back {name!r}: only {owned}{approvers}or an admin may move "
        "@champion back",
        403,
    )


def check_may_approve(
    actor: Actor, name: str, version: str, policy: GatePolicy, authors: Iterable[str]
) -> None:
    """Never the version's author (its publisher or its run's user) unless the policy allows
    self-approval; only the approver group's members when the policy names one. Being an admin
    changes neither."""
    if actor.name in set(authors) and not policy.allow_self_approval:
        who = (
            f"a member of group {policy.approver_group!r}"
            if policy.approver_group
            else "another user"
        )
        raise RegistryError(
            f"{actor.name} may not approve version {version} of {name!r}: they are its author; "
            f"ask {who} to approve it",
            403,
        )
    if policy.approver_group and policy.approver_group not in actor.groups:
        raise RegistryError(
            f"{actor.name} may not approve version {version} of {name!r}: approvers must be "
            f"members of group {policy.approver_group!r}",
            403,
        )


def check_may_assign_owners(actor: Actor, name: str, tags: Mapping[str, str]) -> None:
    if not actor.admin:
        raise RegistryError(
            f"{actor.name} may not change the owners of {name!r}: only admins may (its owner is "
            f"{describe_owners(tags)})",
            403,
        )
