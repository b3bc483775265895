"""What operators do to appointments, shared by the admin API and the `meetbridge` CLI."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from meetbridge.config import Settings
from schemas.times import epoch_utc_seconds
from workers.host_link_tokens import host_link
from workers.queue import queue_syncs
from workers.state import AppointmentRecord
from workers.wiring import Services


def appointment_view(services: Services, appointment_id: str) -> dict[str, Any] | None:
    """The admin API's view of one appointment. Never includes the raw start_url (it is a credential)."""
    record = services.store.load(appointment_id)
    if record is None:
        return None
    return {
        "appointment_id": appointment_id,
        "status": record.status,
        "zoom": {
            "meeting_id": record.zoom_meeting_id,
            "join_url": record.zoom_join_url,
            "start_url_expires_at": utc_iso(record.zoom_start_url_expires_at),
            "none_because": record.zoom_skipped or (
                "meetergo's own Zoom meeting, outside this Zoom account: its link is the join URL, and there is no "
                "host link for it" if record.zoom_external else None),
            # "meetergo" when meetergo's own Zoom integration made the meeting (meetbridge made none).
            "made_by": record.zoom_owner or ("meetbridge" if record.zoom_meeting_id else None),
        },
        "neetocal": neetocal_view(record),
        "host_link": host_link_for(services.settings, record),
        "error": record.error or record.refresh_error,
        # Absent or null when all is well (CONTRACT.md); synced appointments may still carry one.
        "warning": "; ".join(filter(None, (record.zoom_warning, record.neetocal_warning))) or record.skipped_reason,
        "waiting": {"reason": record.waiting_reason, "until": record.resume_at} if record.status == "waiting" else None,
        "history": services.store.history(appointment_id),
    }


def neetocal_view(record: AppointmentRecord) -> dict[str, Any]:
    """The first attendee's booking (as the contract shows it), and every attendee's under `bookings`."""
    bookings = [{"email": entry["email"], "booking_sid": entry.get("sid"), "meeting_slug": entry.get("slug"),
                 "refused": entry.get("refused")}
                for entry in json.loads(record.neetocal_bookings or "{}").values()]
    if not bookings and record.neetocal_booking_sid:  # an earlier version's record, until its next sync
        bookings = [{"email": None, "booking_sid": record.neetocal_booking_sid,
                     "meeting_slug": record.neetocal_meeting_slug, "refused": None}]
    first = next((b for b in bookings if b["booking_sid"]), None)
    return {"booking_sid": first["booking_sid"] if first else None,
            "meeting_slug": first["meeting_slug"] if first else None, "bookings": bookings}


def host_link_for(settings: Settings, record: AppointmentRecord) -> str | None:
    """The host link that opens now (bound to the current host and link version), or None."""
    if record.status == "cancelled":
        return None
    return host_link(settings, record)


def revoke_host_link(services: Services, appointment_id: str) -> str | None:
    """Kill the appointment's host link; returns its new one (None while there is nothing to start)."""
    services.store.revoke_host_link(appointment_id)
    services.store.note(appointment_id, "host_link_revoked", "by an operator")
    record = services.store.load(appointment_id)
    return host_link_for(services.settings, record) if record else None


def replay(services: Services, appointment_id: str) -> bool:
    """Run the sync again (safe any number of times); False if the appointment is unknown."""
    store = services.store
    if not store.exists(appointment_id):
        return False
    store.clear_failure(appointment_id)
    store.update(appointment_id, status="pending")
    store.note(appointment_id, "replay", "sync requested by an operator")
    queue_syncs(services, [appointment_id])
    return True


def appointments_with_status(services: Services, status: str, batch: int = 500) -> Iterator[str]:
    if status == "failed":
        yield from services.store.dead_letters()
        return
    ids = services.store.appointment_ids(batch)
    while chunk := list(itertools.islice(ids, batch)):
        statuses = services.store.statuses(chunk)
        yield from (appointment_id for appointment_id, found in zip(chunk, statuses, strict=True) if found == status)


def utc_iso(epoch: float | None) -> str | None:
    return None if epoch is None else epoch_utc_seconds(epoch)
