"""Zoom request bodies and the parts of its responses meetbridge reads, per the Zoom OpenAPI subset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load
from marshmallow.validate import Length

from schemas.times import utc_seconds

SCHEDULED_MEETING = 2
TOPIC_LIMIT = 200
AGENDA_LIMIT = 2000


def zoom_time(value: datetime) -> str:
    """UTC with Z: numeric offsets are not documented for Zoom."""
    return utc_seconds(value)


# Zoom's meeting list cuts each agenda to this many characters: the marker must end within them to be found there.
LISTED_AGENDA_LENGTH = 250


def agenda(topic: str, appointment_id: str) -> str:
    """The meeting's agenda: the topic (shortened so the whole fits in what the meeting list shows), then the
    marker on the last line."""
    rest = f"\n\nBooked in meetergo.\n{agenda_marker(appointment_id)}"
    return topic[:max(0, LISTED_AGENDA_LENGTH - len(rest))] + rest


def agenda_marker(appointment_id: str) -> str:
    """The agenda's last line: it ties a Zoom meeting to its appointment, for finding it after a lost answer."""
    return f"[meetbridge:{appointment_id}]"


def carries_marker(agenda: str | None, appointment_id: str) -> bool:
    """Whether the agenda's last line is exactly this appointment's marker (ids that are prefixes of each other
    do not match, and text written above it cannot be taken for it). Meetings made by earlier versions end in
    "(meetergo appointment <id>)." instead."""
    lines = (agenda or "").rstrip().splitlines()
    last = lines[-1] if lines else ""
    return last == agenda_marker(appointment_id) or last.endswith(f"(meetergo appointment {appointment_id}).")


def one_line(text: str) -> str:
    """Text from outside (an attendee's name) as one line: it cannot add a line of its own to the agenda."""
    return " ".join(text.split())


@dataclass(frozen=True)
class MeetingSpec:
    """The meeting meetbridge wants Zoom to hold for one appointment."""

    topic: str
    start_time: datetime
    duration: int  # minutes
    timezone: str
    agenda: str
    alternative_hosts: tuple[str, ...] = ()


class MeetingSettingsSchema(Schema):
    alternative_hosts = fields.Function(lambda spec: ";".join(spec.alternative_hosts))
    # Alternative hosts are told by Zoom itself, so they hold the start link without meetbridge sending it.
    alternative_hosts_email_notification = fields.Function(lambda spec: bool(spec.alternative_hosts))


class MeetingRequestSchema(Schema):
    """Body of `POST /users/{userId}/meetings` and `PATCH /meetings/{meetingId}`."""

    topic = fields.Function(lambda spec: spec.topic[:TOPIC_LIMIT])
    type = fields.Constant(SCHEDULED_MEETING)
    start_time = fields.Function(lambda spec: zoom_time(spec.start_time))
    duration = fields.Integer()
    timezone = fields.String()
    agenda = fields.Function(lambda spec: spec.agenda[:AGENDA_LIMIT])
    settings = fields.Function(lambda spec: MeetingSettingsSchema().dump(spec))


@dataclass(frozen=True)
class ZoomMeeting:
    id: int
    host_email: str | None = None
    topic: str | None = None
    agenda: str | None = None
    start_time: str | None = None
    duration: int | None = None
    timezone: str | None = None
    join_url: str | None = None
    start_url: str | None = None
    alternative_hosts: str | None = None
    # Zoom's refusal of the alternative hosts the create named: the meeting was made without them.
    alternative_hosts_refusal: str | None = None


class MeetingResponseSchema(Schema):
    """The fields read from a create (201), get (200) or list item."""

    class Meta:
        unknown = EXCLUDE

    id = fields.Integer(required=True, strict=True)
    host_email = fields.String(allow_none=True)
    topic = fields.String(allow_none=True)
    agenda = fields.String(allow_none=True, validate=Length(max=100_000))
    start_time = fields.String(allow_none=True)
    duration = fields.Integer(allow_none=True)
    timezone = fields.String(allow_none=True)
    join_url = fields.String(allow_none=True)
    start_url = fields.String(allow_none=True)
    settings = fields.Dict(allow_none=True)

    @post_load
    def to_meeting(self, data: dict[str, Any], **_: Any) -> ZoomMeeting:
        settings = data.pop("settings", None) or {}
        return ZoomMeeting(**data, alternative_hosts=settings.get("alternative_hosts"))
