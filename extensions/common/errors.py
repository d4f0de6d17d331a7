"""How a hubml service refuses a request."""

from __future__ import annotations

from tornado import web


class APIError(web.HTTPError):
    """A refusal a person can act on: the status, what was wrong and what is allowed.

    ``extra`` fields are added to the JSON reply (for example ``log_tail`` of a crashed app);
    ``headers`` are sent with it (for example ``Retry-After`` with a 503).
    """

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(status, message.replace("%", "%%"))
        self.message, self.extra, self.headers = message, extra, dict(headers or {})


def error_message(exc: BaseException | None, fallback: str) -> str:
    """The message of ``exc`` as a person should read it."""
    return getattr(exc, "message", None) or getattr(exc, "log_message", None) or fallback
