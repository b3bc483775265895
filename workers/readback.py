"""meetergo as the source of truth: reading appointments back, and reconciling against its list.

Used only when MEETERGO_API_KEY is set. meetergo allows 100 requests a minute per key, so appointments are
read back where events cannot be trusted on their own (a `booking_cancelled` also fires when one attendee
leaves a group booking) and by the periodic reconciliation that heals lost webhooks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError

from schemas.events import AppointmentEvent, Host
from schemas.meetergo import ReadbackSchema, readback_event
from workers.clients.errors import NotFound
from workers.desired import fold
from workers.services import Services
from workers.state import KEYS

log = logging.getLogger(__name__)

USERS_CACHE_SECONDS = 3600


class HostDirectory:
    """meetergo user id -> host, cached in Redis (the REST appointment names hosts by id only)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._known: dict[str, dict[str, Any]] | None = None  # read from Redis once per directory
        self._reloaded = False

    def hosts(self, host_ids: list[str]) -> tuple[Host, ...]:
        if self._known is None:
            self._known = self._cached()
        if not self._reloaded and any(host_id not in self._known for host_id in host_ids):
            self._known, self._reloaded = self._reload(), True  # at most one reload of the users per directory
        return tuple(Host(**self._known[host_id]) for host_id in host_ids if host_id in self._known)

    def _cached(self) -> dict[str, dict[str, Any]]:
        raw = self.services.redis.hgetall(KEYS.meetergo_users)
        return {user_id: json.loads(value) for user_id, value in raw.items()}

    def _reload(self) -> dict[str, dict[str, Any]]:
        users: dict[str, dict[str, Any]] = {}
        for user in self.services.meetergo.users():
            if user.get("id") and user.get("email"):
                name = " ".join(p for p in (user.get("givenName"), user.get("familyName")) if p)
                users[user["id"]] = {"email": user["email"].lower(), "name": name, "id": user["id"]}
        if users:
            with self.services.redis.pipeline() as pipe:
                pipe.delete(KEYS.meetergo_users)
                pipe.hset(KEYS.meetergo_users, mapping={k: json.dumps(v) for k, v in users.items()})
                pipe.expire(KEYS.meetergo_users, USERS_CACHE_SECONDS)
                pipe.execute()
        return users


def to_event(directory: HostDirectory, raw: dict[str, Any], read_at: datetime) -> AppointmentEvent | None:
    """A read-back as an event, or None (logged) when meetergo's object cannot be understood."""
    try:
        data = ReadbackSchema().load(raw)
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
    appointments were queued for a sync."""
    now = now or datetime.now(UTC)
    stale: list[str] = []
    directory = HostDirectory(services)
    for raw in services.meetergo.appointments():
        event = to_event(directory, raw, now)
        if event is None or event.end is None or event.end <= now:
            continue  # an appointment that is over needs no meeting
        known = services.store.events(event.appointment_id)
        if _same_appointment(fold(known), fold([*known, event])):
            continue
        services.store.add_event(event)
        services.store.note(event.appointment_id, "reconciled", "meetergo holds a newer state of this appointment")
        stale.append(event.appointment_id)
    return enqueue(stale) if stale else 0


def _same_appointment(before: Any, after: Any) -> bool:
    if before is None or after is None:
        return before is after
    return (before.cancelled, before.start, before.end, [h.email for h in before.hosts]) == (
        after.cancelled, after.start, after.end, [h.email for h in after.hosts])
