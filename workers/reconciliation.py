"""meetergo as the source of truth: reading appointments back, and reconciling against its list.

Used only when MEETERGO_API_KEY is set. meetergo allows 100 requests a minute per key, so appointments are
read back where events cannot be trusted on their own (a `booking_cancelled` also fires when one attendee
leaves a group booking) and by the periodic reconciliation that heals lost webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError

from schemas.events import AppointmentEvent, Host
from schemas.meetergo import ReadbackSchema, readback_event
from workers.clients.errors import MeetbridgeError, NotFound
from workers.desired import fold
from workers.state.caches import UsersCache
from workers.wiring import Services

log = logging.getLogger(__name__)

USERS_CACHE_SECONDS = 3600
READBACK = ReadbackSchema()  # built once: a schema deep-copies its fields when built


class HostDirectory:
    """meetergo user id -> host, cached in Redis (the REST appointment names hosts by id only)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.cache = UsersCache(services.redis, USERS_CACHE_SECONDS)
        self._known: dict[str, dict[str, Any]] | None = None  # read from Redis once per directory
        self._reloaded = False

    def hosts(self, host_ids: list[str]) -> tuple[Host, ...]:
        if self._known is None:
            self._known = self._cached()
        if not self._reloaded and any(host_id not in self._known for host_id in host_ids):
            self._reloaded = True  # at most one reload of the users per directory, even when it fails
            try:
                self._known = self._reload()
            except MeetbridgeError as error:
                # Hosts already cached still resolve; an appointment of an unknown host waits for the next run.
                log.warning("could not read meetergo's users: %s", error)
                self.services.metrics.count("meetbridge_reconcile_errors_total", reason="users")
        return tuple(Host(**self._known[host_id]) for host_id in host_ids if host_id in self._known)

    def _cached(self) -> dict[str, dict[str, Any]]:
        return self.cache.read()

    def _reload(self) -> dict[str, dict[str, Any]]:
        users: dict[str, dict[str, Any]] = {}
        for user in self.services.meetergo.users():
            if user.get("id") and user.get("email"):
                name = " ".join(p for p in (user.get("givenName"), user.get("familyName")) if p)
                users[user["id"]] = {"email": user["email"].lower(), "name": name, "id": user["id"]}
        if users:
            self.cache.replace(users)
        return users


def to_event(directory: HostDirectory, raw: dict[str, Any], read_at: datetime) -> AppointmentEvent | None:
    """A read-back as an event, or None (logged) when meetergo's object cannot be understood."""
    try:
        data = READBACK.load(raw)
    except ValidationError as error:
        log.warning("meetergo appointment %s could not be read: %s", raw.get("id"), error.messages)
        return None
    hosts = directory.hosts(data["hostIds"]) if data["hostIds"] else ()
    return readback_event(data, hosts, read_at)


def read_back(services: Services, appointment_id: str) -> AppointmentEvent | None:
    read_at = datetime.now(UTC)
    try:
        raw = services.meetergo.get_appointment(appointment_id)
    except NotFound:
        return None
    return to_event(HostDirectory(services), raw, read_at)


def reconcile(services: Services, enqueue: Callable[[list[str]], int], now: datetime | None = None) -> int:
    """Record what meetergo holds that the service has not seen or has out of date; returns how many
    appointments were queued for a sync. Each appointment is reconciled on its own: one that cannot be read
    is counted in `meetbridge_reconcile_errors_total` and skipped, and what was found is queued even when the
    listing breaks off."""
    now = now or datetime.now(UTC)
    stale: list[str] = []
    directory = HostDirectory(services)
    try:
        for raw in services.meetergo.appointments():
            try:
                found = reconcile_one(services, directory, raw, now)
                if found:
                    stale.append(found)
            except (MeetbridgeError, ValidationError, ValueError, TypeError, KeyError) as error:
                log.warning("could not reconcile meetergo appointment %r: %s", _id_of(raw), error)
                services.metrics.count("meetbridge_reconcile_errors_total", reason="appointment")
    except MeetbridgeError as error:
        log.warning("meetergo's appointment list broke off: %s", error)
        services.metrics.count("meetbridge_reconcile_errors_total", reason="listing")
    return enqueue(stale) if stale else 0


def reconcile_one(services: Services, directory: HostDirectory, raw: Any, now: datetime) -> str | None:
    """Record meetergo's view of one appointment if it differs from the service's; returns its id if it did."""
    if not isinstance(raw, dict):
        raise TypeError(f"an appointment is a JSON object, not {type(raw).__name__}")
    event = to_event(directory, raw, now)
    if event is None:
        services.metrics.count("meetbridge_reconcile_errors_total", reason="unreadable")
        return None
    if event.end is None or event.end <= now:
        return None  # an appointment that is over needs no meeting
    known = services.store.events(event.appointment_id)
    if _same_appointment(fold(known), fold([*known, event])):
        return None
    # Pending first: if the run breaks off before it queues what it found, the stale-pending sweep queues this one
    # (the next run would see the event recorded, and nothing to do).
    services.store.mark_pending([event.appointment_id])
    services.store.add_event(event)
    services.store.note(event.appointment_id, "reconciled", "meetergo holds a newer state of this appointment")
    return event.appointment_id


def _id_of(raw: Any) -> Any:
    return raw.get("id") if isinstance(raw, dict) else None


def _same_appointment(before: Any, after: Any) -> bool:
    if before is None or after is None:
        return before is after
    return _compared(before) == _compared(after)


def _compared(desired: Any) -> tuple[Any, ...]:
    """What reconciliation compares: when, who hosts, who attends (a group's attendees come and go), the link."""
    return (desired.cancelled, desired.start, desired.end, [h.email for h in desired.hosts],
            sorted(a.email or f"phone:{a.phone}" for a in desired.attendees), desired.meeting_link)
