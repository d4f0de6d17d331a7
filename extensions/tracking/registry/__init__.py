"""Gated publishing and human-approved promotion for the MLflow model registry.

The flow, for one registered model:

1. ``publish`` a logged model (``runs:/<run_id>/<artifact_path>``): the gates run *before*
   anything is registered; only when all pass is a version created and ``@challenger`` moved
   to it. A failed gate leaves the registry untouched and says which gate failed, with numbers.
   The first publish of a name makes the publisher its owner; later versions come from the
   owner, the maintainer groups and admins only.
2. ``request_promotion`` records that the author asks for review.
3. ``approve`` moves ``@champion``; the approver must not be the version's author and, when the
   model's policy names an approver group, must belong to it.
4. ``rollback`` moves ``@champion`` back to the champion it replaced.

Every alias move, version deletion, policy and owner change (and every rejected publish and
request) is appended to an ``AuditLog``. The gate policy and the owners live on the registered
model as ``hubml.gate.*``, ``hubml.owner`` and ``hubml.maintainers`` tags, so they travel with
the model to any MLflow server.

One concern per module: :mod:`.validation` (what is accepted, ``RegistryError``),
:mod:`.policy`, :mod:`.gates`, :mod:`.audit`, :mod:`.permissions` (who may), :mod:`.store`
(MLflow calls and their errors), :mod:`.versions` (champion, authors, alias moves),
:mod:`.models` (answers), :mod:`.maintenance` (policy, owners, deletion, locks),
:mod:`.service` (``RegistryService``: the flow and the reads) and :mod:`.handlers` (the HTTP
API; import it explicitly, it needs the service kit). The package has no hub dependency and imports mlflow, numpy and pandas lazily
(importing mlflow costs seconds), so a hub service or a widget can import it for free.

Security note: the gates load and run the candidate model, i.e. code its author chose. They
never run it in the registry's process: ``RegistryService(gates=GateSandbox(...))`` runs it as
the publisher's Unix account through the runner service (the hub is root), or in a child
process with a scrubbed environment (:mod:`..gatesandbox`).
"""

from .audit import AuditEntry, AuditLog, audit_log, default_audit_url, previous_champion
from .gates import (
    Champion,
    GateReport,
    GateResult,
    _model_location,
    check_latency,
    check_metric,
    inference_result,
    output_problem,
    percentile,
    probe_model,
    run_gates,
)
from .models import Comparison, MetricRow, Owners, PublishResult
from .permissions import Actor
from .policy import GatePolicy, get_policy, set_policy
from .service import RegistryService
from .validation import (
    AUTHOR_TAG,
    CHALLENGER,
    CHAMPION,
    GATES_PASSED_TAG,
    GATES_TAG,
    MAX_ALIAS_LENGTH,
    MAX_MODEL_NAME_LENGTH,
    MAX_REASON_LENGTH,
    MAX_VERSION_DIGITS,
    POLICY_TAG_PREFIX,
    RUN_USER_TAGS,
    SOURCE_RUN_TAG,
    RegistryError,
    scrub,
    validate_alias,
    validate_artifact_path,
    validate_groups,
    validate_model_name,
    validate_owner,
    validate_reason,
    validate_run_id,
    validate_user,
    validate_version,
)

__all__ = [
    "AUTHOR_TAG",
    "CHALLENGER",
    "CHAMPION",
    "GATES_PASSED_TAG",
    "GATES_TAG",
    "MAX_ALIAS_LENGTH",
    "MAX_MODEL_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "MAX_VERSION_DIGITS",
    "POLICY_TAG_PREFIX",
    "RUN_USER_TAGS",
    "SOURCE_RUN_TAG",
    "Actor",
    "AuditEntry",
    "AuditLog",
    "Champion",
    "Comparison",
    "GatePolicy",
    "GateReport",
    "GateResult",
    "MetricRow",
    "Owners",
    "PublishResult",
    "RegistryError",
    "RegistryService",
    "_model_location",
    "audit_log",
    "check_latency",
    "check_metric",
    "default_audit_url",
    "inference_result",
    "get_policy",
    "output_problem",
    "percentile",
    "previous_champion",
    "probe_model",
    "run_gates",
    "scrub",
    "set_policy",
    "validate_alias",
    "validate_artifact_path",
    "validate_groups",
    "validate_model_name",
    "validate_owner",
    "validate_reason",
    "validate_run_id",
    "validate_user",
    "validate_version",
]
