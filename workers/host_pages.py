"""Host pages: each host's private page and calendar feed of their upcoming meetings.

A host gets two bearer links, `<PUBLIC_URL>/hosts/<token>` (an HTML page) and `<PUBLIC_URL>/hosts/<token>/calendar.ics`
(the same meetings as an iCalendar feed). The token signs the host's email and the host's page version with
SECRET_KEY (itsdangerous, its own salt) and is verified with SECRET_KEY and every SECRET_KEY_FALLBACKS key, so a
key can be rotated without breaking the links. Bumping the version (`meetbridge host-page EMAIL --rotate`)
revokes every link handed out before.

Both read a per-host index, never a scan of all appointments: a sorted set per host (`Keys.host_meetings`) of
appointment ids scored by when they may leave it (a live meeting: its end; a cancelled one, or one moved to
another host: a week later at the earliest, so that subscribed calendars see it cancelled). The sync keeps it
(`record_sync`, at the end of each successful run) and writes on the appointment's record the few fields the
page shows (`page_*`); a page is then one ZRANGEBYSCORE and one read of the records (a script: HMGET of the
fields a page and a host link are made of, for each meeting).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote

from icalendar import Calendar, Event
from itsdangerous import BadData, URLSafeSerializer

from meetbridge.config import Settings
from schemas.text import printable_line
from schemas.times import epoch_utc_seconds, parse_utc, utc_seconds
from workers.desired import Desired
from workers.state import AppointmentRecord
from workers.state.host_index import HostIndex
from workers.wiring import Services

PATH_PREFIX = "/hosts"
CALENDAR_FILE = "calendar.ics"
_SALT = "meetbridge host page v1"
# A cancelled meeting (or one moved to another host) stays in the feed, marked CANCELLED, at least this long:
# calendar apps refresh subscriptions every few hours at best, and drop it on seeing the cancellation.
CANCELLED_KEPT_SECONDS = 7 * 24 * 3600
SOON_SECONDS = 15 * 60  # a meeting this close to its start is highlighted on the page
FEED_REFRESH = timedelta(minutes=15)
# The index key outlives its last entry by this much, then disappears with nothing left in it.
_INDEX_SLACK_SECONDS = 3600

CONFIRMED, CANCELLED = "confirmed", "cancelled"


# The record's fields a page reads: all of them (so the host link sees every field it may be made of, new ones
# included) but those no page or host link is made of, the start_url (a credential, and the longest) first.
_NOT_READ = frozenset({
    "created_at", "updated_at", "error", "waiting_reason", "resume_at", "refresh_error", "sync_attempts",
    "zoom_start_url", "zoom_topic", "zoom_timezone", "zoom_alt_hosts", "zoom_create_pending", "zoom_update_pending",
    "neetocal_bookings", "neetocal_grouped", "neetocal_warning", "neetocal_booking_sid", "neetocal_meeting_slug",
    "neetocal_slot", "neetocal_join_url", "zoom_warning",
})
_READ_FIELDS = tuple(f.name for f in dataclass_fields(AppointmentRecord)
                     if f.name != "appointment_id" and f.name not in _NOT_READ)


def normalize_email(email: str) -> str:
    """The host's key in the index and in their links; ValueError for what cannot be an email."""
    value = email.strip().lower()
    local, at, domain = value.partition("@")
    if not at or not local or not domain or any(c.isspace() or c in "/\\" for c in value) or len(value) > 320:
        raise ValueError(f"not an email address: {email!r}")
    return value


@dataclass(frozen=True)
class PageLinks:
    email: str
    page_url: str
    calendar_url: str

    def as_dict(self) -> dict[str, str]:
        return {"email": self.email, "page_url": self.page_url, "calendar_url": self.calendar_url}


@dataclass(frozen=True)
class HostMeeting:
    """One meeting as its host's page and feed show it."""

    appointment_id: str
    start: datetime
    end: datetime
    attendee: str
    meeting_type: str
    sequence: int
    cancelled: bool  # cancelled, or moved to another host: gone from the page, CANCELLED in the feed
    join_url: str | None = None
    host_link: str | None = None
    updated: datetime | None = None  # when what the page shows of it last changed

    @property
    def summary(self) -> str:
        return f"{self.meeting_type} with {self.attendee}" if self.attendee else self.meeting_type

    def upcoming(self, now: float) -> bool:
        return not self.cancelled and self.end.timestamp() > now

    def state(self, now: float) -> str | None:
        """"now" while it runs, "soon" within SOON_SECONDS of its start, else None."""
        start, end = self.start.timestamp(), self.end.timestamp()
        if start <= now < end:
            return "now"
        if 0 < start - now <= SOON_SECONDS:
            return "soon"
        return None


# --- deciding (pure) -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageChange:
    """What one successful sync changes for the host pages."""

    host: str
    fields: dict[str, str]
    score: float
    moved_from: str | None  # the previous host, when the meeting moved to another one
    moved_score: float


