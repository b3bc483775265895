"""The UTC timestamp forms the service writes and reads, in one place.

At the floor: it imports nothing from the service, so schemas, workers and webhooks can all use it. The forms
are stored in Redis, sent to Zoom and shown to operators and hosts: change none of them without a migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

UTC_SECONDS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_seconds(moment: datetime) -> str:
    """`2026-11-22T10:00:01Z`: UTC to the second with Z (Zoom's form, the admin API's and the host page's)."""
    return moment.astimezone(UTC).strftime(UTC_SECONDS_FORMAT)


def epoch_utc_seconds(epoch: float) -> str:
    """A Unix time in the `utc_seconds` form."""
    return utc_seconds(datetime.fromtimestamp(epoch, UTC))


def now_utc_millis() -> str:
    """Now as `2026-11-22T10:00:01.123Z` (record and history timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(value: str) -> datetime:
    """An ISO 8601 timestamp with Z, an offset or (taken as UTC) neither, as an aware datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def epoch_of(value: str | None) -> float | None:
    """The Unix time of a stored ISO timestamp (as written by `datetime.isoformat`), or None."""
    return datetime.fromisoformat(value).timestamp() if value else None
