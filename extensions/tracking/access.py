"""What the MLflow front door lets through: every route of MLflow, classified, default deny.

Pure functions, no I/O, so the whole policy is unit-tested and walked against MLflow's own route
list (``tests/unit/test_access.py`` fails when an MLflow upgrade adds a route this table does not
classify):

1. :func:`canonical_path` turns the raw request path (as sent, percent-encoded) into the one
   string that is both classified here and forwarded to MLflow. Encoded ``/ ? #``, ``%`` left
   after decoding (double encoding), dot segments and empty segments are refused, so no request
   is classified as one route and served as another.
2. :func:`plan` finds the route's :class:`Rule` in :mod:`.routetable`, refuses what no rule allows, rewrites the JSON
   body MLflow will read (one canonical body: protobuf's camelCase aliases folded into field
   names, owner tags stamped on creation, no query string), and lists the owned things the
   request touches (:class:`Need`).
3. The front door looks those owners up in MLflow and :func:`decide` says allow or a 4xx.

Reads are open to every signed-in colleague; writes need an owner (:mod:`.owners`) or an admin.
Why a table rather than MLflow's own ``basic-auth`` app: MLflow's permissions are per user,
kept in a second user database with its own passwords, and know nothing of hub groups or of
hubml's gated aliases; the front door already knows the hub identity of every request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from .owners import (
    DEFAULT_EXPERIMENT_ID,
    EXPERIMENT_OWNER_TAG,
    LOGGED_MODEL_OWNER_TAG,
    MODEL_MAINTAINERS_TAG,
    MODEL_OWNER_TAG,
    RUN_OWNER_TAGS,
)
from .routetable import READ_METHODS, RULES, Rule, find_rule

PROTECTED_ALIASES = frozenset({"champion", "challenger"})
# tags only the platform writes (admins may, to transfer ownership)
OWNER_TAGS = frozenset({*RUN_OWNER_TAGS, EXPERIMENT_OWNER_TAG, MODEL_MAINTAINERS_TAG})
STAMPED = {
    "create_run": {*RUN_OWNER_TAGS},
    "experiment_new": {EXPERIMENT_OWNER_TAG},
    "logged_new": {*RUN_OWNER_TAGS},
    "model_new": {MODEL_OWNER_TAG},
}
MAX_ID_LENGTH = 256
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_ID_RE = re.compile(r"^[\w\-.:]{1,256}$")


class Refusal(Exception):
    """A request the front door answers itself: HTTP ``status`` and a message for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool = False
    groups: frozenset[str] = frozenset()


@dataclass
class Need:
    """An owned thing the request touches: ``kind`` run | experiment | logged | model."""

    kind: str
    key: str
    # for artifacts: the experiment the path names, which must be the thing's own
    experiment_id: str | None = None


@dataclass
class Plan:
    rule: Rule
    path: str  # canonical, relative to the service prefix, as forwarded
    query: str  # as forwarded ("" for JSON writes)
    body: bytes | None  # as forwarded (None: the request's own bytes)
    needs: list[Need] = field(default_factory=list)
    # a write of owner or platform tags (only admins may)
    owner_tags: bool = False


# -- step 1: one path ------------------------------------------------------------------------


def canonical_path(raw: str) -> str:
    """The decoded path, refusing every spelling that could be routed differently than read."""
    if re.search(r"%(2f|5c|00)", raw, re.IGNORECASE):
        raise Refusal(400, "encoded '/', '\\' or NUL in the path are not accepted")
    decoded = unquote(raw, errors="strict") if "%" in raw else raw
    if any(c in decoded for c in "%?#\\") or any(ord(c) < 32 or ord(c) == 127 for c in decoded):
        raise Refusal(
            400,
            "the path has an encoded '%', '?', '#' or control character; MLflow's routes need none",
        )
    segments = decoded.split("/")
    if any(s in (".", "..") for s in segments) or "" in segments[:-1] or decoded.startswith("/"):
        raise Refusal(400, "the path has empty, '.' or '..' segments")
    return decoded


