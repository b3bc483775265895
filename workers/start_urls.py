"""Keeping a valid Zoom start_url for every upcoming meeting, at the fewest Zoom calls.

Each stored start_url has a known expiry (the `exp` of its zak token, else the configured lifetime from when
it was fetched). Its meeting sits in a Redis schedule, due `START_URL_REFRESH_LEAD_SECONDS` before that
expiry; beat's sweep claims what is due and a worker fetches a new one with `GET /meetings/{id}` (rate
label Light; it does not spend the host's daily create/update budget) and reschedules it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meetbridge.config import Settings
from schemas.times import epoch_of, parse_utc
from schemas.zoom import ZoomMeeting
from workers.clients.errors import NotFound
from workers.limits import lock_seconds
from workers.state import AppointmentBusy, AppointmentRecord
from workers.wiring import Services

log = logging.getLogger(__name__)

CUSTCREATE_TTL_SECONDS = 90 * 24 * 3600


def zak_expiry(start_url: str) -> float | None:
    """The `exp` of the zak JWT inside a start_url, if it has one that can be read."""
    try:
        zak = parse_qs(urlsplit(start_url).query).get("zak", [""])[0]
        payload = zak.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def start_url_expiry(start_url: str, fetched_at: float, host: str | None, settings: Settings) -> float:
    own = zak_expiry(start_url)
    if own is not None:
        return own
    custcreate = host is not None and host.lower() in settings.zoom_custcreate_hosts
    return fetched_at + (CUSTCREATE_TTL_SECONDS if custcreate else settings.zoom_start_url_ttl_seconds)


def claim_lease(settings: Settings) -> float:
    # A claimed refresh that does not finish becomes due again after this lease: short enough to be retried
    # well before the start_url expires, long enough for a queued refresh to run first.
    return max(1.0, settings.start_url_refresh_lead_seconds / 3)


def ends_at(record: AppointmentRecord) -> float | None:
    return epoch_of(record.ends_at)


def _unchanged(read: AppointmentRecord) -> dict[str, Any]:
    """What a writer without the lock checks still holds: the meeting, its host and the host links' version."""
    return {"zoom_meeting_id": read.zoom_meeting_id, "zoom_host": read.zoom_host,
            "host_link_version": read.host_link_version or None}


def drift(record: AppointmentRecord, meeting: ZoomMeeting) -> str | None:
    """What differs between the meeting in Zoom and what the sync last applied, if anything."""
    differences = []
    if meeting.start_time and record.zoom_start and _utc(meeting.start_time) != _utc(record.zoom_start):
        differences.append(f"start {meeting.start_time}")
    if meeting.duration is not None and record.zoom_duration is not None and meeting.duration != record.zoom_duration:
        differences.append(f"duration {meeting.duration} min")
    if meeting.host_email and record.zoom_host and meeting.host_email.lower() != record.zoom_host.lower():
        differences.append(f"host {meeting.host_email}")
    return ", ".join(differences) or None


def _utc(value: str) -> datetime:
    return parse_utc(value).astimezone(UTC)


