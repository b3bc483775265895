"""NeetoCal simulator, v2 and the deprecated v1 over one state: scheduling links ("meetings"), their templates,
availability and spots, and bookings.

The booking rules are the ones the service must get right: 12-hour `slot_start_time`, the slot read in
the booking's `time_zone`, start on the link's increment, inside the link's availability (in the
availability's own zone), in the future, and not overlapping another confirmed booking of the host (a
`grouped` link seats several bookings at one slot). On v2, `override_availability` lifts the link's hours and
increment and the host's other bookings (not the future): how meetbridge books mirror links whatever their hours.
A link's availability is its host's schedule, shared by the host's links (v1 can give one link its own). v2 folds
reschedule and cancel into `PATCH /bookings/{id}` and answers the v1-only routes 404; where the v2 reference and
NeetoCal's CLI disagree, a config key picks the side (sandbox/SPEC.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from flask import Flask, Response, request

from sandbox.control import ConfigKey, SandboxControl, boolean, integer, json_response, text
from sandbox.util import (
    BodyError,
    SlidingWindow,
    iso_millis,
    iso_seconds,
    json_object_body,
    short_id,
    utcnow,
    whole_seconds,
    zone_or_none,
)

DEFAULT_API_KEY = "sandbox-neetocal-key"
PUBLIC_URL = "https://neetocal.sandbox"

CONFIG_KEYS: dict[str, ConfigKey] = {
    "api_key": ConfigKey(DEFAULT_API_KEY, text()),
    "rate_limit_per_second": ConfigKey(None, integer(minimum=1, nullable=True)),
    # The docs are silent on a form_responses key no question of the form has: kept (default) or dropped.
    "drop_unknown_form_responses": ConfigKey(False, boolean()),
    # v2 reference vs NeetoCal's CLI: the reference's side is the default.
    "v2_booking_update_method": ConfigKey("PATCH", text(("PATCH", "PUT"))),
    "v2_spot_text_field": ConfigKey("spot_custom_text", text(("spot_custom_text", "custom_text"))),
    "v2_slot_time_format": ConfigKey("12h", text(("12h", "24h"))),
}
V1 = "/api/external/v1"
V2 = "/api/external/v2"
# The questions of a link made without a template (the attendee's name and email, as NeetoCal's form has).
DEFAULT_QUESTIONS = ("name", "email")
# Copied from a template into a link made from it, unless the request gives its own value.
TEMPLATE_FIELDS = ("name", "description", "kind", "duration", "start_time_increment", "spot", "spot_custom_text")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
KINDS = ("one_on_one", "round_robin", "multihost", "grouped")
SPOT_TYPES = (
    "daily",
    "zoom",
    "jitsi",
    "google_meet",
    "teams",
    "whereby",
    "in_person",
    "custom",
    "phone_call",
)
# The CLI's names of the spot texts (neeto-cal-cli internal/commands/meetings_spots.go).
CLI_SPOT_FIELDS = {"spot_custom_text": "custom_text", "spot_phone_call_number": "phone_number",
                   "spot_in_person_location": "location"}
# The text a spot type needs, per the create-spot page.
SPOT_DETAIL_FIELD = {
    "phone_call": "spot_phone_call_number",
    "custom": "spot_custom_text",
    "in_person": "spot_in_person_location",
}
END_OF_DAY = 24 * 60
SLOT_TAKEN = "The selected slot is no longer available"
ALREADY_CANCELLED = "Booking is already cancelled"

_SLOT_TIME = re.compile(r"^(0[1-9]|1[0-2]):([0-5][0-9]) (AM|PM)$")
_SLOT_TIME_24H = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Availability accepts "09:00 AM" and "09:00AM".
_PERIOD_TIME = re.compile(r"^(0[1-9]|1[0-2]):([0-5][0-9]) ?(AM|PM)$")
_SLOT_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ------------------------------------------------------------------------------------------- errors


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def _errors(messages: Sequence[str]) -> Response:
    return json_response({"errors": list(messages)}, 422)


class NeetoCalErrors:
    def server_error(self) -> Response:
        return _error(500, "Something went wrong. Please try again later.")

    def rate_limited(self) -> Response:
        return _error(429, "Too many requests", {"Retry-After": "1"})

    def gateway_timeout(self) -> Response:
        return _error(504, "Gateway timeout")

    def not_found(self) -> Response:
        return _error(404, "Route not found")

    def method_not_allowed(self) -> Response:
        return _error(405, "Method not allowed")


# -------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class _Period:
    wday: str
    start_minute: int
    end_minute: int  # END_OF_DAY for "11:59 PM"

    def view(self) -> dict[str, str]:
        return {
            "wday": self.wday,
            "start_time": _format_clock(self.start_minute),
            "end_time": _format_clock(self.end_minute),
        }


DEFAULT_PERIODS = tuple(_Period(day, 9 * 60, 17 * 60) for day in WEEKDAYS[:5])


@dataclass
class _Availability:
    """A team member's schedule. A link uses one, and one may serve many links: each member has a default
    ("Working hours", what a new link gets), and editing a link's availability edits that schedule wherever it is
    used ("Note that if the availability is used elsewhere, that would also be updated", api/availabilities/
    update-meeting)."""

    id: str
    sid: str
    name: str
    email: str
    default: bool
    time_zone: str = "UTC"
    periods: list[_Period] = field(default_factory=lambda: list(DEFAULT_PERIODS))

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "sid": self.sid, "name": self.name, "default": self.default,
                "time_zone": self.time_zone, "periods": [period.view() for period in self.periods],
                "overrides": [], "user": {"email": self.email}}


@dataclass
class _Link:
    """A scheduling link: what the v1 API calls a "meeting"."""

    id: str
    sid: str
    slug: str
    name: str
    hosts: list[str]
    duration: int
    description: str | None = None
    kind: str = "one_on_one"
    start_time_increment: int = 30
    spot: str | None = None
    spot_custom_text: str | None = None
    spot_phone_call_number: str | None = None
    spot_in_person_location: str | None = None
    is_multiple_spots_allowed: bool = False
    is_multiple_durations_allowed: bool = False
    spots: list[dict[str, Any]] = field(default_factory=list)
    template_id: str | None = None
    questions: list[str] = field(default_factory=lambda: list(DEFAULT_QUESTIONS))  # field codes on its form
    # The first host's default schedule unless given its own (POST …/availability/create, v1).
    availability: _Availability | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def time_zone(self) -> str:
        return self.availability.time_zone if self.availability else "UTC"

    @property
    def periods(self) -> list[_Period]:
        return self.availability.periods if self.availability else list(DEFAULT_PERIODS)


@dataclass
class _Template:
    """A scheduling-link template, with the booking-form questions (field codes) links made from it copy."""

    id: str
    sid: str
    name: str
    slug: str
    values: dict[str, Any]
    questions: list[dict[str, Any]]
    created_at: datetime = field(default_factory=utcnow)

    @property
    def field_codes(self) -> list[str]:
        return [*DEFAULT_QUESTIONS, *(q["field_code"] for q in self.questions if q["field_code"] not in
                                     DEFAULT_QUESTIONS)]

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "sid": self.sid, "name": self.name, "slug": self.slug, "is_template": True,
                **self.values, "questions": [dict(q) for q in self.questions],
                "created_at": iso_millis(self.created_at), "updated_at": iso_millis(self.created_at)}


@dataclass
class _Booking:
    id: str
    sid: str
    link: _Link
    name: str
    email: str
    host_email: str
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    form_responses: dict[str, Any]
    preferred_meeting_spot: str | None
    status: str = "confirmed"
    cancel_reason: str | None = None
    reschedule_reason: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.starts_at < end and start < self.ends_at


@dataclass
class _NeetoCalState:
    links: list[_Link] = field(default_factory=list)
    availabilities: list[_Availability] = field(default_factory=list)
    templates: list[_Template] = field(default_factory=list)
    bookings: list[_Booking] = field(default_factory=list)
    window: SlidingWindow = field(default_factory=lambda: SlidingWindow(1.0))


# ---------------------------------------------------------------------------------------- helpers


def parse_clock(value: Any, pattern: re.Pattern[str] = _PERIOD_TIME) -> int | None:
    """Minutes after midnight for a 12-hour time ("01:30 PM"); None when it does not match `pattern`."""
    match = pattern.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    hour, minute, half = int(match[1]) % 12, int(match[2]), match[3]
    return (hour + (12 if half == "PM" else 0)) * 60 + minute


def _format_clock(minutes: int) -> str:
    if minutes >= END_OF_DAY:
        return "11:59 PM"
    hour, minute = divmod(minutes, 60)
    return f"{(hour % 12) or 12:02d}:{minute:02d} {'AM' if hour < 12 else 'PM'}"


def _humanize(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _missing(body: dict[str, Any], names: Sequence[str]) -> list[str]:
    return [f"{_humanize(name)} can't be blank" for name in names if _blank(body.get(name))]


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def _host_name(email: str) -> str:
    local = email.split("@", 1)[0]
    return " ".join(part.capitalize() for part in re.split(r"[._-]+", local) if part)


T = TypeVar("T")


def _paginate(items: list[T]) -> tuple[list[T], dict[str, int]]:
    """A page per NeetoCal's `page_number` (from 1) and `page_size` (default 30, at most 100)."""
    page_number = max(1, _int_or(request.args.get("page_number"), 1))
    page_size = min(100, max(1, _int_or(request.args.get("page_size"), 30)))
    total_pages = max(1, -(-len(items) // page_size))
    start = (page_number - 1) * page_size
    pagination = {
        "total_records": len(items),
        "total_pages": total_pages,
        "current_page_number": page_number,
        "page_size": page_size,
    }
    return items[start : start + page_size], pagination


def _int_or(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def _form_response_view(code: str, value: Any) -> dict[str, Any]:
    kind = "multi_select" if isinstance(value, list) else "text"
    return {"field": _humanize(code), "value": value, "type": kind, "field_code": code}


# -------------------------------------------------------------------------------------- simulator


class NeetoCalSimulator:
    def __init__(self) -> None:
        self.state = _NeetoCalState()
        self.control = SandboxControl(config_keys=CONFIG_KEYS, errors=NeetoCalErrors(), on_reset=self._reset)

    def _reset(self) -> None:
        self.state = _NeetoCalState()

    def register(self, app: Flask) -> None:
        self.control.install(app)
        # Both versions, one state. Each v1-only route (POST …/availability, PATCH-as-reschedule and POST
        # …/cancel on bookings, GET /meeting_templates) has no v2 rule, so v2 answers it 404.
        shared: list[tuple[str, Callable[..., Response], list[str]]] = [
            ("/meetings", self.create_link, ["POST"]),
            ("/meetings", self.list_links, ["GET"]),
            ("/meetings/<sid>", self.get_link, ["GET"]),
            ("/meetings/<sid>", self.update_link, ["PATCH"]),
            ("/bookings", self.create_booking, ["POST"]),
            ("/bookings", self.list_bookings, ["GET"]),
            ("/bookings/<sid>", self.get_booking, ["GET"]),
        ]
        v1_only: list[tuple[str, Callable[..., Response], list[str]]] = [
            ("/meetings/<sid>/availability", self.set_availability, ["POST"]),
            ("/meetings/<sid>/availability/create", self.create_link_availability, ["POST"]),
            ("/meetings/<sid>/spots", partial(self.create_spot, version="v1"), ["POST"]),
            ("/bookings/<sid>", self.reschedule_booking, ["PATCH"]),
            ("/bookings/<sid>/cancel", self.cancel_booking, ["POST"]),
            ("/meeting_templates", self.list_templates, ["GET"]),
        ]
        v2_only: list[tuple[str, Callable[..., Response], list[str]]] = [
            ("/meetings/<sid>/availabilities", self.set_availability, ["PATCH"]),
            ("/meetings/<sid>/spots", partial(self.create_spot, version="v2"), ["POST"]),
            # Both methods reach the view; it answers 405 to the one `v2_booking_update_method` does not name.
            ("/bookings/<sid>", self.update_booking, ["PATCH", "PUT"]),
            ("/meeting-templates", self.list_templates, ["GET"]),
            ("/meeting-templates/<template_id>", self.get_template, ["GET"]),
        ]
        rules = [(V1, *route) for route in shared + v1_only] + [(V2, *route) for route in shared + v2_only]
        rules += [
            ("", "/_sandbox/bookings", self.sandbox_bookings, ["GET"]),
            ("", "/_sandbox/meetings", self.sandbox_links, ["GET"]),
            ("", "/_sandbox/availabilities", self.sandbox_availabilities, ["GET"]),
            ("", "/_sandbox/templates", self.sandbox_add_template, ["POST"]),
            ("", "/_sandbox/templates", self.sandbox_templates, ["GET"]),
        ]
        for prefix, rule, view, methods in rules:
            name = getattr(view, "__name__", None) or view.func.__name__  # type: ignore[attr-defined]
            endpoint = f"{prefix.rsplit('/', 1)[-1] or 'sandbox'}_{name}_{rule}_{methods[0].lower()}"
            app.add_url_rule(prefix + rule, endpoint, view, methods=methods)

    # ----------------------------------------------------------------------- pipeline

    def _preflight(self, *, needs_body: bool = False) -> Response | dict[str, Any]:
        """Auth and rate limit, then the JSON body (empty for calls without one), or the error response."""
        if request.headers.get("X-Api-Key") != self.control.get("api_key"):
            return _error(401, "Could not authenticate, invalid API Key")
        wait = self.state.window.try_acquire(self.control.get("rate_limit_per_second"))
        if wait is not None:
            return _error(429, "Too many requests", {"Retry-After": whole_seconds(wait)})
        if not needs_body:
            return {}
        try:
            return json_object_body(request, allow_empty=True)
        except BodyError:
            return _error(400, "Request body must be a valid JSON object")

    # ----------------------------------------------------------------------- scheduling links

    def create_link(self) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        problems = _missing(body, ("slug", "name", "hosts", "duration")) + _link_field_errors(body)
        if problems:
            return _errors(problems)
        with self.control.lock:
            if self._link_by_slug(body["slug"]) is not None:
                return _error(422, "Slug has already been taken")
            template = None
            if not _blank(body.get("template_id")):
                template = self._template(body["template_id"])
                if template is None:  # the docs name no error for this: a 404 like every unknown id
                    return _error(404, "Meeting template not found")
                # "All template configuration values are automatically copied"; "Values you provide in the
                # same request override the template values" (neetocal-create-scheduling-link.txt).
                body = {**template.values, **body}
            link = _Link(
                id=str(uuid.uuid4()),
                sid=self._unused_sid(),
                slug=body["slug"],
                name=body["name"],
                hosts=list(body["hosts"]),
                duration=body["duration"],
                availability=self._default_availability(body["hosts"][0]),
            )
            _apply_link_fields(link, body)
            if template is not None:
                link.template_id, link.questions = template.id, template.field_codes
                if template.values.get("spot") in SPOT_TYPES:  # its meeting place is copied with the rest
                    _add_spot(link, {"spot": template.values["spot"], "is_default": True,
                                     "spot_custom_text": body.get("spot_custom_text")})
            self.state.links.append(link)
            self.control.mark_applied()
            return json_response(
                {"message": "Meeting created successfully", "meeting": _link_view(link)}, 200
            )

    def list_links(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        host = (request.args.get("host_email") or "").lower()
        with self.control.lock:
            links = [link for link in self.state.links if not host or host in (h.lower() for h in link.hosts)]
            page, pagination = _paginate(links)
            return json_response(
                {"meetings": [_link_view(link) for link in page], "pagination": pagination}, 200
            )

    def get_link(self, sid: str) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            link = self._link_by_sid(sid)
            if link is None:
                return _error(404, "Meeting not found")
            return json_response({"meeting": _link_view(link)}, 200)

    def update_link(self, sid: str) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            link = self._link_by_sid(sid)
            if link is None:
                return _error(404, "Meeting not found")
            problems = _missing(body, ("hosts",)) + _link_field_errors(body)
            if problems:
                return _errors(problems)
            if "slug" in body and self._link_by_slug(body["slug"]) not in (None, link):
                return _error(422, "Slug has already been taken")
            _apply_link_fields(link, body)
            link.updated_at = utcnow()
            self.control.mark_applied()
            return json_response(
                {"message": "Meeting updated successfully", "meeting": _link_view(link)}, 200
            )

    def set_availability(self, sid: str) -> Response:
        """Edits the schedule the link uses, so every other link on that schedule changes with it."""
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            link = self._link_by_sid(sid)
            if link is None:
                return _error(404, "Meeting not found")
            checked = _availability_fields(body, link.time_zone)
            if isinstance(checked, Response):
                return checked
            availability = link.availability or self._default_availability(link.hosts[0])
            availability.periods, availability.time_zone = checked
            link.availability, link.updated_at = availability, utcnow()
            self.control.mark_applied()
            return json_response(
                {"message": "Availability updated successfully", "meeting": _link_view(link)}, 200
            )

    def create_link_availability(self, sid: str) -> Response:
        """v1 `POST /meetings/{sid}/availability/create`: a new schedule for one host of this link alone ("The
        created availability will be associated with the specified team member for this specific scheduling
        link", api-reference-v1/availabilities/create-meeting)."""
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            link = self._link_by_sid(sid)
            if link is None:
                return _error(404, "Meeting not found")
            problems = _missing(body, ("email", "name"))
            if problems:
                return _errors(problems)
            email = str(body["email"]).lower()
            if email not in (host.lower() for host in link.hosts):
                return _error(422, "Team member is not a host of this meeting")
            checked = _availability_fields(body, "UTC")
            if isinstance(checked, Response):
                return checked
            periods, zone = checked
            availability = _Availability(id=str(uuid.uuid4()), sid=short_id(7), name=str(body["name"]),
                                         email=email, default=False, time_zone=zone, periods=periods)
            self.state.availabilities.append(availability)
            link.availability, link.updated_at = availability, utcnow()
            self.control.mark_applied()
            return json_response({"availability_id": availability.id, "member_id": email, "meeting_id": link.id,
                                  "availability": availability.view()}, 200)

    def _default_availability(self, email: str) -> _Availability:
        """The member's default schedule, made on first use as NeetoCal gives every member one."""
        email = email.lower()
        for availability in self.state.availabilities:
            if availability.email == email and availability.default:
                return availability
        availability = _Availability(id=str(uuid.uuid4()), sid=short_id(7), name="Working hours", email=email,
                                     default=True)
        self.state.availabilities.append(availability)
        return availability

    def create_spot(self, sid: str, version: str) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            link = self._link_by_sid(sid)
            if link is None:
                return _error(404, "Meeting not found")
            if version == "v2" and self.control.get("v2_spot_text_field") == "custom_text":
                # NeetoCal's CLI names the texts custom_text / phone_number / location (meetings_spots.go).
                body = {**body, **{documented: body.get(cli) for documented, cli in CLI_SPOT_FIELDS.items()}}
            problems = _spot_errors(body)
            if problems:
                return _errors(problems)
            spot = _add_spot(link, body)
            self.control.mark_applied()
            return json_response({"message": "Spot created successfully", "spot": spot}, 200)

    # ----------------------------------------------------------------------- bookings

    def create_booking(self) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        required = ("meeting_slug", "name", "email", "time_zone", "slot_date", "slot_start_time")
        problems = _missing(body, required)
        if problems:
            return _errors(problems)
        with self.control.lock:
            link = self._link_by_slug(body["meeting_slug"])
            if link is None:
                return _error(404, "Meeting not found")
            slot = _requested_slot(body, link, self._clock())
            if isinstance(slot, Response):
                return slot
            if not isinstance(body.get("form_responses", {}), dict):
                return _error(422, "form_responses must be an object")
            if self._overrides_availability(body):
                host = link.hosts[0] if slot[0] > utcnow() else None
            else:
                host = self._free_host(link, *slot, ignore=None)
                host = host if _slot_is_offered(link, slot[0]) else None
            if host is None:
                return _error(422, SLOT_TAKEN)
            booking = _Booking(
                id=str(uuid.uuid4()),
                sid=self._unused_sid(),
                link=link,
                name=body["name"],
                email=body["email"],
                host_email=host,
                starts_at=slot[0],
                ends_at=slot[1],
                time_zone=body["time_zone"],
                form_responses=self._kept_answers(link, body.get("form_responses") or {}),
                preferred_meeting_spot=body.get("preferred_meeting_spot"),
            )
            self.state.bookings.append(booking)
            self.control.mark_applied()
            return json_response(_booking_view(booking), 200)

    def list_bookings(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        kind = request.args.get("type")
        if kind not in (None, "", "upcoming", "past", "cancelled", "incomplete"):
            return _error(422, f"Invalid type: {kind}")
        with self.control.lock:
            selected = [booking for booking in self.state.bookings if _booking_matches(booking, kind)]
            selected.sort(key=lambda booking: booking.starts_at)
            page, pagination = _paginate(selected)
            return json_response(
                {"bookings": [_booking_view(b) for b in page], "pagination": pagination}, 200
            )

    def get_booking(self, sid: str) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            booking = self._booking_by_sid(sid)
            if booking is None:
                return _error(404, "Booking not found")
            return json_response(_booking_view(booking), 200)

    def reschedule_booking(self, sid: str) -> Response:
        """v1 `PATCH /bookings/{sid}`: name, email, slot_date, slot_start_time and time_zone all required."""
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            return self._reschedule(sid, body, ("name", "email", "slot_date", "slot_start_time", "time_zone"))

    def update_booking(self, sid: str) -> Response:
        """v2 `PATCH /bookings/{booking_id}`: "use `status` for approve/reject/cancel, and `slot_date`,
        `slot_start_time`, and `time_zone` to reschedule" (api/bookings/update)."""
        if request.method != self.control.get("v2_booking_update_method"):
            return _error(405, "Method not allowed")
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            status = body.get("status")
            if status == "cancelled":
                return self._cancel(sid, body, json_response)
            if status is not None:  # approve / reject: the sandbox has no bookings awaiting approval
                return _error(422, f"Booking cannot be {status}")
            return self._reschedule(sid, body, ("slot_date", "slot_start_time", "time_zone"))

    def _reschedule(self, sid: str, body: dict[str, Any], required: Sequence[str]) -> Response:
        booking = self._booking_by_sid(sid)
        if booking is None:
            return _error(404, "Booking not found")
        if booking.status == "cancelled":
            return _error(422, ALREADY_CANCELLED)
        problems = _missing(body, required)
        if problems:
            return _errors(problems)
        checked = {"name": booking.name, "email": booking.email, **body}  # v2: both optional overrides
        slot = _requested_slot(checked, booking.link, self._clock())
        if isinstance(slot, Response):
            return slot
        if self._overrides_availability(body):
            refused = slot[0] <= utcnow()
        else:
            refused = not _slot_is_offered(booking.link, slot[0]) or self._host_busy(
                booking.host_email, *slot, booking, booking.link)
        if refused:
            return _error(422, SLOT_TAKEN)
        booking.starts_at, booking.ends_at = slot
        booking.name, booking.email, booking.time_zone = checked["name"], checked["email"], body["time_zone"]
        booking.reschedule_reason = body.get("reschedule_reason")
        booking.updated_at = utcnow()
        self.control.mark_applied()
        return json_response(_booking_view(booking), 200)

    def cancel_booking(self, sid: str) -> Response:
        """v1 `POST /bookings/{sid}/cancel`."""
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            return self._cancel(sid, body, lambda _view, status: json_response(
                {"message": "Booking cancelled successfully"}, status))

    def _cancel(self, sid: str, body: dict[str, Any], answer: Callable[[dict[str, Any], int], Response]
                ) -> Response:
        booking = self._booking_by_sid(sid)
        if booking is None:
            return _error(404, "Booking not found")
        if booking.status == "cancelled":
            return _error(422, ALREADY_CANCELLED)
        booking.status = "cancelled"
        booking.cancel_reason = body.get("cancel_reason")
        booking.updated_at = utcnow()
        self.control.mark_applied()
        # v2 does not document this answer; the sandbox gives the booking, as it does for a reschedule.
        return answer(_booking_view(booking), 200)

    # ----------------------------------------------------------------------- templates

    def list_templates(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            page, pagination = _paginate(list(self.state.templates))
            # v2 reference: `templates`; v1's key is not shown on its page: the sandbox uses the same.
            return json_response({"templates": [t.view() for t in page], "pagination": pagination}, 200)

    def get_template(self, template_id: str) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            template = self._template(template_id)
            if template is None:
                return _error(404, "Meeting template not found")
            # The reference does not show the body; the CLI's sample output shows the template object itself.
            return json_response(template.view(), 200)

    def sandbox_add_template(self) -> Response:
        """Add a template: `{"name", "slug"?, "id"?, "questions": [{"field_code", "type"?, "label"?}], ...}`
        plus any of TEMPLATE_FIELDS. The docs have no API for booking-form questions (only the admin UI)."""
        try:
            body = json_object_body(request, allow_empty=False)
        except BodyError:
            return _error(400, "Request body must be a valid JSON object")
        questions = body.get("questions") or []
        if not isinstance(questions, list) or not all(
            isinstance(q, dict) and isinstance(q.get("field_code"), str) and q["field_code"] for q in questions
        ):
            return _error(422, "questions must be a list of objects with a field_code")
        with self.control.lock:
            template = _Template(
                id=str(body.get("id") or uuid.uuid4()),
                sid=self._unused_sid(),
                name=str(body.get("name") or "Template"),
                slug=str(body.get("slug") or f"template-{short_id(6)}"),
                values={k: body[k] for k in TEMPLATE_FIELDS if k in body and k != "name"},
                questions=[{"field_code": q["field_code"], "type": q.get("type", "short_text"),
                            "label": q.get("label") or _humanize(q["field_code"])} for q in questions],
            )
            self.state.templates.append(template)
            return json_response({"template": template.view()}, 200)

    def sandbox_templates(self) -> Response:
        with self.control.lock:
            return json_response({"templates": [t.view() for t in self.state.templates]}, 200)

    # ----------------------------------------------------------------------- lookups and slot rules

    def _link_by_slug(self, slug: Any) -> _Link | None:
        return next((link for link in self.state.links if link.slug == slug), None)

    def _link_by_sid(self, sid: str) -> _Link | None:
        return next((link for link in self.state.links if link.sid == sid), None)

    def _template(self, template_id: Any) -> _Template | None:
        return next((t for t in self.state.templates if template_id in (t.id, t.sid)), None)

    def _clock(self) -> _Clock:
        """v1 takes 12-hour times; v2 as `v2_slot_time_format` says (reference: 12-hour, CLI: 24-hour)."""
        v2 = request.path.startswith(V2)
        return TWENTY_FOUR_HOUR if v2 and self.control.get("v2_slot_time_format") == "24h" else TWELVE_HOUR

    def _kept_answers(self, link: _Link, answers: dict[str, Any]) -> dict[str, Any]:
        """What the booking keeps of `form_responses`: all of it, or (drop_unknown_form_responses) only the
        answers to questions on the link's form. The docs are silent on which NeetoCal does."""
        if not self.control.get("drop_unknown_form_responses"):
            return dict(answers)
        return {code: value for code, value in answers.items() if code in link.questions}

    def _booking_by_sid(self, sid: str) -> _Booking | None:
        return next((booking for booking in self.state.bookings if booking.sid == sid), None)

    def _unused_sid(self) -> str:
        taken = {link.sid for link in self.state.links} | {booking.sid for booking in self.state.bookings}
        while (candidate := short_id(7)) in taken:
            pass
        return candidate

    def _overrides_availability(self, body: dict[str, Any]) -> bool:
        """v2's `override_availability` (api/bookings/create); v1 documents no such field and ignores it."""
        return request.path.startswith(V2) and body.get("override_availability") is True

    def _host_busy(self, host: str, start: datetime, end: datetime, ignore: _Booking | None,
                   link: _Link | None = None) -> bool:
        return any(
            booking is not ignore
            and booking.status == "confirmed"
            and booking.host_email.lower() == host.lower()
            and booking.overlaps(start, end)
            # A grouped link seats several attendees at one slot.
            and not (link is not None and link.kind == "grouped" and booking.link is link
                     and booking.starts_at == start)
            for booking in self.state.bookings
        )

    def _free_host(self, link: _Link, start: datetime, end: datetime, ignore: _Booking | None) -> str | None:
        """Who takes the booking: the first free host for round robin, else the first host if free."""
        candidates = link.hosts if link.kind == "round_robin" else link.hosts[:1]
        return next((host for host in candidates if not self._host_busy(host, start, end, ignore, link)), None)

    # ----------------------------------------------------------------------- /_sandbox

    def sandbox_bookings(self) -> Response:
        with self.control.lock:
            bookings = [_sandbox_booking_view(booking) for booking in self.state.bookings]
        return json_response({"bookings": bookings}, 200)

    def sandbox_links(self) -> Response:
        with self.control.lock:
            return json_response({"meetings": [_link_view(link) for link in self.state.links]}, 200)

    def sandbox_availabilities(self) -> Response:
        with self.control.lock:
            return json_response({"availabilities": [a.view() for a in self.state.availabilities]}, 200)


# ------------------------------------------------------------------------------------ link fields


def _availability_fields(body: dict[str, Any], zone: str) -> tuple[list[_Period], str] | Response:
    """The periods and time zone of an availability body (the zone defaults to `zone`), or the 422."""
    periods = _parse_periods(body.get("periods"))
    if isinstance(periods, str):
        return _error(422, periods)
    zone = body.get("time_zone", zone)
    if zone_or_none(zone) is None:
        return _error(422, f"Invalid time_zone: {zone}")
    return periods, zone


def _link_field_errors(body: dict[str, Any]) -> list[str]:
    """Type problems with the link fields that are present (blank required fields are reported apart)."""
    problems: list[str] = []
    hosts = body.get("hosts")
    if not _blank(hosts) and (not isinstance(hosts, list) or not all(_is_email(host) for host in hosts)):
        problems.append("Hosts must be a list of valid emails")
    for name in ("duration", "start_time_increment"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"{_humanize(name)} must be greater than 0")
    for name in ("slug", "name"):
        if not _blank(body.get(name)) and not isinstance(body[name], str):
            problems.append(f"{_humanize(name)} is invalid")
    if "kind" in body and body["kind"] not in KINDS:
        problems.append("Kind is not included in the list")
    return problems


def _apply_link_fields(link: _Link, body: dict[str, Any]) -> None:
    for name in (
        "slug",
        "name",
        "duration",
        "description",
        "kind",
        "start_time_increment",
        "spot_custom_text",
        "spot_phone_call_number",
        "spot_in_person_location",
        "is_multiple_spots_allowed",
        "is_multiple_durations_allowed",
    ):
        if name in body:
            setattr(link, name, body[name])
    if "hosts" in body:
        link.hosts = list(body["hosts"])
    for spot in body.get("spots") or []:
        if isinstance(spot, dict) and spot.get("spot") in SPOT_TYPES:
            _add_spot(link, {"spot": spot["spot"], "is_default": bool(spot.get("is_default"))})


def _parse_periods(raw: Any) -> list[_Period] | str:
    """The availability periods, or the 422 message describing the first bad one."""
    if not isinstance(raw, list):
        return "Periods must be a list"
    periods: list[_Period] = []
    for item in raw:
        if not isinstance(item, dict):
            return "Each period must be an object with wday, start_time and end_time"
        if item.get("wday") not in WEEKDAYS:
            return f"Invalid wday {item.get('wday')!r}. Use one of {', '.join(WEEKDAYS)}"
        start, end = parse_clock(item.get("start_time")), parse_clock(item.get("end_time"))
        if start is None or end is None:
            return "Invalid time. Use the format 09:00 AM"
        end = END_OF_DAY if end == END_OF_DAY - 1 else end  # "11:59 PM" means until midnight
        if end <= start:
            return "end_time must be after start_time"
        periods.append(_Period(item["wday"], start, end))
    return periods


def _spot_errors(body: dict[str, Any]) -> list[str]:
    kind = body.get("spot")
    if _blank(kind):
        return ["Spot can't be blank"]
    if kind not in SPOT_TYPES:
        return ["Spot is not included in the list"]
    detail = SPOT_DETAIL_FIELD.get(kind)
    if detail is not None and _blank(body.get(detail)):
        return [f"{_humanize(detail)} can't be blank"]
    if "is_default" in body and not isinstance(body["is_default"], bool):
        return ["Is default must be true or false"]
    return []


def _add_spot(link: _Link, body: dict[str, Any]) -> dict[str, Any]:
    """Add a spot to the link (the first one, or one marked default, becomes the link's spot)."""
    now = iso_millis(utcnow())
    make_default = bool(body.get("is_default")) or not link.spots
    spot = {
        "id": str(uuid.uuid4()),
        "spot": body["spot"],
        "spot_phone_call_number": body.get("spot_phone_call_number"),
        "spot_custom_text": body.get("spot_custom_text"),
        "spot_in_person_location": body.get("spot_in_person_location"),
        "is_default": make_default,
        "created_at": now,
        "updated_at": now,
    }
    if make_default:
        for other in link.spots:
            other["is_default"] = False
        link.spot = spot["spot"]
        for name in SPOT_DETAIL_FIELD.values():
            if spot[name] is not None:
                setattr(link, name, spot[name])
    link.spots.append(spot)
    return dict(spot)


# ------------------------------------------------------------------------------------- slot rules


@dataclass(frozen=True)
class _Clock:
    """How `slot_start_time` is written: minutes after midnight from it, and an example for the 422."""

    parse: Callable[[Any], int | None]
    example: str


def _parse_24h(value: Any) -> int | None:
    match = _SLOT_TIME_24H.match(value) if isinstance(value, str) else None
    return int(match[1]) * 60 + int(match[2]) if match else None


TWELVE_HOUR = _Clock(lambda value: parse_clock(value, _SLOT_TIME), "01:30 PM")
TWENTY_FOUR_HOUR = _Clock(_parse_24h, "13:30")


def _requested_slot(body: dict[str, Any], link: _Link, clock: _Clock | None = None
                    ) -> tuple[datetime, datetime] | Response:
    """Check the client's email, zone, date and time (12-hour unless `clock` says otherwise): the UTC slot they
    name, or the 422."""
    clock = clock or TWELVE_HOUR
    zone = zone_or_none(body["time_zone"])
    if zone is None:
        return _error(422, f"Invalid time_zone: {body['time_zone']}")
    if not _is_email(body["email"]):
        return _errors(["Email is invalid"])
    slot_day = _parse_date(body["slot_date"])
    if slot_day is None:
        return _error(422, "Invalid slot_date. Use the format YYYY-MM-DD")
    minutes = clock.parse(body["slot_start_time"])
    if minutes is None:
        return _error(422, f"Invalid slot_start_time. Use the format {clock.example}")
    local = datetime(slot_day.year, slot_day.month, slot_day.day, tzinfo=zone) + timedelta(minutes=minutes)
    start = local.astimezone(UTC)
    return start, start + timedelta(minutes=link.duration)


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not _SLOT_DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _slot_is_offered(link: _Link, start: datetime) -> bool:
    """Future, on the link's increment and inside an availability period (all in the link's zone)."""
    if start <= utcnow():
        return False
    local = start.astimezone(zone_or_none(link.time_zone))
    minute_of_day = local.hour * 60 + local.minute
    if local.second or minute_of_day % link.start_time_increment:
        return False
    weekday = WEEKDAYS[local.weekday()]
    return any(
        period.wday == weekday and period.start_minute <= minute_of_day < period.end_minute
        for period in link.periods
    )


def _booking_matches(booking: _Booking, kind: str | None) -> bool:
    args = request.args
    if args.get("client_email") and booking.email.lower() != args["client_email"].lower():
        return False
    if args.get("host_email") and booking.host_email.lower() != args["host_email"].lower():
        return False
    if args.get("meeting_slug") and booking.link.slug != args["meeting_slug"]:
        return False
    now = utcnow()
    if kind == "cancelled":
        return booking.status == "cancelled"
    if kind == "upcoming":
        return booking.status == "confirmed" and booking.starts_at >= now
    if kind == "past":
        return booking.status == "confirmed" and booking.starts_at < now
    # The sandbox has no incomplete (unpaid / unconfirmed) bookings.
    return kind != "incomplete"


# ---------------------------------------------------------------------------------------- views


def _link_view(link: _Link) -> dict[str, Any]:
    return {
        "id": link.id,
        "sid": link.sid,
        "name": link.name,
        "slug": link.slug,
        "description": link.description,
        "kind": link.kind,
        "duration": link.duration,
        "disabled": False,
        "spot": link.spot,
        "spot_in_person_location": link.spot_in_person_location,
        "spot_custom_text": link.spot_custom_text,
        "spot_phone_call_number": link.spot_phone_call_number,
        "is_template": False,
        "lead_time": 0,
        "start_time_increment": link.start_time_increment,
        "is_multiple_spots_allowed": link.is_multiple_spots_allowed,
        "is_multiple_durations_allowed": link.is_multiple_durations_allowed,
        "durations_possible": [link.duration],
        "spots": [dict(spot) for spot in link.spots],
        "hosts": list(link.hosts),
        "template_id": link.template_id,
        "questions": list(link.questions),
        "availability": {"time_zone": link.time_zone, "periods": [period.view() for period in link.periods]},
        "created_at": iso_millis(link.created_at),
        "updated_at": iso_millis(link.updated_at),
        "deleted_at": None,
    }


def _booking_view(booking: _Booking) -> dict[str, Any]:
    client_zone = zone_or_none(booking.time_zone)
    return {
        "id": booking.id,
        "sid": booking.sid,
        "email": booking.email,
        "name": booking.name,
        "host_name": _host_name(booking.host_email),
        "host_email": booking.host_email,
        "starts_at": iso_seconds(booking.starts_at),
        "ends_at": iso_seconds(booking.ends_at),
        "time_zone": booking.time_zone,
        "starts_at_for_client": booking.starts_at.astimezone(client_zone).isoformat(),
        "ends_at_for_client": booking.ends_at.astimezone(client_zone).isoformat(),
        "status": booking.status,
        "cancel_reason": booking.cancel_reason,
        "reschedule_requested": False,
        "preferred_meeting_spot": booking.preferred_meeting_spot,
        "room_url": None,
        "spot_details": None,
        "meeting_id": booking.link.id,
        "meeting": {"name": booking.link.name, "slug": booking.link.slug},
        "metadata": {},
        "form_responses": [
            _form_response_view(code, value) for code, value in booking.form_responses.items()
        ],
        "form_responses_as_hash": dict(booking.form_responses),
        "created_at": iso_millis(booking.created_at),
        "updated_at": iso_millis(booking.updated_at),
        "client_booking_url": f"{PUBLIC_URL}/bookings/{booking.sid}",
    }


def _sandbox_booking_view(booking: _Booking) -> dict[str, Any]:
    return {
        **_booking_view(booking),
        "meeting_slug": booking.link.slug,
        "form_responses": dict(booking.form_responses),
        "reschedule_reason": booking.reschedule_reason,
    }


def create_app() -> Flask:
    app = Flask("sandbox.neetocal")
    NeetoCalSimulator().register(app)
    return app