def page_change(desired: Desired, record: AppointmentRecord, outcome: str, now: float) -> PageChange | None:
    """The record's new page fields and index scores after a sync with `outcome`; None when nothing is known
    that a page could show (a cancellation of a meeting never seen with a time or a host)."""
    cancelled = outcome == "cancelled"
    previous = record.page_host
    current = desired.host.email.strip().lower() if desired.hosts and desired.host.email else None
    # A cancellation leaves the calendar the meeting was in; otherwise it belongs to its host now.
    host = (previous or current) if cancelled else current
    start = desired.start or _parse(record.page_start)
    end = desired.end or _parse(record.page_end)
    if host is None or start is None or end is None:
        return None
    start_iso, end_iso = utc_seconds(start), utc_seconds(end)
    status = CANCELLED if cancelled else CONFIRMED
    sequence = record.page_sequence or 0
    seen = record.page_start is not None
    # RFC 5546's significant changes (time, status, and here the host) raise the SEQUENCE calendars compare.
    if seen and (start_iso != record.page_start or end_iso != record.page_end
                 or status != (record.page_status or CONFIRMED) or host != previous):
        sequence += 1
    # Shown in calendars (the feed's SUMMARY), which refuse control characters: one printable line of each.
    attendee = printable_line(desired.attendee.name or desired.attendee.email) if desired.attendee else None
    kind = printable_line(desired.meeting_type.name or desired.meeting_type.slug or "") if desired.meeting_type \
        else None
    fields = {
        "page_host": host,
        "page_start": start_iso,
        "page_end": end_iso,
        "page_status": status,
        "page_sequence": str(sequence),
        "page_attendee": attendee or record.page_attendee or "",
        "page_meeting_type": kind or record.page_meeting_type or "Appointment",
    }
    changed = any(_text(getattr(record, name)) != value for name, value in fields.items())
    fields["page_updated"] = (epoch_utc_seconds(now) if changed or not record.page_updated
                              else record.page_updated)
    end_epoch = end.timestamp()
    kept = max(end_epoch, now + CANCELLED_KEPT_SECONDS)
    moved_from = previous if previous and previous != host else None
    previous_end = _parse(record.page_end)
    moved_score = max(previous_end.timestamp() if previous_end else end_epoch, now + CANCELLED_KEPT_SECONDS)
    return PageChange(host=host, fields=fields, score=kept if cancelled else end_epoch, moved_from=moved_from,
                      moved_score=moved_score)


def host_meeting(record: AppointmentRecord, email: str,
                 link_for: Callable[[AppointmentRecord], str | None] | None = None) -> HostMeeting | None:
    """How the record shows on `email`'s page; None when it carries no page fields."""
    start, end = _parse(record.page_start), _parse(record.page_end)
    if start is None or end is None:
        return None
    cancelled = record.page_status == CANCELLED or (record.page_host or "") != email
    # The host link is bound to the Zoom meeting's host: never hand one host another's (mid host change).
    own = not cancelled and (record.zoom_host or "").lower() == email
    return HostMeeting(
        appointment_id=record.appointment_id,
        start=start,
        end=end,
        attendee=printable_line(record.page_attendee or ""),  # as written, and for records of earlier versions
        meeting_type=printable_line(record.page_meeting_type or "") or "Appointment",
        sequence=record.page_sequence or 0,
        cancelled=cancelled,
        join_url=record.zoom_join_url if not cancelled else None,
        host_link=link_for(record) if own and link_for is not None else None,
        updated=_parse(record.page_updated),
    )


_CALENDAR_END = b"END:VCALENDAR\r\n"


