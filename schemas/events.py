"""What meetbridge knows about an appointment after one meetergo event, independent of its wire format.

The receiver turns each delivery (either envelope, either cancel shape) and the worker turns each read-back
into an `AppointmentEvent`; the events recorded for an appointment are later folded into its desired state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

EventKind = Literal["booking_created", "booking_rescheduled", "booking_cancelled", "readback"]
ACTIONABLE_EVENTS: tuple[EventKind, ...] = ("booking_created", "booking_rescheduled", "booking_cancelled")
# How far ahead of our clock a sender's timestamp may be before it is cut back to it.
CLOCK_SKEW = timedelta(minutes=2)
# meetergo's documented event types that the service receives but does not act on.
IGNORED_EVENTS = ("new_employee", "form_submission")


@dataclass(frozen=True)
class Host:
    email: str
    name: str = ""
    id: str | None = None


@dataclass(frozen=True)
class Attendee:
    email: str  # "" for a phone-only booking (meetergo's phoneOnlyBooking)
    name: str = ""
    timezone: str | None = None
    phone: str | None = None
    guests: tuple[str, ...] = ()  # the attendee's bringalongEmails

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attendee:
        return cls(**{**data, "guests": tuple(data.get("guests") or ())})


@dataclass(frozen=True)
class MeetingType:
    id: str | None = None
    slug: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class AppointmentEvent:
    kind: EventKind
    appointment_id: str
    # meetergo's own time of this change (updatedAt, rescheduledAt or the cancel time): orders events.
    occurred_at: datetime | None
    start: datetime | None = None
    end: datetime | None = None
    hosts: tuple[Host, ...] = ()
    attendees: tuple[Attendee, ...] = ()
    meeting_type: MeetingType | None = None
    cancelled: bool = False
    cancel_reason: str | None = None
    # meetergo's meetingInfo: the channel (zoom, phone, local, google, ...) and a meeting link it made itself.
    channel: str | None = None
    meeting_link: str | None = None
    location: str | None = None
    # When the service learned of it (the intake's clock): not part of the event's identity, so a repeated
    # delivery is still a duplicate. It bounds `occurred_at`, which the sender controls.
    received_at: datetime | None = None
    # The order in which the service recorded it (one counter per appointment, assigned in Redis): breaks
    # ties between events meetergo dated alike, whatever order Redis lists them in. None until recorded.
    seq: int | None = None

    def fingerprint(self) -> str:
        """Identical for every delivery of the same event (meetergo sends no delivery id)."""
        return self._stored_form[1]

    @cached_property
    def _stored_form(self) -> tuple[str, str]:
        # The stored JSON and the fingerprint from one `to_dict`: the intake needs both, and the fold sorts by
        # the fingerprint (computed once per event, not per comparison). A frozen dataclass: it cannot go stale.
        data = self.to_dict()
        identity = {k: v for k, v in data.items() if k not in ("received_at", "seq")}
        return _canonical(data), fingerprint_of(_canonical(identity))

    @property
    def effective_at(self) -> datetime | None:
        """meetergo's time of the change, but never later than shortly after it reached us: a payload dated
        in 2099 cannot outrank every later event and read-back."""
        if self.occurred_at is None or self.received_at is None:
            return self.occurred_at
        return min(self.occurred_at, self.received_at + CLOCK_SKEW)

    def to_json(self) -> str:
        """The stored form: canonical JSON (sorted keys), so equal events serialize to equal text."""
        return self._stored_form[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "appointment_id": self.appointment_id,
            "occurred_at": _iso(self.occurred_at),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "hosts": [vars(host) for host in self.hosts],
            "attendees": [{**vars(attendee), "guests": list(attendee.guests)} for attendee in self.attendees],
            "meeting_type": vars(self.meeting_type) if self.meeting_type else None,
            "cancelled": self.cancelled,
            "cancel_reason": self.cancel_reason,
            "channel": self.channel,
            "meeting_link": self.meeting_link,
            "location": self.location,
            "received_at": _iso(self.received_at),
            # Absent until recorded: the intake's script appends it to the stored JSON.
            **({"seq": self.seq} if self.seq is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppointmentEvent:
        meeting_type = data.get("meeting_type")
        return cls(
            kind=data["kind"],
            appointment_id=data["appointment_id"],
            occurred_at=_parse(data.get("occurred_at")),
            start=_parse(data.get("start")),
            end=_parse(data.get("end")),
            hosts=tuple(Host(**h) for h in data.get("hosts") or ()),
            attendees=tuple(Attendee.from_dict(a) for a in data.get("attendees") or ()),
            meeting_type=MeetingType(**meeting_type) if meeting_type else None,
            cancelled=bool(data.get("cancelled")),
            cancel_reason=data.get("cancel_reason"),
            channel=data.get("channel"),
            meeting_link=data.get("meeting_link"),
            location=data.get("location"),
            received_at=_parse(data.get("received_at")),
            seq=data.get("seq"),
        )


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def fingerprint_of(canonical_json: str) -> str:
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:32]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
