"""The one error hierarchy for every remote call (Zoom, NeetoCal, meetergo) and the service's own limits.

`transient` tells the sync whether trying again later can help; everything else fails the appointment at once
with the error's message, which is written to be read by an operator in the admin API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class APIError(Exception):
    transient = False

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        code: int | str | None = None,
        body: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.status = status
        self.code = code
        self.body = body
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.service} {self.status}" if self.status else self.service
        code = f" (code {self.code})" if self.code not in (None, "", self.status) else ""
        return f"{where}{code}: {self.message}"


class APIConnectionError(APIError):
    """No answer: the request may or may not have taken effect."""

    transient = True


class APITimeoutError(APIConnectionError):
    pass


class AuthError(APIError):
    """401/403: credentials are wrong, expired or lack a scope."""


class NotFound(APIError):
    pass


class ValidationFailed(APIError):
    """300/400/422: the request itself is wrong; sending it again will not help."""


class SlotUnavailable(ValidationFailed):
    """NeetoCal refused the slot. Permanent: meetbridge books with `override_availability` (v2), so a refusal
    is NeetoCal's rule (a start in the past, say), not a slot another sync may free."""


class Conflict(APIError):
    transient = True


class RateLimited(APIError):
    transient = True


class DailyLimitReached(RateLimited):
    """A per-day budget is spent (Zoom's 100 create/update per host): wait until it resets, don't retry."""

    transient = False

    def __init__(self, message: str, *, resume_at: datetime, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.resume_at = resume_at


class ServerError(APIError):
    transient = True


class NotConfigured(APIError):
    """The service lacks credentials for this API."""


STATUS_ERRORS: dict[int, type[APIError]] = {
    300: ValidationFailed,
    400: ValidationFailed,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    408: APITimeoutError,
    409: Conflict,
    422: ValidationFailed,
    429: RateLimited,
}


def error_class_for(status: int) -> type[APIError]:
    if status >= 500:
        return ServerError
    return STATUS_ERRORS.get(status, APIError)


class CannotSync(APIError):
    """The appointment itself cannot be mirrored as it stands (e.g. it ended before it was synced)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("service", "meetbridge")
        super().__init__(message, **kwargs)
