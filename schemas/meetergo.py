"""marshmallow schemas for meetergo webhook deliveries and appointment read-backs.

Both documented envelopes are accepted: the current flat `{"webhookType": ..., <fields>}` and the older
`{"event": ..., "data": {...}}`; so are both cancel shapes (`cancelledAt/cancelledBy` from the webhook docs,
`actionAt/actionBy` from the REST objects). Every load yields an `AppointmentEvent` or raises a
`marshmallow.ValidationError` whose messages name the offending field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validates_schema
from marshmallow.validate import Length, Regexp

from schemas.events import (
    ACTIONABLE_EVENTS,
    IGNORED_EVENTS,
    AppointmentEvent,
    Attendee,
    Host,
    MeetingType,
)

# Appointments are booked for real dates: anything outside this window is a broken payload, not a booking.
EARLIEST_YEAR = 2000
LATEST_YEAR = 2100
LONGEST_APPOINTMENT = timedelta(hours=24)
# Appointment ids end up in Redis keys and host-link paths: meetergo's are UUIDs, anything exotic is refused.
# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "id\n" through.
APPOINTMENT_ID = r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}\Z"
LONGEST_TIME_ZONE_NAME = 64


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_timezone(name: str) -> None:
    # A name is looked up in the list, never opened as a path: "Europe" or "America/Argentina" are directories
    # of the tz database, and a long or odd string makes the filesystem raise, not ZoneInfo.
    if len(name) > LONGEST_TIME_ZONE_NAME or name not in known_time_zones():
        shown = name if len(name) <= LONGEST_TIME_ZONE_NAME else name[:LONGEST_TIME_ZONE_NAME] + "…"
        raise ValidationError(f"Unknown time zone {shown!r}; use an IANA name such as Europe/Berlin.")


def validate_year(value: datetime) -> None:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValidationError(f"Year {value.year} is outside {EARLIEST_YEAR}-{LATEST_YEAR}.")


class _Schema(Schema):
    class Meta:
        unknown = EXCLUDE


def _name(*parts: str | None) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


class HostSchema(_Schema):
    id = fields.String(allow_none=True, validate=Length(max=200))
    email = fields.Email(required=True, validate=Length(max=254))
    fullName = fields.String(allow_none=True, validate=Length(max=300))
    givenName = fields.String(allow_none=True, validate=Length(max=200))
    familyName = fields.String(allow_none=True, validate=Length(max=200))

    @post_load
    def to_host(self, data: dict[str, Any], **_: Any) -> Host:
        name = data.get("fullName") or _name(data.get("givenName"), data.get("familyName"))
        return Host(email=data["email"].lower(), name=name or "", id=data.get("id"))


class AttendeeSchema(_Schema):
    # meetergo: the email is "not required when phoneOnlyBooking is true ... In this case, phone becomes
    # required instead" (meetergo-create-booking-and-webhook.txt).
    email = fields.Email(allow_none=True, validate=Length(max=254))
    phone = fields.String(allow_none=True, validate=Length(max=40))
    fullname = fields.String(allow_none=True, validate=Length(max=300))
    firstname = fields.String(allow_none=True, validate=Length(max=200))
    lastname = fields.String(allow_none=True, validate=Length(max=200))
    timezone = fields.String(allow_none=True, validate=validate_timezone)
    # "Additional attendee emails (max 5)".
    bringalongEmails = fields.List(fields.Email(validate=Length(max=254)), allow_none=True, validate=Length(max=5))

    @pre_load
    def blank_email_is_none(self, data: Any, **_: Any) -> Any:
        # A phone-only booking may carry "email": "" rather than null or no key.
        if isinstance(data, dict) and isinstance(data.get("email"), str) and not data["email"].strip():
            return {**data, "email": None}
        return data

    @validates_schema
    def email_or_phone(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("email") and not (data.get("phone") or "").strip():
            raise ValidationError("An attendee needs an email, or a phone for a phone-only booking.",
                                  field_name="email")

    @post_load
    def to_attendee(self, data: dict[str, Any], **_: Any) -> Attendee:
        name = data.get("fullname") or _name(data.get("firstname"), data.get("lastname"))
        guests = tuple(dict.fromkeys(e.lower() for e in data.get("bringalongEmails") or ()))
        return Attendee(email=(data.get("email") or "").lower(), name=name or "", timezone=data.get("timezone"),
                        phone=(data.get("phone") or "").strip() or None, guests=guests)


class MeetingInfoSchema(_Schema):
    name = fields.String(allow_none=True, validate=Length(max=300))


class AppointmentMeetingInfoSchema(_Schema):
    """The appointment's own meetingInfo: how the meeting happens (documented channels: google, zoom,
    teamsForBusiness2, phone, phone-incoming, local, local-attendee, connect, webex, whatsapp)."""

    channel = fields.String(allow_none=True, validate=Length(max=40))
    meetingLink = fields.String(allow_none=True, validate=Length(max=2000))


class MeetingTypeSchema(_Schema):
    id = fields.String(allow_none=True, validate=Length(max=200))
    slug = fields.String(allow_none=True, validate=Length(max=200))
    meetingInfo = fields.Nested(MeetingInfoSchema, allow_none=True)

    @post_load
    def to_meeting_type(self, data: dict[str, Any], **_: Any) -> MeetingType:
        info = data.get("meetingInfo") or {}
        return MeetingType(id=data.get("id"), slug=data.get("slug"), name=info.get("name"))


class CancelSchema(_Schema):
    # Webhook docs: cancelledAt/cancelledBy; REST objects: actionAt/actionBy/actionSource.
    cancelledAt = fields.AwareDateTime(allow_none=True, validate=validate_year)
    actionAt = fields.AwareDateTime(allow_none=True, validate=validate_year)
    cancelledBy = fields.String(allow_none=True)
    actionBy = fields.String(allow_none=True)
    reason = fields.String(allow_none=True, validate=Length(max=2000))


def _when(**kwargs: Any) -> fields.AwareDateTime:
    return fields.AwareDateTime(validate=validate_year, **kwargs)


class AppointmentSchema(_Schema):
    """The appointment fields every booking event carries."""

    id = fields.String(required=True, validate=Regexp(
        APPOINTMENT_ID, error="Not a valid appointment id (letters, digits and . _ : - only, at most 200)."))
    start = _when(required=True)
    end = _when(required=True)
    hosts = fields.List(fields.Nested(HostSchema), required=True, validate=Length(min=1, max=50))
    attendees = fields.List(fields.Nested(AttendeeSchema), required=True, validate=Length(min=1, max=500))
    meetingType = fields.Nested(MeetingTypeSchema, allow_none=True)
    meetingInfo = fields.Nested(AppointmentMeetingInfoSchema, allow_none=True)
    location = fields.Raw(allow_none=True)
    isCancelled = fields.Boolean(allow_none=True)
    cancel = fields.Nested(CancelSchema, allow_none=True)
    createdAt = _when(allow_none=True)
    updatedAt = _when(allow_none=True)
    rescheduledAt = _when(allow_none=True)

    @validates_schema(skip_on_field_errors=False)
    def check_times(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            return
        if end <= start:
            raise ValidationError("The appointment must end after it starts.", field_name="end")
        if end - start > LONGEST_APPOINTMENT:
            raise ValidationError("The appointment lasts longer than 24 hours.", field_name="end")


def _event(kind: str, data: dict[str, Any], occurred_at: datetime | None) -> AppointmentEvent:
    cancel = data.get("cancel") or {}
    return AppointmentEvent(
        kind=kind,  # type: ignore[arg-type]
        appointment_id=data["id"],
        occurred_at=occurred_at,
        start=data.get("start"),
        end=data.get("end"),
        hosts=tuple(data.get("hosts") or ()),
        attendees=tuple(data.get("attendees") or ()),
        meeting_type=data.get("meetingType"),
        cancelled=kind == "booking_cancelled" and data.get("isCancelled") is not False,
        cancel_reason=cancel.get("reason"),
        **_meeting_info(data),
    )


def _meeting_info(data: dict[str, Any]) -> dict[str, Any]:
    info = data.get("meetingInfo") or {}
    channel = (info.get("channel") or "").strip().lower() or None
    link = (info.get("meetingLink") or "").strip() or None
    location = data.get("location")
    if isinstance(location, dict):  # a configured location: {name, address, ...}
        location = location.get("address") or location.get("name")
    location = location.strip()[:300] if isinstance(location, str) and location.strip() else None
    return {"channel": channel, "meeting_link": link, "location": location}


class BookingCreatedSchema(AppointmentSchema):
    @post_load
    def to_event(self, data: dict[str, Any], **_: Any) -> AppointmentEvent:
        return _event("booking_created", data, data.get("updatedAt") or data.get("createdAt"))


_SCHEDULE_FIELDS = ("start", "end", "hosts", "attendees")


class BookingRescheduledSchema(AppointmentSchema):
    rescheduledAppointment = fields.Nested(AppointmentSchema)
    oldStartDate = _when(allow_none=True)

    def __init__(self, **kwargs: Any) -> None:
        # The updated appointment may sit at the top level, in rescheduledAppointment, or be split between them.
        nested = tuple(f"rescheduledAppointment.{name}" for name in (*_SCHEDULE_FIELDS, "id"))
        super().__init__(partial=_SCHEDULE_FIELDS + nested, **kwargs)

    @post_load
    def to_event(self, data: dict[str, Any], **_: Any) -> AppointmentEvent:
        moved = data.pop("rescheduledAppointment", None) or {}
        merged = {**data, **{k: v for k, v in moved.items() if v is not None}}
        if moved.get("start") and not moved.get("end") and data.get("start") and data.get("end"):
            # Only the new start is documented: the appointment keeps its length.
            merged["end"] = moved["start"] + (data["end"] - data["start"])
        missing = {name: ["Missing data for required field."] for name in _SCHEDULE_FIELDS if not merged.get(name)}
        if missing:
            raise ValidationError({"rescheduledAppointment": missing})
        if merged["end"] <= merged["start"]:
            raise ValidationError({"rescheduledAppointment": {"end": ["The appointment must end after it starts."]}})
        occurred_at = (moved.get("rescheduledAt") or data.get("rescheduledAt")
                       or moved.get("updatedAt") or data.get("updatedAt"))
        return _event("booking_rescheduled", merged, occurred_at)


class BookingCancelledSchema(AppointmentSchema):
    def __init__(self, **kwargs: Any) -> None:
        # A cancellation names the appointment; the rest of it is optional (its JSON example is undocumented).
        super().__init__(partial=_SCHEDULE_FIELDS, **kwargs)

    @post_load
    def to_event(self, data: dict[str, Any], **_: Any) -> AppointmentEvent:
        cancel = data.get("cancel") or {}
        occurred_at = cancel.get("cancelledAt") or cancel.get("actionAt") or data.get("updatedAt")
        return _event("booking_cancelled", data, occurred_at)


# One instance each, reused: building a schema (and its nested ones) costs more than loading a delivery.
EVENT_SCHEMAS: dict[str, Schema] = {
    "booking_created": BookingCreatedSchema(),
    "booking_rescheduled": BookingRescheduledSchema(),
    "booking_cancelled": BookingCancelledSchema(),
}
assert set(EVENT_SCHEMAS) == set(ACTIONABLE_EVENTS)
ALL_EVENT_TYPES = (*ACTIONABLE_EVENTS, *IGNORED_EVENTS)


@dataclass(frozen=True)
class Delivery:
    kind: str
    event: AppointmentEvent | None  # None for event types the service does not act on


def parse_delivery(body: Any, received_at: datetime | None = None) -> Delivery:
    """Validate one webhook body (either envelope) into a `Delivery`, stamped with when it arrived."""
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["Expected a JSON object."]})
    kind = body.get("webhookType") or body.get("event")
    if kind is None:
        raise ValidationError({"webhookType": ["Missing event type: send webhookType (or event)."]})
    if not isinstance(kind, str):
        raise ValidationError({"webhookType": ["Not a valid string."]})
    if kind in IGNORED_EVENTS:
        return Delivery(kind=kind, event=None)
    schema = EVENT_SCHEMAS.get(kind)
    if schema is None:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise ValidationError({"webhookType": [
            f"Unknown event type {shown!r}; expected one of {', '.join(ALL_EVENT_TYPES)}."]})
    payload = body["data"] if isinstance(body.get("data"), dict) else body
    event = schema.load(payload)
    return Delivery(kind=kind, event=dataclasses.replace(event, received_at=received_at) if received_at else event)


class ReadbackSchema(AppointmentSchema):
    """`GET /v4/appointment/{id}`: the REST object names hosts by id only (hostIds / hostingInfo.mainHost)."""

    hostIds = fields.List(fields.String(), load_default=list)
    hostingInfo = fields.Dict(allow_none=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(partial=("hosts",), **kwargs)

    @post_load
    def to_fields(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        host_ids = list(data.get("hostIds") or [])
        main = (data.get("hostingInfo") or {}).get("mainHost")
        if isinstance(main, str) and main in host_ids:
            host_ids.remove(main)
            host_ids.insert(0, main)
        data["hostIds"] = host_ids
        return data


def readback_event(data: dict[str, Any], hosts: tuple[Host, ...], read_at: datetime) -> AppointmentEvent:
    """An `AppointmentEvent` from a loaded read-back, with its host ids resolved to `hosts` by the caller.

    It is dated by meetergo's own `updatedAt` (when meetergo last changed the appointment), not by the worker's
    clock, so that it orders against the webhooks by meetergo's timestamps alone; without one, by when it was
    read. On equal timestamps a read-back outranks a webhook (workers/desired.py).
    """
    cancel = data.get("cancel") or {}
    return AppointmentEvent(
        kind="readback",
        appointment_id=data["id"],
        occurred_at=data.get("updatedAt") or read_at,
        received_at=read_at,
        start=data.get("start"),
        end=data.get("end"),
        hosts=hosts or tuple(data.get("hosts") or ()),
        attendees=tuple(data.get("attendees") or ()),
        meeting_type=data.get("meetingType"),
        cancelled=bool(data.get("isCancelled")),
        cancel_reason=cancel.get("reason"),
        **_meeting_info(data),
    )
