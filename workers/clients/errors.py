"""The one error tree: what another service answered, and what meetbridge itself decided.

    MeetbridgeError
    ├── APIError                  a remote API's answer (or its absence): service, HTTP status, the API's own code
    │   ├── APIConnectionError    no answer; the request may or may not have taken effect   (transient)
    │   │   └── APITimeoutError
    │   ├── AuthError             401/403: credentials wrong, expired or short of a scope
    │   ├── NotFound              404
    │   ├── ValidationFailed      300/400/422: the request itself is wrong
    │   │   └── SlotUnavailable   NeetoCal refused the slot
    │   ├── Conflict              409                                                        (transient)
    │   ├── RateLimited           a per-second budget, as the remote API counts it          (transient)
    │   ├── DailyCapReached       a per-day budget of the API is spent: wait until it resets    (waits)
    │   └── ServerError           5xx                                                        (transient)
    └── ServiceError              meetbridge's own outcome, no remote call involved
        ├── CannotSync            the appointment cannot be mirrored as it stands
        ├── NotConfigured         credentials for an API are not set
        ├── BudgetTaken           meetbridge's own share of a per-second budget is taken too far ahead (transient)
        ├── LinkGone              a cached NeetoCal scheduling link is gone from NeetoCal: made again (transient)
        └── QuotaParked           a host's daily Zoom create/update quota is spent: wait until 00:00 UTC (waits)

`transient` tells the sync whether trying again later can help; `WaitsUntil` errors park it until `resume_at`;
everything else fails the appointment at once with the error's message, written for an operator to read.
Each client maps its API's answers onto the tree by the API's own error code first (`codes`), then by HTTP status
(`STATUS_ERRORS`); message text only where the API gives nothing else, each such case cited where it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


class MeetbridgeError(Exception):
    """Root of every error meetbridge raises on purpose."""

    transient = False
    service = "meetbridge"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class WaitsUntil(MeetbridgeError):
    """A budget is spent until `resume_at`: the sync is parked until then, not retried and not failed."""

    resume_at: datetime


# --- remote API errors ---------------------------------------------------------------------------------------
class APIError(MeetbridgeError):
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
        super().__init__(message, retry_after=retry_after)
        self.service = service
        self.status = status
        self.code = code
        self.body = body
        self.request_id = request_id

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
    """The remote API's per-second budget: a short wait helps."""

    transient = True


class DailyCapReached(APIError, WaitsUntil):
    """A per-day budget of the remote API is spent: wait until it resets. `per_host`: Zoom's 100 meeting
    creates/updates per host and UTC day (the client then parks the host's own quota), else a daily limit of
    the API for the whole account."""

    def __init__(self, message: str, *, resume_at: datetime, per_host: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.resume_at = resume_at
        self.per_host = per_host


class ServerError(APIError):
    transient = True


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


def error_class_for(status: int, code: int | str | None = None,
                    codes: Mapping[int | str, type[APIError]] | None = None) -> type[APIError]:
    """The class of an API's error answer: by the API's own `code` (its table `codes`), else by HTTP status."""
    if codes and code is not None and code in codes:
        return codes[code]
    if status >= 500:
        return ServerError
    return STATUS_ERRORS.get(status, APIError)


# --- the service's own outcomes ------------------------------------------------------------------------------
class ServiceError(MeetbridgeError):
    """Something meetbridge decided itself; `service` names the API it concerns, if any."""

    def __init__(self, message: str, *, service: str = "meetbridge", retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.service = service

    def __str__(self) -> str:
        return f"{self.service}: {self.message}"


class CannotSync(ServiceError):
    """The appointment itself cannot be mirrored as it stands."""


class NotConfigured(ServiceError):
    """The service lacks credentials for this API."""


class BudgetTaken(ServiceError):
    """meetbridge's own share of a per-second budget is taken further ahead than a call may wait."""

    transient = True


class LinkGone(ServiceError):
    """NeetoCal no longer knows a scheduling link the cache names (deleted there): the cache forgets it, and the
    next attempt finds or makes it again."""

    transient = True


class QuotaParked(ServiceError, WaitsUntil):
    """A host's daily Zoom create/update quota is spent (counted by meetbridge, or Zoom said so)."""

    def __init__(self, message: str, *, resume_at: datetime, service: str = "zoom") -> None:
        super().__init__(message, service=service)
        self.resume_at = resume_at
