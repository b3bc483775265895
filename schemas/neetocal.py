"""NeetoCal request bodies (v1 and v2 share them) and the parts of its responses meetbridge reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import EXCLUDE, Schema, fields, post_dump, post_load

# The date and time are read in the booking's own time zone. v1 (and the v2 reference) take 12-hour times
# ("01:30 PM"); NeetoCal's v2 CLI sends 24-hour ones ("13:30"): see sandbox/SPEC.md.
SLOT_DATE_FORMAT = "%Y-%m-%d"
SLOT_TIME_FORMAT = "%I:%M %p"
SLOT_TIME_FORMAT_24H = "%H:%M"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def slot_fields(start: datetime, time_zone: str, time_format: str = SLOT_TIME_FORMAT) -> dict[str, str]:
    local = start.astimezone(ZoneInfo(time_zone))
    return {"slot_date": local.strftime(SLOT_DATE_FORMAT), "slot_start_time": local.strftime(time_format)}


@dataclass(frozen=True)
class LinkSpec:
    """A scheduling link that mirrors one meetergo meeting type for one host and length."""

    slug: str
    name: str
    host_email: str
    duration: int
    description: str = ""
    # "grouped" when the appointment has several attendees: each gets a booking of their own at the same slot.
    kind: str = "one_on_one"
    # The text of the link's custom spot (where the meeting happens), shown to whoever books or holds a booking.
    spot_text: str = ""
    # A NeetoCal scheduling-link template: "All template configuration values are automatically copied"
    # (its booking-form questions among them), "Values you provide in the same request override" them.
    template_id: str | None = None


class LinkRequestSchema(Schema):
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    hosts = fields.Function(lambda spec: [spec.host_email])
    duration = fields.Integer()
    kind = fields.String()
    # meetergo slots can start at any 5-minute mark; the link must accept each one that is mirrored.
    start_time_increment = fields.Constant(5)
    template_id = fields.String()

    @post_dump
    def drop_empty_template(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("template_id"):
            data.pop("template_id", None)
        return data


def always_available() -> dict[str, Any]:
    """Availability that admits any mirrored slot: every day, all day (meetergo already decided the slot)."""
    return {
        "periods": [{"wday": day, "start_time": "12:00 AM", "end_time": "11:59 PM"} for day in WEEKDAYS],
        "time_zone": "UTC",
    }


# The form field of an attendee's guests ("guest_email_s" in the make-booking example of NeetoCal's reference).
GUESTS_FIELD = "guest_email_s"


@dataclass(frozen=True)
class BookingRequest:
    meeting_slug: str
    name: str
    email: str
    start: datetime
    time_zone: str
    form_responses: dict[str, str] = field(default_factory=dict)
    guests: tuple[str, ...] = ()  # the attendee's bringalongEmails
    # v2: book at the slot meetergo chose whatever the link's hours and the host's other bookings say.
    override_availability: bool = False


def _answers(booking: BookingRequest) -> dict[str, Any]:
    return {**booking.form_responses, **({GUESTS_FIELD: list(booking.guests)} if booking.guests else {})}


class BookingRequestSchema(Schema):
    """Body of `POST /bookings`."""

    meeting_slug = fields.String()
    name = fields.String()
    email = fields.String()
    time_zone = fields.String()
    slot_date = fields.Function(lambda b: slot_fields(b.start, b.time_zone)["slot_date"])
    slot_start_time = fields.Function(lambda b: slot_fields(b.start, b.time_zone)["slot_start_time"])
    form_responses = fields.Function(_answers)
    override_availability = fields.Boolean()

    @post_dump
    def drop_unset_override(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not data.get("override_availability"):
            data.pop("override_availability", None)  # v1 documents no such field
        return data


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
    # The default spot's text, where the answer shows the field (None: not shown). A link made from a template may
    # already have a custom spot, with the template's words instead of where this appointment happens.
    spot_custom_text: str | None = None


class LinkResponseSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    sid = fields.String(required=True)
    slug = fields.String(required=True)
    spot = fields.String(allow_none=True)
    spot_custom_text = fields.String(allow_none=True)

    @post_load
    def to_link(self, data: dict[str, Any], **_: Any) -> Link:
        if "spot_custom_text" in data:  # shown, if only as null: "" then, to tell it from not shown
            data["spot_custom_text"] = data["spot_custom_text"] or ""
        return Link(**data)


@dataclass(frozen=True)
class Booking:
    sid: str
    status: str | None = None
    starts_at: str | None = None
    email: str | None = None
    host_email: str | None = None
    answers: tuple[str, ...] = ()  # the values of its form responses
    responses: Mapping[str, str] = field(default_factory=dict)  # field code -> answer, as NeetoCal kept them

    def answer(self, field_code: str) -> str | None:
        return self.responses.get(field_code)


class BookingResponseSchema(Schema):
    """A booking as v1 and v2 return it: `form_responses` a list of `{field, value, type, field_code}` (older
    pages: an object by field code), v2 (and the newer v1 list page) adding `form_responses_as_hash`."""

    class Meta:
        unknown = EXCLUDE

    sid = fields.String(required=True)
    status = fields.String(allow_none=True)
    starts_at = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    host_email = fields.String(allow_none=True)
    form_responses = fields.Raw(allow_none=True)
    form_responses_as_hash = fields.Raw(allow_none=True)

    @post_load
    def to_booking(self, data: dict[str, Any], **_: Any) -> Booking:
        responses = _responses(data.pop("form_responses", None), data.pop("form_responses_as_hash", None))
        return Booking(**data, answers=tuple(responses.values()), responses=responses)


def _responses(listed: Any, as_hash: Any) -> dict[str, str]:
    """Field code -> answer from either shape; the hash's keys are taken to be field codes too. A question listed
    without an answer (null: the docs do not say whether NeetoCal lists those) is left out, as if not listed."""
    found: dict[str, str] = {}
    if isinstance(listed, dict):
        found.update((str(k), str(v)) for k, v in listed.items() if v is not None)
    elif isinstance(listed, list):
        for item in listed:
            if isinstance(item, dict) and item.get("value") is not None:
                found[str(item.get("field_code") or item.get("field") or "")] = str(item["value"])
    if isinstance(as_hash, dict):
        for key, value in as_hash.items():
            if value is not None:
                found.setdefault(str(key), str(value))
    return found
