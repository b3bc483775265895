"""Small helpers shared by the simulators: clock, timestamp formats, ids, JSON bodies, rate windows."""

from __future__ import annotations

import math
import secrets
import string
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Request

_ALNUM_LOWER = string.ascii_lowercase + string.digits


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_seconds(moment: datetime) -> str:
    """`2026-11-22T10:00:01Z`: what Zoom and NeetoCal use for UTC instants."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(moment: datetime) -> str:
    """`2026-11-22T10:00:01.123Z`: millisecond precision, as NeetoCal and meetergo timestamps are."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 timestamp that carries `Z` or an offset; naive input is rejected."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without offset: {value!r}")
    return parsed


def one_second_ahead_iso(now: datetime | None = None) -> str:
    """A Zoom-style `Retry-After` value: the next whole second at least 1 s from now."""
    moment = (now or utcnow()) + timedelta(seconds=1)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return iso_seconds(moment)


def zone_or_none(name: Any) -> ZoneInfo | None:
    """The IANA zone called `name`, or None when it is not a known zone name."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def short_id(length: int = 7) -> str:
    """A lower-case alphanumeric id such as NeetoCal's `sid`."""
    return "".join(secrets.choice(_ALNUM_LOWER) for _ in range(length))


def random_digits(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


class BodyError(ValueError):
    """The request body is not a JSON object."""


def json_object_body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request's JSON object body; raises BodyError for malformed JSON or a non-object."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BodyError("empty body")
    parsed = request.get_json(force=True, silent=True, cache=True)
    if not isinstance(parsed, dict):
        raise BodyError("not a JSON object")
    return parsed


def int_arg(request: Request, name: str, default: int) -> int | None:
    """A query parameter read as an int: `default` when absent, None when present but not an integer."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return None


class SlidingWindow:
    """Counts calls in a sliding time window; `try_acquire` refuses a call that would exceed the limit.

    Refused calls are not counted, so a client that backs off as told is let through again.
    """

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, limit: int | None) -> float | None:
        """None if the call may proceed (and is counted); else seconds until a slot frees up."""
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            while self._calls and now - self._calls[0] >= self._window:
                self._calls.popleft()
            if len(self._calls) >= limit:
                oldest = self._calls[0] if self._calls else now
                return max(0.0, self._window - (now - oldest))
            self._calls.append(now)
            return None

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


def whole_seconds(seconds: float) -> str:
    """A `Retry-After` value in whole seconds, never 0 (a 0 invites a hot retry loop)."""
    return str(max(1, math.ceil(seconds)))
