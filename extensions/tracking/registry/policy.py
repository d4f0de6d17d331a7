"""The gate policy of a registered model: what a candidate must meet, and who may promote it."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from .store import get_registered_model, require_registered_model
from .validation import (
    MAX_GROUP_LENGTH,
    POLICY_TAG_PREFIX,
    RegistryError,
    validate_model_name,
    validate_user,
)

log = logging.getLogger(__name__)

_METRIC_RE = re.compile(r"^[/\w.\- ]+$")


@dataclasses.dataclass(frozen=True)
class GatePolicy:
    """What a candidate must meet to be published, and who may promote it.

    Stored on the registered model as ``hubml.gate.<field>`` tags (``get_policy``/``set_policy``).
    """

    #: the run metric compared with the champion's, e.g. ``accuracy`` or ``rmse``
    metric: str = "accuracy"
    #: ``max``: higher is better; ``min``: lower is better
    direction: str = "max"
    #: absolute slack: with ``max`` a candidate passes when ``metric >= champion - tolerance``
    tolerance: float = 0.0
    #: the 95th percentile of predict latency on the input example must be at most this (ms)
    latency_budget_ms: float = 100.0
    #: how many timed predictions the latency gate makes
    latency_trials: int = 20
    #: hub group whose members may approve; ``None``: any user except the author
    approver_group: str | None = None
    #: allow the author to approve their own version (single-person teams); off by default,
    #: and only an admin may turn it on
    allow_self_approval: bool = False

    def __post_init__(self):
        def bad(field: str, value: Any, allowed: str) -> RegistryError:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "..."
            return RegistryError(f"invalid gate policy: {field}={shown}; allowed: {allowed}")

        if (
            not isinstance(self.metric, str)
            or not _METRIC_RE.match(self.metric)
            or len(self.metric) > 250
        ):
            raise bad("metric", self.metric, "an MLflow metric name such as 'accuracy'")
        if self.direction not in ("max", "min"):
            raise bad("direction", self.direction, "'max' (higher is better) or 'min'")
        if (
            not _is_number(self.tolerance)
            or not math.isfinite(self.tolerance)
            or self.tolerance < 0
        ):
            raise bad("tolerance", self.tolerance, "a finite number >= 0")
        budget = self.latency_budget_ms
        if not _is_number(budget) or not math.isfinite(budget) or budget <= 0:
            raise bad("latency_budget_ms", budget, "a finite number of milliseconds > 0")
        trials = self.latency_trials
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 1000:
            raise bad("latency_trials", trials, "an integer from 1 to 1000")
        group = self.approver_group
        if group is not None and (
            not isinstance(group, str)
            or not group.strip()
            or len(group) > MAX_GROUP_LENGTH
            or not group.isprintable()
        ):
            raise bad(
                "approver_group",
                group,
                f"a hub group name (at most {MAX_GROUP_LENGTH} characters), or null for "
                "'anyone but the author'",
            )
        if not isinstance(self.allow_self_approval, bool):
            raise bad("allow_self_approval", self.allow_self_approval, "true or false")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_request(cls, body: Mapping[str, Any]) -> GatePolicy:
        """A policy from a request's JSON fields; 400 naming unknown or invalid fields.

        Missing fields take the defaults (a PUT replaces the whole policy)."""
        unknown = sorted(str(k) for k in body if k not in cls.fields())
        if unknown:
            raise RegistryError(
                f"unknown gate policy field(s) {', '.join(repr(k) for k in unknown)}; "
                f"allowed: {', '.join(cls.fields())} (and reason)"
            )
        return cls(**body)

    def to_tags(self) -> dict[str, str]:
        """The policy as registered-model tags (all strings; ``""`` means no approver group)."""
        return {
            POLICY_TAG_PREFIX + f.name: _tag_value(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GatePolicy:
        """Read a policy from registered-model tags; missing tags take the defaults.

        A tag that does not parse is a 409: the stored state is wrong, not the request.
        """
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = POLICY_TAG_PREFIX + f.name
            if key not in tags:
                continue
            raw = tags[key]
            try:
                if f.name in ("tolerance", "latency_budget_ms"):
                    values[f.name] = float(raw)
                elif f.name == "latency_trials":
                    values[f.name] = int(raw)
                elif f.name == "allow_self_approval":
                    if raw not in ("true", "false"):
                        raise ValueError(raw)
                    values[f.name] = raw == "true"
                elif f.name == "approver_group":
                    values[f.name] = raw or None
                else:
                    values[f.name] = raw
            except ValueError:
                raise RegistryError(
                    f"registered model tag {key}={raw!r} is not a valid {f.name}; "
                    "fix it with set_policy",
                    409,
                ) from None
        try:
            return cls(**values)
        except RegistryError as e:
            raise RegistryError(
                f"{e.message} (from the model's {POLICY_TAG_PREFIX}* tags)", 409
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tag_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stored_approver_group(tags: Mapping[str, str]) -> str | None:
    """The approver group the tags name, read without parsing the rest of the policy (so a
    corrupt policy tag does not lock its owners out of fixing it)."""
    return tags.get(POLICY_TAG_PREFIX + "approver_group") or None


def stored_self_approval(tags: Mapping[str, str]) -> bool:
    return tags.get(POLICY_TAG_PREFIX + "allow_self_approval") == "true"


def get_policy(client, name: str) -> GatePolicy:
    """The model's gate policy; the default policy when the model is not registered yet."""
    model = get_registered_model(client, validate_model_name(name))
    return GatePolicy.from_tags(model.tags if model else {})


def set_policy(client, name: str, policy: GatePolicy, user: str) -> GatePolicy:
    """Store ``policy`` on the registered model; 404 when it is not registered (a policy never
    creates a model: the first publish does, and makes its publisher the owner). Authorization
    and auditing are ``RegistryService.set_policy``'s.
    """
    name = validate_model_name(name)
    validate_user(user)
    require_registered_model(client, name)
    for key, value in policy.to_tags().items():
        client.set_registered_model_tag(name, key, value)
    log.info("gate policy of %s set by %s: %s", name, user, policy)
    return policy
