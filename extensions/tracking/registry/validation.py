"""What the registry accepts: names, aliases, versions, run ids, reasons, owners; and its refusal.

Every check runs before any lock is taken or any MLflow call is made, so a malformed request
is answered at once with a 400 that names the field and what is allowed.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
PROTECTED_ALIASES = (CHAMPION, CHALLENGER)

# registered-model tags that hold the GatePolicy
POLICY_TAG_PREFIX = "hubml.gate."
# model-version tags written by publish
AUTHOR_TAG = "hubml.author"
SOURCE_RUN_TAG = "hubml.source_run"
GATES_TAG = "hubml.gates"
GATES_PASSED_TAG = "hubml.gates_passed"
# run tags naming the hub user who made the run (see DESIGN "Run tags")
RUN_USER_TAGS = ("hubml.user", "mlflow.user")

# MLflow keeps registered model names in a String(256) column
MAX_MODEL_NAME_LENGTH = 256
MAX_ALIAS_LENGTH = 255
MAX_REASON_LENGTH = 2000
# MLflow's model_versions.version is an INTEGER column: a longer number is a server error there
MAX_VERSION_DIGITS = 9
MAX_ARTIFACT_PATH_LENGTH = 500
# JupyterHub keeps user and group names in String(255) columns
MAX_USER_LENGTH = 255
MAX_GROUP_LENGTH = 255
MAX_MAINTAINER_GROUPS = 20

_ALIAS_RE = re.compile(r"^[\w\-]+$")
_RESERVED_ALIAS_RE = re.compile(r"^[vV]\d+$")
_VERSION_RE = re.compile(rf"^[0-9]{{1,{MAX_VERSION_DIGITS}}}$")
# MLflow run ids are uuid4 hex strings
_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_BAD_NAME_CHARS = "/:@'\"\\"
# addresses of the private MLflow server and its stores, as they appear in MLflow's exceptions
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
_HOST_RE = re.compile(
    r"(?:\b127(?:\.\d{1,3}){3}|\blocalhost|\[::1\]|\b0\.0\.0\.0)(?::\d+)?|\bport=\d+"
)


def scrub(text: str) -> str:
    """``text`` without URLs, loopback addresses or ports: what MLflow's exceptions carry about
    the private server (``http://127.0.0.1:<port>/...``) is nobody's business but the service's.
    ``runs:/`` and ``models:/`` URIs stay (one slash: they name a user's own things)."""
    return _HOST_RE.sub("<internal>", _URL_RE.sub("<internal URL>", str(text)))


class RegistryError(Exception):
    """A refusal the caller can act on; ``status`` is the HTTP status a service should return.

    400: bad input (name, alias, version, policy value); 403: the user may not do this;
    404: the model, version, run or alias does not exist; 409: the registry's state forbids it
    (nothing to roll back to, version never passed the gates, ...). The message never carries an
    internal address (see :func:`scrub`).
    """

    def __init__(self, message: str, status: int = 400):
        message = scrub(message)
        super().__init__(message)
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def validate_model_name(name: Any) -> str:
    """Return ``name`` if MLflow would accept it as a registered model name, else raise 400.

    Mirrors MLflow's own rules (non-blank, no ``/`` or ``:``, must not resolve to another path,
    at most 256 characters) so the user sees the reason before any request is made. ``@`` is
    refused too: it separates the alias in ``models:/<name>@<alias>`` URIs, so such a model
    could never be loaded by alias; quotes and backslashes are refused so a name is always
    safe inside an MLflow search filter.
    """
    allowed = "printable characters except / : @ ' \" \\, at most 256"
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"model name is required ({allowed})")
    if len(name) > MAX_MODEL_NAME_LENGTH:
        raise RegistryError(f"model name is {len(name)} characters long; allowed: {allowed}")
    bad = sorted({c for c in name if c in _BAD_NAME_CHARS or not c.isprintable()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise RegistryError(f"invalid model name {name!r}: it contains {shown}; allowed: {allowed}")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        raise RegistryError(
            f"invalid model name {name!r}: MLflow treats names as paths and this one resolves to "
            f"{norm!r}; allowed: {allowed}"
        )
    return name


def validate_alias(alias: Any, field: str = "alias") -> str:
    """Return ``alias`` (without a leading ``@``) if MLflow accepts it as an alias, else raise 400."""
    allowed = f"letters, digits, _ and -, at most {MAX_ALIAS_LENGTH}"
    if not isinstance(alias, str) or not alias:
        raise RegistryError(f"{field} is required ({allowed})")
    alias = alias.removeprefix("@")
    if not _ALIAS_RE.match(alias) or len(alias) > MAX_ALIAS_LENGTH:
        shown = alias if len(alias) <= 60 else alias[:60] + "..."
        raise RegistryError(f"invalid {field} {shown!r}: use {allowed}")
    if _RESERVED_ALIAS_RE.match(alias) or alias.lower() == "latest":
        raise RegistryError(
            f"{field} {alias!r} is reserved by MLflow (v<number> and 'latest'); use another name"
        )
    return alias


def validate_version(version: Any) -> str:
    """Return a model version number as MLflow's string form (``" 07 "`` -> ``"7"``), or raise 400.

    At most nine digits: MLflow stores versions as 32-bit integers and answers a longer number
    with a server error, which its client retries for minutes.
    """
    text = str(version).strip() if isinstance(version, str | int) else ""
    if isinstance(version, bool) or not _VERSION_RE.match(text) or int(text) < 1:
        shown = repr(version) if len(repr(version)) <= 40 else repr(version)[:40] + "..."
        raise RegistryError(
            f"invalid model version {shown}: use a positive integer of 1 to "
            f"{MAX_VERSION_DIGITS} digits, such as 3"
        )
    return str(int(text))


def validate_user(user: Any, what: str = "user") -> str:
    if not isinstance(user, str) or not user.strip():
        raise RegistryError(f"the acting {what} is required")
    return user


def validate_text(value: Any, field: str, max_length: int) -> str:
    """An optional free-text field: a string (``None`` counts as ``""``) of at most ``max_length``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RegistryError(
            f"{field} must be a string of at most {max_length} characters, not {_type_name(value)}"
        )
    if len(value) > max_length:
        raise RegistryError(f"{field} is {len(value)} characters; at most {max_length}")
    return value


def validate_reason(reason: Any) -> str:
    return validate_text(reason, "reason", MAX_REASON_LENGTH)


def validate_run_id(run_id: Any, field: str = "run_id") -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:60] + "..."
        raise RegistryError(
            f"invalid {field} {shown}: expected an MLflow run id (32 lowercase hex digits, as "
            "shown on the run's page)"
        )
    return run_id


def validate_artifact_path(path: Any, field: str = "artifact_path") -> str:
    """The name a model was logged with (``model``), as a relative path without ``..``."""
    example = "use the name the model was logged with, e.g. 'model'"
    if not isinstance(path, str):
        raise RegistryError(f"{field} must be a string ({example}), not {_type_name(path)}")
    clean = path.strip("/")
    if not clean.strip():
        raise RegistryError(f"{field} is empty; {example}")
    if len(clean) > MAX_ARTIFACT_PATH_LENGTH:
        raise RegistryError(
            f"{field} is {len(clean)} characters; at most {MAX_ARTIFACT_PATH_LENGTH}"
        )
    if ".." in clean.split("/") or "\\" in clean or not clean.isprintable():
        raise RegistryError(
            f"invalid {field} {clean[:60]!r}: a relative path without '..' or backslashes; {example}"
        )
    return clean


def _name_problem(value: Any, max_length: int, extra_bad: str = "") -> str | None:
    if not isinstance(value, str):
        return f"a string, not {_type_name(value)}"
    if not value.strip():
        return "a non-empty name"
    if value != value.strip():
        return "a name without leading or trailing spaces"
    if len(value) > max_length:
        return f"at most {max_length} characters (this one has {len(value)})"
    bad = sorted({c for c in value if c in extra_bad or not c.isprintable()})
    if bad:
        return "a name without " + ", ".join(repr(c) for c in bad)
    return None


def validate_owner(owner: Any, field: str = "owner") -> str:
    """A hub user name, as the model's owner."""
    problem = _name_problem(owner, MAX_USER_LENGTH)
    if problem:
        raise RegistryError(f"invalid {field} {owner!r}: expected a hub user name, {problem}")
    return owner


def validate_groups(groups: Any, field: str = "maintainers") -> list[str]:
    """A list of hub group names (stored comma-separated, so a name may not contain a comma)."""
    if not isinstance(groups, list):
        raise RegistryError(
            f'{field} must be a list of hub group names, such as ["data-science"], '
            f"not {_type_name(groups)}"
        )
    if len(groups) > MAX_MAINTAINER_GROUPS:
        raise RegistryError(f"{field} lists {len(groups)} groups; at most {MAX_MAINTAINER_GROUPS}")
    for group in groups:
        problem = _name_problem(group, MAX_GROUP_LENGTH, extra_bad=",")
        if problem:
            shown = repr(group) if len(repr(group)) <= 60 else repr(group)[:60] + "..."
            raise RegistryError(f"invalid group {shown} in {field}: expected {problem}")
    return list(dict.fromkeys(groups))


def check_fields(body: dict, allowed: tuple[str, ...], what: str) -> None:
    """400 naming the fields of ``body`` that ``what`` does not take."""
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise RegistryError(
            f"unknown field(s) {', '.join(repr(k) for k in unknown)} in {what}; "
            f"allowed: {', '.join(allowed)}"
        )
