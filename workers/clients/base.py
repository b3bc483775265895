"""What every API client shares: one httpx.Client with timeouts, error mapping, short in-call retries (over
workers/clients/transport.py).

In-call retries are for blips (a reset connection, a 503, a per-second 429) on requests that are safe to
repeat. Anything longer is the sync task's business: it retries the whole sync later with backoff, which
costs no worker time while it waits.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

import httpx

from schemas.times import parse_utc
from workers.clients.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    RateLimited,
    error_class_for,
)
from workers.clients.transport import default_transport

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
IN_CALL_RETRIES = 2
IN_CALL_MAX_WAIT_SECONDS = 5.0
RATE_LIMITED_WAIT_SECONDS = 1.0
# Called with the method before each remote call made in the context that set it (a sync: workers/sync.py), so that
# nothing is written to Zoom or NeetoCal while a result the sync kept for later is unrecorded.
before_remote_call: ContextVar[Callable[[str], None] | None] = ContextVar("before_remote_call", default=None)


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; never sooner than the server's Retry-After."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, base))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds, an HTTP date, or (Zoom) an ISO timestamp."""
    if not value:
        return None
    value = value.strip()
    now = time.time() if now is None else now
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parse_utc(value).timestamp() - now)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class ApiClient:
    """Base of the Zoom, NeetoCal and meetergo clients."""

    service: ClassVar[str]
    # The API's own error codes that say more than the HTTP status (workers/clients/errors.py).
    codes: ClassVar[Mapping[int | str, type[APIError]]] = {}

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        observe: Callable[[str, str, int | None, float], None] | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            transport=transport if transport is not None else default_transport(),
            headers={"Accept": "application/json", "User-Agent": "meetbridge/0.1"},
        )
        self._observe = observe

    def close(self) -> None:
        self.http.close()

    # Subclasses add credentials and, where an API has them, rate limits.
    def auth_headers(self) -> dict[str, str]:
        return {}

    def before_request(self, operation: str) -> None:
        """Called before every attempt (rate limiting)."""

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        if retries is None:
            retries = IN_CALL_RETRIES if method in IDEMPOTENT_METHODS else 0
        hook = before_remote_call.get()
        attempt = 0
        while True:
            if hook is not None:
                # Before each attempt: a retried call's rate waits and timeouts add up past one attempt's worth.
                hook(method)
            try:
                return self._send(method, path, operation=operation, json=json, params=params, data=data)
            except APIError as error:
                if not error.transient or attempt >= retries:
                    raise
                retry_after = error.retry_after
                if retry_after is None and isinstance(error, RateLimited):
                    # A per-second budget spent, its Retry-After left out (seen on Zoom's 429, API-FACTS 2.5):
                    # the budget's window is a second, and a quicker retry only spends another answer.
                    retry_after = RATE_LIMITED_WAIT_SECONDS
                delay = backoff_delay(attempt, base=0.25, cap=2.0, retry_after=retry_after)
                if delay > IN_CALL_MAX_WAIT_SECONDS:
                    raise
                log.info("retrying %s %s in %.2fs: %s", self.service, operation, delay, error)
                time.sleep(delay)
                attempt += 1

    def _send(self, method: str, path: str, *, operation: str, json: Any, params: dict[str, Any] | None,
              data: dict[str, Any] | None = None) -> httpx.Response:
        self.before_request(operation)
        started = time.monotonic()
        status: int | None = None
        try:
            response = self.http.request(method, path.lstrip("/"), json=json, params=params, data=data,
                                         headers=self.auth_headers())
            status = response.status_code
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"{operation} timed out", service=self.service) from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{operation} failed: {type(exc).__name__}", service=self.service) from exc
        finally:
            if self._observe:
                self._observe(self.service, operation, status, time.monotonic() - started)
        if response.is_success:
            return response
        raise self.error_from(response, operation)

    def error_from(self, response: httpx.Response, operation: str) -> APIError:
        body = _json_or_text(response)
        message, code = self.describe_error(body)
        cls = error_class_for(response.status_code, code, self.codes)
        return cls(
            f"{operation}: {message or response.reason_phrase}",
            service=self.service,
            status=response.status_code,
            code=code,
            body=body,
            request_id=response.headers.get("x-zm-trackingid") or response.headers.get("x-request-id"),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def describe_error(self, body: Any) -> tuple[str, int | str | None]:
        """The human message and API-specific code of an error body (formats differ per API)."""
        if isinstance(body, dict):
            for key in ("message", "error", "notice", "reason"):
                value = body.get(key)
                if isinstance(value, list):
                    value = "; ".join(map(str, value))
                if value:
                    return str(value)[:500], body.get("code")
            if isinstance(body.get("errors"), list):
                return "; ".join(map(str, body["errors"]))[:500], body.get("code")
        return (str(body)[:200] if body else ""), None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        # Zoom sometimes answers errors in XML; keep the text for the message.
        return response.text
