"""NeetoCal v1 request bodies and the parts of its responses meetbridge reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import EXCLUDE, Schema, fields, post_load

# v1 takes 12-hour times ("01:30 PM") and the date, both read in the booking's own time zone.
SLOT_DATE_FORMAT = "%Y-%m-%d"
SLOT_TIME_FORMAT = "%I:%M %p"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def slot_fields(start: datetime, time_zone: str) -> dict[str, str]:
    local = start.astimezone(ZoneInfo(time_zone))
    return {"slot_date": local.strftime(SLOT_DATE_FORMAT), "slot_start_time": local.strftime(SLOT_TIME_FORMAT)}


@dataclass(frozen=True)
class LinkSpec:
    """A scheduling link that mirrors one meetergo meeting type for one host and length."""

    slug: str
    name: str
    host_email: str
    duration: int
    description: str = ""


class LinkRequestSchema(Schema):
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    hosts = fields.Function(lambda spec: [spec.host_email])
    duration = fields.Integer()
    kind = fields.Constant("one_on_one")
    # meetergo slots can start at any 5-minute mark; the link must accept each one that is mirrored.
    start_time_increment = fields.Constant(5)


def always_available() -> dict[str, Any]:
    """Availability that admits any mirrored slot: every day, all day (meetergo already decided the slot)."""
    return {
        "periods": [{"wday": day, "start_time": "12:00 AM", "end_time": "11:59 PM"} for day in WEEKDAYS],
        "time_zone": "UTC",
    }


@dataclass(frozen=True)
class BookingRequest:
    meeting_slug: str
    name: str
    email: str
    start: datetime
    time_zone: str
    form_responses: dict[str, str] = field(default_factory=dict)


class BookingRequestSchema(Schema):
    """Body of `POST /bookings`."""

    meeting_slug = fields.String()
    name = fields.String()
    email = fields.String()
    time_zone = fields.String()
    slot_date = fields.Function(lambda b: slot_fields(b.start, b.time_zone)["slot_date"])
    slot_start_time = fields.Function(lambda b: slot_fields(b.start, b.time_zone)["slot_start_time"])
    form_responses = fields.Dict()


class RescheduleRequestSchema(BookingRequestSchema):
    """Body of `PATCH /bookings/{sid}`: the slot moves, the rest must be sent again."""

    class Meta:
        exclude = ("meeting_slug", "form_responses")

    reschedule_reason = fields.Constant("The appointment was rescheduled in meetergo.")


@dataclass(frozen=True)
class Link:
    sid: str
    slug: str
    spot: str | None = None


class LinkResponseSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    sid = fields.String(required=True)
    slug = fields.String(required=True)
    spot = fields.String(allow_none=True)

    @post_load
    def to_link(self, data: dict[str, Any], **_: Any) -> Link:
        return Link(**data)


@dataclass(frozen=True)
class Booking:
    sid: str
    status: str | None = None
    starts_at: str | None = None
    email: str | None = None
    answers: tuple[str, ...] = ()  # the values of its form responses


class BookingResponseSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    sid = fields.String(required=True)
    status = fields.String(allow_none=True)
    starts_at = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    form_responses = fields.Raw(allow_none=True)

    @post_load
    def to_booking(self, data: dict[str, Any], **_: Any) -> Booking:
        raw = data.pop("form_responses", None) or []
        if isinstance(raw, dict):
            answers = tuple(str(v) for v in raw.values())
        else:
            answers = tuple(str(item.get("value")) for item in raw if isinstance(item, dict))
        return Booking(**data, answers=answers)
