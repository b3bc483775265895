"""Fold everything known about an appointment into the state Zoom and NeetoCal should be in.

Deliveries repeat and arrive in any order, so nothing is replayed: the newest knowledge by meetergo's own
timestamps wins, fields an event leaves out are filled from older ones, and a cancellation is final unless a
newer read-back of the appointment says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from schemas.events import AppointmentEvent, Attendee, Host, MeetingType

_EPOCH = datetime.min.replace(tzinfo=UTC)
# On equal timestamps: a reschedule is newer than the creation, and a read-back is the truth.
_KIND_RANK = {"booking_created": 0, "booking_rescheduled": 1, "booking_cancelled": 2, "readback": 3}


def _order(event: AppointmentEvent) -> tuple[datetime, int, int, datetime, str]:
    # Equal times and kinds (meetergo's timestamps are often whole seconds): the one the intake recorded later
    # wins (its sequence number; events stored before there was one count as older), then the later receipt
    # time, then content: never the order in which Redis happens to list them.
    return (event.effective_at or _EPOCH, _KIND_RANK[event.kind], event.seq if event.seq is not None else -1,
            event.received_at or _EPOCH, event.fingerprint())


@dataclass(frozen=True)
class Desired:
    appointment_id: str
    cancelled: bool
    start: datetime | None
    end: datetime | None
    hosts: tuple[Host, ...]
    attendees: tuple[Attendee, ...]
    meeting_type: MeetingType | None
    cancel_reason: str | None = None
    channel: str | None = None  # meetergo's channel (zoom, phone, local, ...); None when no event named one
    meeting_link: str | None = None  # a meeting link meetergo made itself (its own Zoom integration)
    location: str | None = None

    @property
    def host(self) -> Host:
        return self.hosts[0]

    @property
    def attendee(self) -> Attendee | None:
        """The first attendee (the one who booked); a group appointment has more in `attendees`."""
        return self.attendees[0] if self.attendees else None

    @property
    def group(self) -> bool:
        return len(self.attendees) > 1

    def wants_zoom(self, zoom_channels: frozenset[str]) -> bool:
        """Whether this appointment gets a Zoom meeting: its channel is one of ZOOM_CHANNELS (an appointment whose
        events name no channel is taken for a Zoom one, as before channels were read)."""
        return self.channel is None or self.channel in zoom_channels

    @property
    def alternative_hosts(self) -> tuple[str, ...]:
        return tuple(h.email for h in self.hosts[1:] if h.email and h.email != self.host.email)

    @property
    def duration_minutes(self) -> int:
        assert self.start and self.end
        return max(1, round((self.end - self.start).total_seconds() / 60))

    @property
    def time_zone(self) -> str:
        return (self.attendee.timezone if self.attendee else None) or "UTC"

    @property
    def schedulable(self) -> bool:
        return self.start is not None and self.end is not None and bool(self.hosts)


def fold(events: list[AppointmentEvent]) -> Desired | None:
    """The appointment as it is now, or None when no event says enough to act on."""
    if not events:
        return None
    ordered = sorted(events, key=_order)
    start = end = None
    hosts: tuple[Host, ...] = ()
    attendees: tuple[Attendee, ...] = ()
    meeting_type: MeetingType | None = None
    channel = meeting_link = location = None
    verdicts: list[AppointmentEvent] = []
    for event in ordered:
        if event.start and event.end:
            start, end = event.start, event.end
        if event.hosts:
            hosts = event.hosts
        if _leaves_group(event, attendees):
            # Some attendees of a group left; the appointment goes on for the others.
            leaving = {_identity(a) for a in event.attendees}
            attendees = tuple(a for a in attendees if _identity(a) not in leaving)
        else:
            if event.attendees:
                # The newest list says who is still in (a read-back no longer lists one who left a group).
                attendees = _merge_attendees(attendees, event.attendees)
            if event.kind in ("booking_cancelled", "readback"):
                verdicts.append(event)
        if event.meeting_type and (event.meeting_type.name or event.meeting_type.slug):
            meeting_type = event.meeting_type
        channel = event.channel or channel
        meeting_link = event.meeting_link or meeting_link
        location = event.location or location
    # Only cancellations and read-backs speak to whether the appointment is cancelled; creation and
    # reschedule events arriving late cannot undo a cancellation.
    last_verdict = verdicts[-1] if verdicts else None
    cancelled = bool(last_verdict and last_verdict.cancelled)
    if not cancelled and (start is None or not hosts):
        return None
    return Desired(
        appointment_id=events[0].appointment_id,
        cancelled=cancelled,
        start=start,
        end=end,
        hosts=hosts,
        attendees=attendees,
        meeting_type=meeting_type,
        cancel_reason=last_verdict.cancel_reason if cancelled and last_verdict else None,
        channel=channel,
        meeting_link=meeting_link,
        location=location,
    )


def _leaves_group(event: AppointmentEvent, attendees: tuple[Attendee, ...]) -> bool:
    """A cancellation that names only some attendees of a group appointment: those attendees left it.

    meetergo sends `booking_cancelled` both when an appointment is cancelled and when one attendee leaves a group
    booking, and does not document how the two payloads differ. Without a read-back, one that names a strict
    subset of the attendees known so far is taken for those attendees leaving; one that names them all (or
    nobody) cancels the appointment. A read-back, when configured, decides (it lists who remains)."""
    if event.kind != "booking_cancelled" or not event.cancelled or len(attendees) < 2 or not event.attendees:
        return False
    known = {_identity(a) for a in attendees}
    named = {_identity(a) for a in event.attendees}
    return named < known


def _merge_attendees(older: tuple[Attendee, ...], newer: tuple[Attendee, ...]) -> tuple[Attendee, ...]:
    """The newer list, each attendee completed from what an older event said of the same person."""
    known = {_identity(a): a for a in older}
    return tuple(_merge_attendee(known.get(_identity(a)), a) for a in newer)


def _identity(attendee: Attendee) -> str:
    return attendee.email or f"phone:{attendee.phone}"


def _merge_attendee(older: Attendee | None, newer: Attendee) -> Attendee:
    if older is None:
        return newer
    return Attendee(email=newer.email, name=newer.name or older.name, timezone=newer.timezone or older.timezone,
                    phone=newer.phone or older.phone, guests=newer.guests or older.guests)


def needs_confirmation(events: list[AppointmentEvent]) -> bool:
    """True when a cancellation webhook (of the whole appointment or of some group attendees) came in after the
    last read-back: meetergo is asked who remains before anything is deleted."""
    cancels = [e for e in events if e.kind == "booking_cancelled" and e.cancelled]
    if not cancels:
        return False
    readbacks = [e for e in events if e.kind == "readback"]
    if not readbacks:
        return True
    return max(map(_recorded, cancels)) > max(map(_recorded, readbacks))


def answering(readback: AppointmentEvent, events: list[AppointmentEvent]) -> AppointmentEvent:
    """A read-back made to confirm a cancellation webhook is meetergo's answer to it, asked after it arrived: it is
    dated no earlier than the newest cancellation among `events` (both are meetergo's timestamps), so that its
    answer stands even when meetergo's `updatedAt` did not move (an attendee left without the appointment
    changing, say). Ties between a webhook and a read-back already go to the read-back."""
    cancels = [e.effective_at for e in events if e.kind == "booking_cancelled" and e.cancelled and e.effective_at]
    if not cancels or (readback.occurred_at is not None and readback.occurred_at >= max(cancels)):
        return readback
    return replace(readback, occurred_at=max(cancels))


def _recorded(event: AppointmentEvent) -> tuple[datetime, int]:
    """When the service learned of an event (a read-back is dated by meetergo's updatedAt, so that cannot say
    whether it was read after a webhook)."""
    return (event.received_at or _EPOCH, event.seq if event.seq is not None else -1)


def snapshot(events: list[AppointmentEvent]) -> AppointmentEvent | None:
    """One event that folds to what `events` fold to, and outranks every one of them: what an appointment's
    events are compacted into once its meeting is over."""
    desired = fold(events)
    if desired is None:
        return None
    latest = max((e.effective_at for e in events if e.effective_at), default=None)
    return AppointmentEvent(
        kind="readback",
        appointment_id=desired.appointment_id,
        occurred_at=latest,
        received_at=latest,
        start=desired.start,
        end=desired.end,
        hosts=desired.hosts,
        attendees=desired.attendees,
        meeting_type=desired.meeting_type,
        cancelled=desired.cancelled,
        cancel_reason=desired.cancel_reason,
        channel=desired.channel,
        meeting_link=desired.meeting_link,
        location=desired.location,
    )
