"""The MLflow calls the registry makes, with MLflow's errors turned into ``RegistryError``.

MLflow's client raises ``MlflowException`` with the private server's URL in its message and
retries server errors for minutes; the registry answers a person, quickly, in plain words.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, MutableMapping

from .validation import RegistryError, scrub

# MLflow error codes that mean "the request was wrong", and the status to answer them with
_INPUT_ERRORS = {
    "RESOURCE_DOES_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 409,
    "ALREADY_EXISTS": 409,
    "INVALID_STATE": 409,
    "PERMISSION_DENIED": 403,
}

# How this process's MLflow client talks to the private server (see ``limit_mlflow_requests``)
MLFLOW_REQUEST_LIMITS = {
    # MLflow's defaults (7 retries, backoff factor 2, 120 s) hold a request for minutes when the
    # server answers an error; on a loopback server a failure does not heal by waiting.
    # (MLflow reads the backoff factor as an integer: 0, so each retry waits only the jitter)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.3",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def limit_mlflow_requests(environ: MutableMapping[str, str] | None = None) -> None:
    """Bound the MLflow client's retries and timeout in this process, unless already configured.

    MLflow reads these settings from the environment on every request; values an operator set
    are kept.
    """
    environ = os.environ if environ is None else environ
    for key, value in MLFLOW_REQUEST_LIMITS.items():
        environ.setdefault(key, value)


def is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def as_registry_error(exc: Exception) -> RegistryError:
    """An ``MlflowException`` as the refusal to answer: 4xx when the input caused it (unknown
    resource, invalid value), 502 when the MLflow server failed; no internal address either way."""
    code = getattr(exc, "error_code", None) or "INTERNAL_ERROR"
    message = _first_line(getattr(exc, "message", None) or str(exc))
    message = message.removeprefix(f"{code}: ")
    status = _INPUT_ERRORS.get(code)
    if status is None:
        return RegistryError(f"the MLflow server could not do this ({code}): {message}", 502)
    return RegistryError(message, status)


def mlflow_errors(fn):
    """Decorate a registry operation so no ``MlflowException`` escapes it (see ``as_registry_error``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RegistryError:
            raise
        except Exception as e:
            from mlflow.exceptions import MlflowException

            if isinstance(e, MlflowException):
                raise as_registry_error(e) from None
            raise

    return wrapper


def get_registered_model(client, name: str):
    """The registered model, or None when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if is_not_found(e):
            return None
        raise


def require_registered_model(client, name: str):
    model = get_registered_model(client, name)
    if model is None:
        raise RegistryError(
            f"registered model {name!r} does not exist; publish a version first", 404
        )
    return model


def ensure_registered_model(client, name: str, tags: Mapping[str, str]):
    """The registered model; created with ``tags`` when missing (and only then)."""
    from mlflow.exceptions import MlflowException

    model = get_registered_model(client, name)
    if model is not None:
        return model
    try:
        return client.create_registered_model(name, tags=dict(tags))
    except MlflowException as e:
        if e.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):  # created concurrently
            return client.get_registered_model(name)
        raise


def get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if is_not_found(e) or e.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryError(f"run {run_id!r} not found", 404) from None
        raise


def aliases_of(model) -> dict[str, str]:
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def describe_aliases(model) -> str:
    aliases = aliases_of(model)
    if not aliases:
        return "it has no aliases yet"
    return "existing aliases: " + ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items()))


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, scrubbed: a gate's or a download's failure."""
    return scrub(f"{type(exc).__name__}: {_first_line(str(exc))}".rstrip(": "))