def calendar_feed(email: str, meetings: list[HostMeeting]) -> bytes:
    """The host's meetings as an RFC 5545 calendar: one VEVENT each, cancelled ones STATUS:CANCELLED."""
    calendar = Calendar()
    calendar.add("prodid", "-//meetbridge//host calendar//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"Meetings of {email}")
    calendar.add("name", f"Meetings of {email}")
    calendar.add("refresh-interval", FEED_REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", _duration(FEED_REFRESH))
    # The events are serialized one by one (and remembered): icalendar spends most of a feed's time folding
    # lines, and a subscribed calendar asks for the same events again every few minutes.
    head = calendar.to_ical()
    if not head.endswith(_CALENDAR_END):
        raise RuntimeError("icalendar ended the calendar in an unexpected way")
    return head[:-len(_CALENDAR_END)] + b"".join(map(event_ical, meetings)) + _CALENDAR_END


@lru_cache(maxsize=4096)
def event_ical(meeting: HostMeeting) -> bytes:
    """One meeting's VEVENT. A pure function of the meeting, so it is cached by it (any change is another key)."""
    event = Event()
    event.add("uid", f"{meeting.appointment_id}@meetbridge")
    # No METHOD on the calendar: DTSTAMP is then when the event last changed (RFC 5545 3.8.7.2).
    event.add("dtstamp", (meeting.updated or meeting.start).astimezone(UTC))
    event.add("dtstart", meeting.start.astimezone(UTC))
    event.add("dtend", meeting.end.astimezone(UTC))
    event.add("sequence", meeting.sequence)
    event.add("summary", meeting.summary)
    event.add("transp", "TRANSPARENT" if meeting.cancelled else "OPAQUE")
    if meeting.cancelled:
        event.add("status", "CANCELLED")
        event.add("description", "Cancelled.")
    else:
        event.add("status", "CONFIRMED")
        lines = [f"Join the Zoom meeting: {meeting.join_url}"] if meeting.join_url else []
        if meeting.host_link:
            # Also in the description: several calendar apps do not show an event's URL.
            lines.append(f"Start it as host: {meeting.host_link}")
            event.add("url", meeting.host_link)
        if meeting.join_url:
            event.add("location", meeting.join_url)
        event.add("description", "\n".join(lines) or meeting.summary)
    return event.to_ical()


# --- acting ----------------------------------------------------------------------------------------------
class HostPages:
    """The host index, kept by the sync, read by the page and the feed; the hosts' signed links."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings: Settings = services.settings
        self.index = HostIndex(services.redis)

    # --- written by the sync -----------------------------------------------------------------------------
    def record_sync(self, appointment_id: str, desired: Desired, record: AppointmentRecord, outcome: str,
                    now: float | None = None) -> None:
        """After a successful sync: the record's page fields and the hosts' indexes follow the outcome."""
        now = time.time() if now is None else now
        change = page_change(desired, record, outcome, now)
        if change is None:
            return
        self.index.record(appointment_id, change.fields, host=change.host, score=change.score,
                          moved_from=change.moved_from, moved_score=change.moved_score, now=now,
                          slack_seconds=_INDEX_SLACK_SECONDS)
        for name, value in change.fields.items():
            setattr(record, name, int(value) if name == "page_sequence" else value)

    # --- read by the page and the feed -------------------------------------------------------------------
    def meetings(self, email: str, now: float | None = None) -> list[HostMeeting]:
        """The host's meetings still in the index (upcoming ones and recently cancelled ones), by start."""
        from workers.admin import host_link_for  # operations → tasks → sync → this module

        now = time.time() if now is None else now
        email = normalize_email(email)
        found = []
        for appointment_id, values in self.index.meetings(email, now, _READ_FIELDS):
            raw = {name: value for name, value in zip(_READ_FIELDS, values, strict=True) if value is not None}
            if not raw:  # the record expired before the index entry
                continue
            record = AppointmentRecord.from_hash(appointment_id, raw)
            meeting = host_meeting(record, email, lambda r: host_link_for(self.settings, r))
            if meeting is not None:
                found.append(meeting)
        found.sort(key=lambda m: (m.start, m.appointment_id))
        return found

    # --- the links ---------------------------------------------------------------------------------------
    def _serializer(self) -> URLSafeSerializer:
        if not self.settings.secret_key:
            raise RuntimeError("host pages need SECRET_KEY")
        # itsdangerous signs with the last key and verifies with every one of them.
        keys = [*reversed(self.settings.secret_key_fallbacks), self.settings.secret_key]
        return URLSafeSerializer(keys, salt=_SALT)

    def version(self, email: str) -> int:
        return self.index.page_version(normalize_email(email))

    def page_links(self, email: str) -> PageLinks:
        email = normalize_email(email)
        return self._links(email, self.version(email))

    def rotate(self, email: str) -> PageLinks:
        """Revoke every link of this host handed out so far, the host links the page and the calendar showed
        included (a leaked calendar feed leaked those too); returns the new page links."""
        email = normalize_email(email)
        version = self.index.next_page_version(email)
        for meeting in self.meetings(email):
            if meeting.host_link:
                self.services.store.revoke_host_link(meeting.appointment_id)
        return self._links(email, version)

    def _links(self, email: str, version: int) -> PageLinks:
        token = self._serializer().dumps([email, version])
        page_url = f"{self.settings.public_url}{PATH_PREFIX}/{quote(token, safe='')}"
        return PageLinks(email=email, page_url=page_url, calendar_url=f"{page_url}/{CALENDAR_FILE}")

    def verify(self, token: str) -> str | None:
        """The host whose current link `token` is; None for a tampered, foreign or revoked one."""
        try:
            raw = self._serializer().loads(token)
            email, version = normalize_email(str(raw[0])), int(raw[1])
        except (BadData, IndexError, KeyError, TypeError, ValueError):
            return None
        return email if version == self.version(email) else None


def _parse(value: str | None) -> datetime | None:
    return parse_utc(value) if value else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)




def _duration(delta: timedelta) -> str:
    return f"PT{int(delta.total_seconds() // 60)}M"