def forward_path(path: str) -> str:
    """The canonical path, encoded so MLflow decodes it back to exactly ``path``."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


# -- step 2: the plan ------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(key: str) -> str:
    return _CAMEL.sub(lambda m: "_" + m.group(1).lower(), key)


def json_object(body: bytes | None) -> dict:
    """The JSON object MLflow will read from ``body``, keys as protobuf field names.

    MLflow's parser accepts ``runId`` for ``run_id`` (protobuf JSON names) and a JSON string that
    holds the object (old clients): both are folded into one object with one spelling, and that
    object is what is forwarded.
    """
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise Refusal(400, "the request body must be a JSON object (not a string or a list)")
    out: dict = {}
    for key, value in data.items():
        name = _snake(key)
        if name in out:
            raise Refusal(400, f"the body names {name!r} twice ({key!r}); send it once")
        out[name] = value
    return out


def _ident(value, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise Refusal(
            400,
            f"{what} must be a string of 1-{MAX_ID_LENGTH} letters, digits, '-', '_', '.' or ':'",
        )
    return value


def _name(value, what: str = "name") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise Refusal(
            400, f"{what} must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        )
    return value


_TAG_ROUTE = re.compile(r".*/(set-tag|delete-tag|set-experiment-tag|delete-experiment-tag)")


def _tag_keys(body: dict, path: str, me: str) -> set[str]:
    """The tag keys a write sets or deletes (``tags`` lists; ``key`` on the tag routes).

    Setting an owner tag to one's own name changes nothing anyone relies on (MLflow's client
    repeats ``mlflow.user`` in the tags it logs): those are left out.
    """
    keys = set()
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            raise Refusal(400, "tags must be a list of {key, value} objects")
        for tag in tags:
            if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
                raise Refusal(400, "each tag must be an object with a string 'key'")
            if "value" in tag and not isinstance(tag["value"], str):
                raise Refusal(400, f"the value of tag {tag['key']!r} must be a string")
            if not (tag["key"] in RUN_OWNER_TAGS and tag.get("value") == me):
                keys.add(tag["key"])
    if not _TAG_ROUTE.fullmatch(path):
        return keys
    if "key" in body and not isinstance(body["key"], str):
        raise Refusal(400, "key must be a string")
    if "value" in body and not isinstance(body["value"], str):
        raise Refusal(400, "value must be a string")
    if "key" in body and not (body["key"] in RUN_OWNER_TAGS and body.get("value") == me):
        keys.add(body["key"])
    return keys


def _stamp(body: dict, stamps: dict[str, str]) -> None:
    tags = [t for t in body.get("tags") or [] if t.get("key") not in stamps]
    body["tags"] = tags + [{"key": k, "value": v} for k, v in stamps.items()]


def _artifact_needs(artifact_path: str) -> list[Need]:
    parts = artifact_path.split("/")
    if len(parts) >= 3 and parts[0].isdigit() and parts[2] == "artifacts":
        return [Need("run", _ident(parts[1], "the run id in the path"), experiment_id=parts[0])]
    if len(parts) >= 4 and parts[0].isdigit() and parts[1] == "models" and parts[3] == "artifacts":
        return [
            Need("logged", _ident(parts[2], "the model id in the path"), experiment_id=parts[0])
        ]
    raise Refusal(
        403,
        "artifacts are written under <experiment>/<run id>/artifacts/ or "
        "<experiment>/models/<model id>/artifacts/ only",
    )


def plan(method: str, raw_path: str, query: str, body: bytes | None, who: Identity) -> Plan:
    """Classify a request and prepare what is forwarded; :class:`Refusal` when it cannot pass."""
    method = method.upper()
    path = canonical_path(raw_path)
    rule = find_rule(method, path)
    if rule is None:
        if method in READ_METHODS:  # pragma: no cover - the read rule matches every path
            rule = RULES[0]
        else:
            raise Refusal(
                405 if _is_api(path) else 404,
                f"{method} {path} is not an MLflow write route hubml knows; nothing was changed",
            )
    if rule.kind == "read":
        return Plan(rule, path, query, None)
    if rule.kind == "graphql":
        data = json_object(body)
        if not isinstance(data.get("query"), str) or not data["query"].strip():
            raise Refusal(400, "a GraphQL request needs 'query': a non-empty string")
        if not isinstance(data.get("variables", {}) or {}, dict):
            raise Refusal(400, "'variables' must be an object")
        return Plan(rule, path, query, json.dumps(data).encode())
    if rule.kind == "off":
        raise Refusal(
            403, f"hubml's tracking service does not offer {rule.what}: {method} {path} is refused"
        )
    if rule.kind == "admin" and not who.admin:
        raise Refusal(403, f"only admins may {rule.what}")
    if rule.kind == "registry_api":
        raise Refusal(
            403,
            f"{rule.what} through hubml's registry API (DELETE "
            "…/hubml/api/models/<name>/versions/<version>), which keeps the audit history",
        )
    groups = re.fullmatch(rule.pattern, path).groupdict()
    if rule.kind == "artifact":
        return _plan_artifact(rule, path, query, body, groups)
    if rule.kind == "run" and path.endswith("upload-artifact"):
        args = _query_args(query)
        run_id = _ident(args.get("run_uuid") or args.get("run_id"), "run_uuid")
        return Plan(rule, path, query, None, [Need("run", run_id)])
    data = json_object(body)
    tag_keys = _tag_keys(data, path, who.name)
    # creation replaces the owner tags a client sent (MLflow's client sends its OS user)
    tag_keys -= STAMPED.get(rule.kind, set())
    pl = Plan(rule, path, "", None)
    pl.owner_tags = bool(tag_keys & OWNER_TAGS) or (
        rule.kind in ("model", "model_new", "alias") and _platform_tags(tag_keys)
    )
    if pl.owner_tags and not who.admin:
        raise Refusal(
            403,
            f"{', '.join(sorted(k for k in tag_keys if k in OWNER_TAGS or k.startswith('hubml.')))} "
            "are set by the platform (owners by an admin, gate tags by the registry's gated flow)",
        )
    kind = rule.kind
    if kind == "create_run":
        exp = str(data.get("experiment_id") or DEFAULT_EXPERIMENT_ID)
        _ident(exp, "experiment_id")
        data["experiment_id"] = exp
        _stamp(data, {"mlflow.user": who.name, "hubml.user": who.name})
        data["user_id"] = who.name
        if exp != DEFAULT_EXPERIMENT_ID:
            pl.needs.append(Need("experiment", exp))
    elif kind == "run":
        ids = {data.get("run_id"), data.get("run_uuid")} - {None}
        if not ids:
            raise Refusal(400, "run_id is required")
        pl.needs += [Need("run", _ident(i, "run_id")) for i in ids]
    elif kind == "experiment_new":
        _name(data.get("name"), "name")
        kinds = [t for t in data.get("tags") or [] if t.get("key") == EXPERIMENT_KIND_TAG]
        # the UI opens an experiment of this kind on its runs table, not on GenAI traces
        _stamp(data, {EXPERIMENT_OWNER_TAG: who.name})
        if not kinds:
            data["tags"].append({"key": EXPERIMENT_KIND_TAG, "value": "custom_model_development"})
    elif kind == "experiment":
        pl.needs.append(
            Need("experiment", _ident(str(data.get("experiment_id", "")), "experiment_id"))
        )
    elif kind == "logged_new":
        exp = _ident(str(data.get("experiment_id", "")), "experiment_id")
        if data.get("source_run_id"):
            pl.needs.append(
                Need("run", _ident(data["source_run_id"], "source_run_id"), experiment_id=exp)
            )
        elif exp != DEFAULT_EXPERIMENT_ID:
            pl.needs.append(Need("experiment", exp))
        _stamp(data, {LOGGED_MODEL_OWNER_TAG: who.name, "mlflow.user": who.name})
    elif kind == "logged":
        ids = {groups["model_id"], data.get("model_id")} - {None}
        pl.needs += [Need("logged", _ident(i, "model_id")) for i in ids]
        if groups.get("tag_key") and (groups["tag_key"] in OWNER_TAGS) and not who.admin:
            raise Refusal(403, f"{groups['tag_key']} is set by the platform")
    elif kind == "model_new":
        _name(data.get("name"))
        _stamp(data, {MODEL_OWNER_TAG: who.name})
    elif kind in ("model", "alias"):
        pl.needs.append(Need("model", _name(data.get("name"))))
        if kind == "alias":
            alias = data.get("alias")
            if not isinstance(alias, str) or not alias:
                raise Refusal(400, "alias must be a non-empty string")
            if alias.lower() in PROTECTED_ALIASES:
                raise Refusal(
                    403,
                    f"@{alias.lower()} moves only through hubml's gated flow: publish (gates set "
                    "@challenger), request promotion, then an approver promotes to @champion",
                )
    pl.body = json.dumps(data).encode()
    return pl


def _platform_tags(keys: set[str]) -> bool:
    return any(k.startswith("hubml.") for k in keys)


def _is_api(path: str) -> bool:
    return path.startswith(("api/", "ajax-api/"))


def _query_args(query: str) -> dict[str, str]:
    args: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in args:
            raise Refusal(400, f"the query names {key!r} twice; send it once")
        args[key] = value
    return args


def _plan_artifact(rule, path, query, body, groups) -> Plan:
    artifact_path = groups["artifact_path"]
    needs = _artifact_needs(artifact_path)
    if "/mpu/" in path and body:
        data = json_object(body)
        sub = data.get("path")
        if sub is not None and (
            not isinstance(sub, str) or sub.startswith("/") or ".." in sub.split("/")
        ):
            raise Refusal(400, "path must be a relative file name inside the artifact folder")
        return Plan(rule, path, "", json.dumps(data).encode(), needs)
    return Plan(rule, path, query, None, needs)


# -- step 3: the decision --------------------------------------------------------------------


@dataclass
class Facts:
    """What the front door found for a :class:`Need`: its owner tags and where it lives."""

    exists: bool
    tags: dict = field(default_factory=dict)
    experiment_id: str | None = None
    # a logged model's source run's user, for models logged before owners were stamped
    source_run_owner: str | None = None


def owner_of(need: Need, facts: Facts) -> str | None:
    from .owners import experiment_owner, logged_model_owner, model_owner, run_owner

    if need.kind == "run":
        return run_owner(facts.tags)
    if need.kind == "experiment":
        return experiment_owner(facts.tags)
    if need.kind == "logged":
        return logged_model_owner(facts.tags) or facts.source_run_owner
    return model_owner(facts.tags)


_NOUN = {
    "run": "run",
    "experiment": "experiment",
    "logged": "logged model",
    "model": "registered model",
}


def _action(pl: Plan) -> str:
    if pl.rule.kind == "artifact" or pl.path.endswith("upload-artifact"):
        return "write its artifacts"
    last = pl.path.rsplit("/", 1)[-1]
    if pl.rule.kind in ("run", "experiment") and re.fullmatch(r"[a-z\-]+", last):
        return f"{last.replace('-experiment-', '-').replace('-', ' ')} it"
    return "change it"


def decide(pl: Plan, who: Identity, facts: list[Facts]) -> None:
    """Allow (return) or :class:`Refusal`; ``facts`` line up with ``pl.needs``."""
    from .owners import may_maintain_model

    for need, fact in zip(pl.needs, facts, strict=True):
        noun = _NOUN[need.kind]
        if not fact.exists:
            raise Refusal(404, f"{noun} {need.key!r} does not exist")
        if need.experiment_id is not None and fact.experiment_id != need.experiment_id:
            raise Refusal(
                403,
                f"{noun} {need.key} is not in experiment {need.experiment_id}; "
                "its files live under its own experiment",
            )
        if who.admin:
            continue
        if need.kind == "model":
            if not may_maintain_model(who.name, who.groups, fact.tags):
                from .owners import describe_owners

                raise Refusal(
                    403,
                    f"registered model {need.key!r} is maintained by {describe_owners(fact.tags)}; "
                    f"{who.name} may read it but not change it",
                )
            continue
        owner = owner_of(need, fact)
        if owner != who.name:
            what = (
                "start runs in it (create your own experiment, or use Default)"
                if pl.rule.kind == "create_run"
                else _action(pl)
            )
            raise Refusal(
                403,
                f"{noun} {need.key} belongs to {owner or 'the platform'}; {who.name} may not {what}",
            )