class StartUrls:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.store = services.store

    def save(self, appointment_id: str, meeting: ZoomMeeting, fetched_at: float, meeting_ends_at: float | None, *,
             read: AppointmentRecord) -> float | None:
        """Store a newly fetched start_url and schedule its refresh; returns its expiry, or None when nothing was
        stored. Its fetch may outlast any lock (a slow Zoom, retries), so it is kept only if no sync changed the
        meeting, its host or the links since `read` (another host's meeting, and credential, may stand there)."""
        fields = self.fields(meeting, read.zoom_host, fetched_at)
        if not fields or not self.store.update_if(appointment_id, _unchanged(read), **fields):
            return None
        self.schedule(appointment_id, fields["zoom_start_url_expires_at"], meeting_ends_at)
        if meeting_ends_at is not None:
            # The ended sweep drops it at the end; again if it was fetched after the end (an overrunning meeting's
            # host link) or as the sweep passed. Never moved earlier: a later end may be scheduled already.
            self.store.ended.put_no_earlier(appointment_id, max(meeting_ends_at, fetched_at))
        return fields["zoom_start_url_expires_at"]

    def fields(self, meeting: ZoomMeeting, host: str | None, fetched_at: float) -> dict[str, Any]:
        """The record's fields for a newly fetched start_url (none when Zoom gave none)."""
        if not meeting.start_url:
            return {}
        return {"zoom_start_url": meeting.start_url,
                "zoom_start_url_expires_at": start_url_expiry(meeting.start_url, fetched_at, host, self.settings),
                "refresh_error": None}

    def refresh_due(self, expires_at: float, meeting_ends_at: float | None) -> float | None:
        """When the start_url's refresh is due; None when it stays valid until the meeting is over."""
        due = expires_at - self.settings.start_url_refresh_lead_seconds
        return None if meeting_ends_at is not None and due >= meeting_ends_at else due

    def schedule(self, appointment_id: str, expires_at: float, meeting_ends_at: float | None) -> None:
        """Put the meeting's next refresh on the schedule, or take it off when none is needed before it ends.
        Called again whenever the meeting moves."""
        due = self.refresh_due(expires_at, meeting_ends_at)
        if due is None:
            self.store.refresh.remove(appointment_id)
        else:
            self.store.refresh.put(appointment_id, due)

    def schedule_change(self, expires_at: float, meeting_ends_at: float | None) -> dict[str, float | None]:
        """`schedule` as a change for a held write to carry (Store.update_held's `sets`)."""
        return {self.store.refresh.key: self.refresh_due(expires_at, meeting_ends_at)}

    def refresh(self, appointment_id: str, *, force: bool = False) -> str:
        """Fetch a new start_url if the stored one is due; returns what happened."""
        try:
            with self.store.lock(appointment_id, lock_seconds(self.settings)):
                return self._refresh(appointment_id, force=force)
        except AppointmentBusy:
            return "busy"  # a sync holds it; the claim lease brings it back shortly

    def _refresh(self, appointment_id: str, *, force: bool) -> str:
        record = self.store.load(appointment_id)
        now = time.time()
        if record is None or record.status == "cancelled" or not record.zoom_meeting_id:
            self.store.refresh.remove(appointment_id)
            return "dropped"
        meeting_end = ends_at(record)
        if meeting_end is not None and meeting_end <= now:
            self.store.refresh.remove(appointment_id)
            return "ended"
        expires_at = record.zoom_start_url_expires_at or 0.0
        if not force and expires_at - self.settings.start_url_refresh_lead_seconds > now:
            # Refreshed since it was claimed (another sweep, a host link, a sync): only put it back on time.
            self.store.refresh.put(appointment_id, expires_at - self.settings.start_url_refresh_lead_seconds)
            return "fresh"
        try:
            meeting = self.services.zoom.get_meeting(record.zoom_meeting_id)
        except NotFound:
            # meetergo is the source of truth: the sync this answer queues makes the meeting again. Unless a sync
            # replaced the meeting while Zoom was asked (the lock may have lapsed): the new one is not gone.
            if not self.store.update_if(appointment_id, _unchanged(record), zoom_drift="gone", refresh_error=None):
                return "superseded"
            self.store.refresh.remove(appointment_id)
            self.store.note(appointment_id, "zoom_drift",
                            f"meeting {record.zoom_meeting_id} was deleted in Zoom (3001); making it again")
            return "drifted"
        except Exception as error:
            self.store.update(appointment_id, refresh_error=f"start_url refresh failed: {error}")
            raise
        if self.note_drift(record, meeting):
            return "drifted"
        if self.save(appointment_id, meeting, now, meeting_end, read=record) is None and meeting.start_url:
            return "superseded"
        lag = now - (expires_at - self.settings.start_url_refresh_lead_seconds)
        if not force and expires_at:
            self.services.metrics.observe("meetbridge_start_url_refresh_lag_seconds", max(0.0, lag))
        return "refreshed"

    def note_drift(self, record: AppointmentRecord, meeting: ZoomMeeting) -> bool:
        """Whether someone changed the meeting in Zoom; if so it is noted for the sync to put back. Checked before
        its start_url is kept: a meeting moved to another host carries that host's credential."""
        changed = drift(record, meeting)
        if not changed:
            return False
        # Noted only on the meeting as read: a sync may have moved or replaced it since (what Zoom said is then
        # about the past), and the start_url is not kept either way.
        if self.store.update_if(record.appointment_id, _unchanged(record), zoom_drift="changed",
                                zoom_host=meeting.host_email or record.zoom_host):
            self.store.note(record.appointment_id, "zoom_drift",
                            f"meeting {meeting.id} was changed in Zoom ({changed}); putting it back")
        return True

    def valid_start_url(self, appointment_id: str) -> tuple[str, AppointmentRecord] | None:
        """A start_url valid for at least HOST_LINK_MIN_VALIDITY_SECONDS, refreshing it on the spot if needed."""
        record = self.store.load(appointment_id)
        if record is None:
            return None
        margin = self.settings.host_link_min_validity_seconds
        if record.zoom_start_url and (record.zoom_start_url_expires_at or 0) - margin > time.time():
            return record.zoom_start_url, record
        if not record.zoom_meeting_id or record.status == "cancelled":
            return None
        fetched_at = time.time()
        meeting = self.services.zoom.get_meeting(record.zoom_meeting_id)
        if self.note_drift(record, meeting):
            return None  # not the meeting the host's link was made for any more: the sync puts it back first
        if self.save(appointment_id, meeting, fetched_at, ends_at(record), read=record) is None:
            return None
        self.store.note(appointment_id, "start_url_refreshed", "fetched on demand for the host link")
        return meeting.start_url or "", record
