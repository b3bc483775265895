"""NeetoCal external API (`X-Api-Key`): scheduling links, their templates, and bookings, on v2 or v1.

The routes and field names of each version are in one table (`Routes`, chosen by the version segment at the
end of NEETOCAL_API_URL); the methods below say what to do and the table says how that version spells it.
Where NeetoCal's v2 reference and its own CLI disagree (sandbox/SPEC.md, "v2 conflicts"), the table lists the
documented form first and the CLI's second: the client sends the first, and on a refusal that names exactly
that choice tries the other once and keeps, for the life of this client, whichever worked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx

from schemas.neetocal import (
    SLOT_TIME_FORMAT,
    SLOT_TIME_FORMAT_24H,
    Booking,
    BookingRequest,
    BookingRequestSchema,
    BookingResponseSchema,
    Link,
    LinkRequestSchema,
    LinkResponseSchema,
    LinkSpec,
    RescheduleRequestSchema,
    always_available,
    slot_fields,
)
from schemas.times import parse_utc
from workers.clients.base import ApiClient
from workers.clients.errors import APIError, NotConfigured, NotFound, SlotUnavailable, ValidationFailed
from workers.clients.paging import numbered_pages

PAGE_SIZE = 100

# One instance of each schema, reused: building one deep-copies its fields, which cost more than the load itself
# (bench/profile_worker showed Schema.__init__ on every API answer).
BOOKING_REQUEST = BookingRequestSchema()
BOOKING_RESPONSE = BookingResponseSchema()
LINK_REQUEST = LinkRequestSchema()
LINK_RESPONSE = LinkResponseSchema()
RESCHEDULE_REQUEST = RescheduleRequestSchema()
T = TypeVar("T")


@dataclass(frozen=True)
class Routes:
    """How one NeetoCal API version spells each call meetbridge makes. Paths are relative to the base URL;
    `{sid}` / `{id}` are filled in. Tuples of alternatives list the documented form first."""

    version: str
    links: str  # GET list (host_email), POST create
    # POST: give the link a schedule of its own (v1 only). Editing the schedule a link already uses would edit it
    # for every other link of the host as well, so meetbridge never does; v2 documents no link-only route.
    link_availability: str | None
    link_spots: str  # POST: add a spot (meeting place)
    spot_text_fields: tuple[str, ...]  # the body field carrying a custom spot's text
    bookings: str  # GET list (client_email), POST create
    booking: str  # GET one
    booking_update_methods: tuple[str, ...]  # reschedule (and, on v2, cancel) on `booking`
    cancel: tuple[str, str] | None  # method, path of a cancel route; None: update `booking` with a status
    slot_time_formats: tuple[str, ...]  # strftime of `slot_start_time`
    template: str | None  # GET one scheduling-link template; None: find it in `templates`
    templates: str  # GET list of scheduling-link templates
    # Book with `override_availability`, so that a mirror link needs no hours of its own (v2 only: v1 documents
    # no such field, so v1 links get a schedule of their own, open all day, and stay bookable by anyone who has
    # their URL).
    override_availability: bool


ROUTES: dict[str, Routes] = {
    # apidocs.neetocal.com/api-reference-v1/… (deprecated); ../shared/api-docs/neetocal-*.txt.
    "v1": Routes(
        version="v1",
        links="meetings",
        link_availability="meetings/{sid}/availability/create",  # api-reference-v1/availabilities/create-meeting
        link_spots="meetings/{sid}/spots",
        spot_text_fields=("spot_custom_text",),
        bookings="bookings",
        booking="bookings/{sid}",
        booking_update_methods=("PATCH",),
        cancel=("POST", "bookings/{sid}/cancel"),
        slot_time_formats=(SLOT_TIME_FORMAT,),
        template=None,
        templates="meeting_templates",
        override_availability=False,
    ),
    # apidocs.neetocal.com/api/… and neetozone/neeto-cal-cli (internal/commands/*.go).
    "v2": Routes(
        version="v2",
        links="meetings",
        link_availability=None,
        link_spots="meetings/{sid}/spots",
        spot_text_fields=("spot_custom_text", "custom_text"),  # reference / CLI meetings_spots.go
        bookings="bookings",
        booking="bookings/{sid}",
        booking_update_methods=("PATCH", "PUT"),  # reference / CLI bookings.go
        cancel=None,  # "use `status` for approve/reject/cancel" (api/bookings/update)
        slot_time_formats=(SLOT_TIME_FORMAT, SLOT_TIME_FORMAT_24H),  # reference / CLI SKILL.md
        template="meeting-templates/{id}",
        templates="meeting-templates",
        override_availability=True,  # api/bookings/create (apidocs.neetocal.com): see sandbox/SPEC.md
    ),
}


@dataclass(frozen=True)
class Template:
    id: str
    is_template: bool
    name: str | None = None


class NeetoCalClient(ApiClient):
    service = "neetocal"

    def __init__(self, base_url: str | None, *, api_key: str | None, version: str = "v2",
                 template_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(base_url or "http://neetocal.invalid", **kwargs)
        self.configured = bool(base_url and api_key)
        self.api_key = api_key or ""
        self.routes = ROUTES[version]
        self.template_id = template_id
        # Which alternative of a conflicting detail this NeetoCal accepted (index into the Routes tuple).
        self._chosen: dict[str, int] = {}

    # --- scheduling links --------------------------------------------------------------------------------
    def find_link(self, host_email: str, slug: str) -> Link | None:
        for item in self._pages(self.routes.links, "list_links", "meetings", host_email=host_email):
            if item.get("slug") == slug:
                return LINK_RESPONSE.load(item)
        return None

    def create_link(self, spec: LinkSpec) -> Link:
        """Create the link, from NEETOCAL_TEMPLATE_ID when one is set (the template's booking form with it)."""
        if self.template_id and not spec.template_id:
            spec = replace(spec, template_id=self.template_id)
        response = self.request("POST", self.routes.links, operation="create_link",
                                json=LINK_REQUEST.dump(spec))
        return LINK_RESPONSE.load(_unwrap(response.json(), "meeting"))

    def set_mirror_availability(self, link: Link, host_email: str) -> bool:
        """v1: a schedule of the link's own, open all day, since v1 books only inside the link's hours; True once
        made (the caller notes it: each call makes one more). v2 books past the hours (`override_availability`)
        and leaves the link on the host's schedule, since its only call for a link's hours edits that schedule
        "wherever else it is used" (api/availabilities/update-meeting): False, nothing sent."""
        if self.routes.link_availability is None:
            return False
        body = {"email": host_email, "name": f"meetbridge: {link.slug}"[:100], **always_available()}
        # Not retried: a create whose answer was lost may have made one, and a second would be one more.
        self.request("POST", self.routes.link_availability.format(sid=link.sid), operation="set_availability",
                     json=body, retries=0)
        return True

    def set_custom_spot(self, link: Link, text: str) -> None:
        def send(field_name: str) -> None:
            self.request("POST", self.routes.link_spots.format(sid=link.sid), operation="create_spot",
                         json={"spot": "custom", field_name: text, "is_default": True})

        self._either("spot_text_field", self.routes.spot_text_fields, send,
                     refused=lambda error, _: _names(error, "custom_text", "custom text"))

    # --- templates ---------------------------------------------------------------------------------------
    def get_template(self, template_id: str) -> Template | None:
        """The scheduling-link template with this id (or sid), None if NeetoCal has none."""
        if self.routes.template is not None:
            try:
                body = self.request("GET", self.routes.template.format(id=template_id),
                                    operation="get_template").json()
            except NotFound:
                return None
            # The reference does not show this answer's shape: the object itself or wrapped, both are read.
            return _template(_unwrap(body, "template", "meeting_template"))
        for item in self._pages(self.routes.templates, "list_templates", ("templates", "meeting_templates")):
            if template_id in (item.get("id"), item.get("sid")):
                return _template(item)
        return None

    # --- bookings ----------------------------------------------------------------------------------------
    def create_booking(self, booking: BookingRequest) -> Booking:
        booking = replace(booking, override_availability=self.routes.override_availability)

        def send(time_format: str) -> Booking:
            body = {**BOOKING_REQUEST.dump(booking), **slot_fields(booking.start, booking.time_zone,
                                                                          time_format)}
            response = self.request("POST", self.routes.bookings, operation="create_booking", json=body)
            return _booking(response.json())

        return self._either("slot_time_format", self.routes.slot_time_formats, send, refused=_time_refused)

    def find_booking(self, client_email: str, answer: str | None, *, field: str | None = None,
                     starts_at: str | None = None, host_email: str | None = None) -> Booking | None:
        """The live booking of `client_email` that carries `answer` in its form responses (at `starts_at`, UTC
        `Z`, when given: a join URL of meetergo's own may be the same on the client's other appointments) or,
        when NeetoCal dropped it or none was sent (no answer under the field code `field`), the one without that
        answer which starts at `starts_at` with `host_email`: one host holds one booking at a time."""
        for item in self._pages(self.routes.bookings, "list_bookings", "bookings", client_email=client_email):
            booking = BOOKING_RESPONSE.load(item)
            if booking.status == "cancelled" or (starts_at is not None and not _same_instant(booking.starts_at,
                                                                                             starts_at)):
                continue
            if answer and answer in booking.answers:
                return booking
            unanswered = field is not None and not booking.answer(field)  # also listed with "" or null
            if unanswered and starts_at is not None and host_email is not None \
                    and (booking.host_email or "").lower() == host_email.lower():
                return booking
        return None

    def get_booking(self, sid: str) -> Booking:
        response = self.request("GET", self.routes.booking.format(sid=sid), operation="get_booking")
        return _booking(response.json())

    def reschedule_booking(self, sid: str, booking: BookingRequest) -> Booking:
        booking = replace(booking, override_availability=self.routes.override_availability)

        def send(time_format: str) -> Booking:
            body = {**RESCHEDULE_REQUEST.dump(booking), **slot_fields(booking.start, booking.time_zone,
                                                                             time_format)}
            # Not repeated within the call: after a lost answer the sync first reads the booking back.
            return _booking(self._update_booking(sid, body, "reschedule_booking").json())

        return self._either("slot_time_format", self.routes.slot_time_formats, send, refused=_time_refused)

    def cancel_booking(self, sid: str, reason: str) -> None:
        """Cancel; a booking that is already cancelled, or gone from NeetoCal, counts as done (repeat behaviour is
        undocumented)."""
        try:
            if self.get_booking(sid).status == "cancelled":
                return
        except NotFound:
            return  # nothing is left for the attendee to hold
        body = {"cancel_reason": reason[:500]}
        try:
            if self.routes.cancel is None:
                self._update_booking(sid, {"status": "cancelled", **body}, "cancel_booking", retries=2)
            else:
                method, path = self.routes.cancel
                self.request(method, path.format(sid=sid), operation="cancel_booking", json=body, retries=2)
        except ValidationFailed:
            if self.get_booking(sid).status != "cancelled":
                raise

    def _update_booking(self, sid: str, body: dict[str, Any], operation: str, retries: int = 0) -> httpx.Response:
        path = self.routes.booking.format(sid=sid)
        return self._either(
            "booking_update_method", self.routes.booking_update_methods,
            lambda method: self.request(method, path, operation=operation, json=body, retries=retries),
            # A route that exists but not for this method is 405; some servers answer an unknown one 404.
            refused=lambda error, _: error.status in (404, 405) and not _names(error, "booking"))

    # --- plumbing ----------------------------------------------------------------------------------------
    def _either(self, aspect: str, options: tuple[str, ...], send: Callable[[str], T],
                refused: Callable[[APIError, str], bool]) -> T:
        """`send` with the alternative known to work (else the first); if NeetoCal refuses that very choice,
        the other once, remembered from then on. A refusal changed nothing, so trying again is safe."""
        chosen = self._chosen.get(aspect, 0)
        try:
            return send(options[chosen])
        except APIError as error:
            if len(options) < 2 or not refused(error, options[chosen]):
                raise
        other = (chosen + 1) % len(options)
        result = send(options[other])
        self._chosen[aspect] = other
        return result

    def auth_headers(self) -> dict[str, str]:
        if not self.configured:
            raise NotConfigured("NEETOCAL_API_URL and NEETOCAL_API_KEY are not set", service="neetocal")
        return {"X-Api-Key": self.api_key}

    def _pages(self, path: str, operation: str, key: str | tuple[str, ...], **params: Any
               ) -> Iterator[dict[str, Any]]:
        keys = (key,) if isinstance(key, str) else key

        def fetch(page: int) -> tuple[list[dict[str, Any]], int | None]:
            body = self.request("GET", path, operation=operation,
                                params={**params, "page_number": page, "page_size": PAGE_SIZE}).json()
            items = next((body[k] for k in keys if isinstance(body.get(k), list)), [])
            total_pages = (body.get("pagination") or {}).get("total_pages")
            return items, None if total_pages is None else int(total_pages)

        for items in numbered_pages(fetch, page_size=PAGE_SIZE):
            yield from items

    def error_from(self, response: httpx.Response, operation: str) -> APIError:
        error = super().error_from(response, operation)
        text = error.message.lower()
        if response.status_code == 422 and "slot" in text and ("available" in text or "taken" in text):
            return SlotUnavailable(error.message, service="neetocal", status=422, body=error.body)
        return error


def join_url_dropped_warning(field_code: str) -> str:
    """What the admin API, `meetbridge status` and `doctor` say when NeetoCal dropped the join URL."""
    return (f"NeetoCal dropped the join URL: the booking form has no question with field code {field_code}. "
            f"Fix: give the NeetoCal template's booking form a short-text question with field code {field_code}, "
            "and set NEETOCAL_TEMPLATE_ID to that template (links made earlier keep their own form: add the "
            "question there too); bookings made before the fix stay without the URL.")


def _names(error: APIError, *words: str) -> bool:
    """Whether NeetoCal's own error body (not our operation name in the message) names one of `words`."""
    text = json.dumps(error.body).lower() if error.body is not None else ""
    return any(word in text for word in words)


def _time_refused(error: APIError, _: str) -> bool:
    """A 4xx about the form of `slot_start_time` (not about the slot being taken)."""
    return (error.status in (400, 422) and not isinstance(error, SlotUnavailable)
            and _names(error, "slot_start_time", "start time", "time format"))


def _unwrap(body: Any, *keys: str) -> dict[str, Any]:
    """The object an answer carries, whether bare or wrapped under one of `keys`."""
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), dict):
                return body[key]
        return body
    return {}


def _booking(body: Any) -> Booking:
    # v1 documents the booking object itself; the v2 reference does not show the answer of create and
    # update, so a `{"booking": {...}}` wrapper is read too.
    return BOOKING_RESPONSE.load(_unwrap(body, "booking"))


def _template(item: dict[str, Any]) -> Template:
    return Template(id=str(item.get("id") or item.get("sid") or ""), is_template=item.get("is_template") is True,
                   name=item.get("name"))


def _same_instant(found: str | None, noted: str) -> bool:
    """Whether NeetoCal's `starts_at` is the noted time: its docs show UTC with Z, read as any ISO 8601 form."""
    if found == noted:
        return True
    try:
        return found is not None and parse_utc(found) == parse_utc(noted)
    except ValueError:
        return False
