"""meetergo simulator: API-key auth, webhook registrations, bookings/appointments and webhook delivery.

The payload builders at the top are pure module-level functions so tests can build the exact bodies the
simulator would send (or post them to the service themselves).
"""

from __future__ import annotations

import copy
import logging
import queue
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from flask import Flask, Response, request

from sandbox.control import ConfigKey, SandboxControl, integer, json_response, string_list, text
from sandbox.util import (
    BodyError,
    SlidingWindow,
    int_arg,
    iso_millis,
    json_object_body,
    parse_iso,
    utcnow,
    whole_seconds,
)

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "sandbox-meetergo-key"
PLATFORM_KEY_PREFIX = "ak_live:"
USER_HEADER = "x-meetergo-api-user-id"
COMPANY_ID = "company-uuid-789"
EVENT_TYPES = (
    "booking_created",
    "booking_cancelled",
    "booking_rescheduled",
    "new_employee",
    "form_submission",
)
MAX_WEBHOOKS = 6
DELIVERY_TIMEOUT_SECONDS = 30.0
SLOT_TAKEN = "The selected time slot is no longer available"

JOHN: dict[str, Any] = {
    "id": "host-uuid-123",
    "email": "john@example.com",
    "givenName": "John",
    "familyName": "Smith",
    "slug": "john-smith",
}
MARIA: dict[str, Any] = {
    "id": "host-uuid-456",
    "email": "maria@example.com",
    "givenName": "Maria",
    "familyName": "Garcia",
    "slug": "maria-garcia",
}
DISCOVERY_CALL: dict[str, Any] = {
    "id": "mt-uuid-456",
    "slug": "discovery-call",
    "meetingInfo": {"name": "Discovery Call", "duration": 30},
    "metadata": {},
}
PRODUCT_DEMO: dict[str, Any] = {
    "id": "mt-uuid-789",
    "slug": "product-demo",
    "meetingInfo": {"name": "Product Demo", "duration": 45},
    "metadata": {},
}
SEED_USERS = (JOHN, MARIA)
SEED_MEETING_TYPES = (DISCOVERY_CALL, PRODUCT_DEMO)
# The attendee of the documented booking_created example.
JANE: dict[str, Any] = {
    "id": "att-uuid-789",
    "email": "customer@example.com",
    "firstname": "Jane",
    "lastname": "Doe",
    "fullname": "Jane Doe",
    "phone": "+1-555-123-4567",
    "timezone": "America/New_York",
    "language": "en",
}

# The fields of the documented booking_created example, in its order (webhookType comes first).
PAYLOAD_FIELDS = (
    "id",
    "secret",
    "start",
    "end",
    "location",
    "isCancelled",
    "rescheduledAt",
    "meetingInfo",
    "attendees",
    "hosts",
    "hostIds",
    "meetingType",
    "meetingTypeId",
    "companyId",
    "createdAt",
    "updatedAt",
)


# ----------------------------------------------------------------------------------- payload builders


def host_entry(user: Mapping[str, Any]) -> dict[str, Any]:
    """A `hosts[]` item for a company user."""
    given, family = user.get("givenName") or "", user.get("familyName") or ""
    return {
        "id": user["id"],
        "email": user["email"],
        "givenName": given,
        "familyName": family,
        "fullName": user.get("fullName") or f"{given} {family}".strip(),
        "slug": user.get("slug"),
        "picture": user.get("picture"),
    }


def attendee_entry(attendee: Mapping[str, Any]) -> dict[str, Any]:
    """An `attendees[]` item; `fullname` is derived from first/last name when not given."""
    first, last = attendee.get("firstname"), attendee.get("lastname")
    fullname = attendee.get("fullname") or " ".join(part for part in (first, last) if part) or None
    return {
        "id": attendee.get("id") or str(uuid.uuid4()),
        "email": attendee.get("email"),
        "firstname": first,
        "lastname": last,
        "fullname": fullname,
        "phone": attendee.get("phone"),
        "timezone": attendee.get("timezone"),
        "language": attendee.get("language") or "en",
        **({"bringalongEmails": list(attendee["bringalongEmails"])} if attendee.get("bringalongEmails") else {}),
    }


def iso_with_offset(moment: datetime) -> str:
    """`2024-01-15T09:00:00+01:00`: meetergo's `start`/`end` (naive input is taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.isoformat(timespec="seconds")


def make_appointment(
    start: datetime,
    *,
    host: Mapping[str, Any] | None = None,
    hosts: Sequence[Mapping[str, Any]] | None = None,
    meeting_type: Mapping[str, Any] | None = None,
    attendee: Mapping[str, Any] | None = None,
    minutes: int = 30,
    id: str | None = None,
    channel: str = "zoom",
) -> dict[str, Any]:
    """A complete appointment shaped like the documented booking_created example (without webhookType).

    Defaults: host John Smith, meeting type Discovery Call, attendee Jane Doe. `start` may be any date.
    The meeting link is left empty: in this integration meetbridge, not meetergo, creates the Zoom meeting.
    """
    host_users = list(hosts) if hosts is not None else [host or JOHN]
    kind = copy.deepcopy(dict(meeting_type or DISCOVERY_CALL))
    kind.setdefault("metadata", {})
    now = iso_millis(utcnow())
    return {
        "id": id or str(uuid.uuid4()),
        "secret": secrets.token_urlsafe(18),
        "start": iso_with_offset(start),
        "end": iso_with_offset(start + timedelta(minutes=minutes)),
        "location": None,
        "isCancelled": False,
        "rescheduledAt": None,
        "meetingInfo": {"channel": channel, "meetingLink": None},
        "attendees": [attendee_entry(attendee or JANE)],
        "hosts": [host_entry(user) for user in host_users],
        "hostIds": [user["id"] for user in host_users],
        "meetingType": kind,
        "meetingTypeId": kind["id"],
        "companyId": COMPANY_ID,
        "createdAt": now,
        "updatedAt": now,
    }


def _payload_fields(appt: Mapping[str, Any]) -> dict[str, Any]:
    return {name: copy.deepcopy(appt.get(name)) for name in PAYLOAD_FIELDS}


def booking_created(appt: Mapping[str, Any]) -> dict[str, Any]:
    return {"webhookType": "booking_created", **_payload_fields(appt)}


def booking_rescheduled(appt: Mapping[str, Any], old_start: datetime | str) -> dict[str, Any]:
    """`appt` is the appointment after the move; `old_start` where it was before."""
    moved = _payload_fields(appt)
    moved["rescheduledAt"] = moved["rescheduledAt"] or moved["updatedAt"]
    old = old_start if isinstance(old_start, str) else iso_with_offset(old_start)
    return {
        "webhookType": "booking_rescheduled",
        **copy.deepcopy(moved),
        "oldStartDate": old,
        "rescheduledAppointment": moved,
    }


def booking_cancelled(appt: Mapping[str, Any], shape: str = "webhook") -> dict[str, Any]:
    """`shape` "webhook": cancel {cancelledAt, cancelledBy, reason}; "rest": {actionSource, actionAt, ...}."""
    return {
        "webhookType": "booking_cancelled",
        **_payload_fields(appt),
        "isCancelled": True,
        "cancel": cancel_in_shape(appt, shape),
    }


def envelope(payload: Mapping[str, Any], form: str = "flat") -> dict[str, Any]:
    """The body as delivered: the payload itself ("flat") or `{"event": ..., "data": {...}}` ("nested")."""
    if form == "flat":
        return copy.deepcopy(dict(payload))
    if form == "nested":
        data = {key: copy.deepcopy(value) for key, value in payload.items() if key != "webhookType"}
        return {"event": payload["webhookType"], "data": data}
    raise ValueError(f"unknown envelope form {form!r}")


def cancel_in_shape(appt: Mapping[str, Any], shape: str) -> dict[str, Any]:
    """The appointment's cancel details in the webhook or the REST shape (either may be stored)."""
    stored = appt.get("cancel") or {}
    cancelled_at = stored.get("cancelledAt") or stored.get("actionAt") or appt.get("updatedAt")
    cancelled_by = stored.get("cancelledBy") or stored.get("actionSource") or "host"
    reason = stored.get("reason")
    if shape == "webhook":
        return {"cancelledAt": cancelled_at, "cancelledBy": cancelled_by, "reason": reason}
    if shape == "rest":
        return {
            "actionSource": cancelled_by,
            "actionAt": cancelled_at,
            "actionBy": stored.get("actionBy") or _actor_id(appt, cancelled_by),
            "reason": reason,
        }
    raise ValueError(f"unknown cancel shape {shape!r}")


def _actor_id(appt: Mapping[str, Any], role: str) -> str | None:
    if role == "host":
        people = list(appt.get("hostIds") or [])
    else:
        people = [attendee.get("id") for attendee in appt.get("attendees") or []]
    return people[0] if people else None


# ------------------------------------------------------------------------------------------- errors


def _error(
    status: int,
    message: str | list[str],
    *,
    errors: list[dict[str, str]] | None = None,
    retry_after: str | None = None,
) -> Response:
    """meetergo's (NestJS) error body: {statusCode, message, error}, `errors` for validation details."""
    body: dict[str, Any] = {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status, {"Retry-After": retry_after} if retry_after else None)


def _invalid(errors: list[dict[str, str]]) -> Response:
    return _error(400, "Validation failed", errors=errors)


class MeetergoErrors:
    def server_error(self) -> Response:
        return _error(500, "Internal server error")

    def rate_limited(self) -> Response:
        return _error(429, "Too Many Requests", retry_after="1")

    def gateway_timeout(self) -> Response:
        return _error(504, "Gateway Timeout")

    def not_found(self) -> Response:
        return _error(404, f"Cannot {request.method} {request.path}")

    def method_not_allowed(self) -> Response:
        # NestJS answers an unrouted method like an unknown path.
        return self.not_found()


# ------------------------------------------------------------------------------------------- config


def _page_base(value: Any) -> str | None:
    return None if value in (0, 1) and not isinstance(value, bool) else "must be 0 or 1"


CONFIG_KEYS: dict[str, ConfigKey] = {
    "api_keys": ConfigKey([DEFAULT_API_KEY], string_list()),
    "envelope": ConfigKey("flat", text(("flat", "nested"))),
    "cancel_shape": ConfigKey("webhook", text(("webhook", "rest"))),
    # What `booking_cancelled` carries when one attendee leaves a group (POST .../cancel with `attendeeId`): the
    # docs say only that the event fires. "leaver": the appointment naming just the attendee who left (still
    # `isCancelled: true`); "remaining": the appointment as it now is (`isCancelled: false`, who remains).
    "attendee_cancel_payload": ConfigKey("leaver", text(("leaver", "remaining"))),
    "page_base": ConfigKey(1, _page_base),
    "rate_limit_per_minute": ConfigKey(None, integer(minimum=1, nullable=True)),
}


# ----------------------------------------------------------------------------------------- delivery


def redact_endpoint(url: str) -> str:
    """The endpoint with secret-looking query values (token, secret, key, signature) replaced."""
    parts = urlsplit(url)
    secretish = ("token", "secret", "key", "sig")
    query = [
        (name, "<redacted>" if any(word in name.lower() for word in secretish) else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="<>")))


@dataclass(frozen=True)
class _Delivery:
    generation: int
    endpoint: str
    webhook_type: str
    appointment_id: str
    body: dict[str, Any]


def _post(client: httpx.Client, delivery: _Delivery) -> dict[str, Any]:
    """POST one webhook; the record for /_sandbox/deliveries (status None on a connection error)."""
    record: dict[str, Any] = {
        "at": iso_millis(utcnow()),
        "endpoint": redact_endpoint(delivery.endpoint),
        "webhookType": delivery.webhook_type,
        "appointment_id": delivery.appointment_id,
        "status": None,
        "body": delivery.body,
        "response": None,
        "error": None,
    }
    try:
        response = client.post(delivery.endpoint, json=delivery.body)
    except (httpx.HTTPError, httpx.InvalidURL) as problem:
        record["error"] = f"{type(problem).__name__}: {problem}"
        return record
    record["status"], record["response"] = response.status_code, response.text
    return record


class _DeliveryWorker:
    """Posts webhooks one at a time, in order, from a background thread (no retries, like meetergo)."""

    def __init__(self, on_done: Callable[[_Delivery, dict[str, Any]], None]) -> None:
        self._queue: queue.Queue[_Delivery] = queue.Queue()
        self._on_done = on_done
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, delivery: _Delivery) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sandbox-meetergo-webhooks", daemon=True
                )
                self._thread.start()
        self._queue.put(delivery)

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS) as client:
            while True:
                delivery = self._queue.get()
                try:
                    self._on_done(delivery, _post(client, delivery))
                except Exception:  # one bad delivery must not stop all later ones
                    log.exception("sandbox meetergo: webhook delivery to %s failed", delivery.endpoint)


# -------------------------------------------------------------------------------------------- state


def _seeded(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [copy.deepcopy(dict(item)) for item in items]


@dataclass
class _MeetergoState:
    users: list[dict[str, Any]] = field(default_factory=lambda: _seeded(SEED_USERS))
    meeting_types: list[dict[str, Any]] = field(default_factory=lambda: _seeded(SEED_MEETING_TYPES))
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where each appointment started before its last move, so a re-delivered reschedule can say so.
    previous_starts: dict[str, str] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    pending: int = 0
    windows: dict[str, SlidingWindow] = field(default_factory=dict)


def _rest_view(appt: Mapping[str, Any]) -> dict[str, Any]:
    """`GET /v4/appointment/{id}`: the REST object (cancel always in the REST shape)."""
    meeting_info = copy.deepcopy(appt.get("meetingInfo") or {})
    host_ids = list(appt.get("hostIds") or [])
    attendees = copy.deepcopy(appt.get("attendees") or [])
    return {
        "id": appt["id"],
        "secret": appt.get("secret"),
        "start": appt["start"],
        "end": appt["end"],
        "location": appt.get("location"),
        "isCancelled": bool(appt.get("isCancelled")),
        "cancel": cancel_in_shape(appt, "rest") if appt.get("isCancelled") else None,
        "attendees": attendees,
        "attendeeIds": [attendee.get("id") for attendee in attendees],
        "meetingTypeId": appt.get("meetingTypeId"),
        "hostIds": host_ids,
        "hostingInfo": {
            "mainHost": host_ids[0] if host_ids else None,
            "meetingLink": meeting_info.get("meetingLink"),
        },
        "meetingInfo": meeting_info,
        "companyId": appt.get("companyId"),
        "createdAt": appt.get("createdAt"),
        "updatedAt": appt.get("updatedAt"),
        "rescheduledAt": appt.get("rescheduledAt"),
    }


def _later_timestamp(appt: Mapping[str, Any]) -> str:
    """Now, but strictly after every timestamp the appointment already carries (millisecond precision)."""
    stamps = [appt.get("createdAt"), appt.get("updatedAt"), appt.get("rescheduledAt")]
    stamps.append((appt.get("cancel") or {}).get("cancelledAt"))
    # Appointments inserted through /_sandbox may carry anything; unreadable stamps are skipped.
    latest = max(filter(None, (_parse_offset_time(stamp) for stamp in stamps)), default=None)
    now = utcnow()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if latest is not None and now <= latest:
        now = latest + timedelta(milliseconds=1)
    return iso_millis(now)


def _overlaps(appt: Mapping[str, Any], start: datetime, end: datetime) -> bool:
    return parse_iso(appt["start"]) < end and start < parse_iso(appt["end"])


def _parse_offset_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def _booking_problems(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """Field problems in a POST /v4/booking body (per the create-booking page)."""
    problems: list[dict[str, str]] = []

    def problem(name: str, message: str) -> None:
        problems.append({"field": name, "message": message})

    if not isinstance(body.get("meetingTypeId"), str) or not body["meetingTypeId"]:
        problem("meetingTypeId", "meetingTypeId must be a string")
    if _parse_offset_time(body.get("start")) is None:
        problem("start", "start must be an ISO 8601 date with an offset, e.g. 2024-01-15T09:00:00+01:00")
    host_ids = body.get("hostIds")
    if host_ids is not None and (
        not isinstance(host_ids, list) or not all(isinstance(h, str) for h in host_ids)
    ):
        problem("hostIds", "hostIds must be an array of strings")
    duration = body.get("duration")
    if duration is not None and (not isinstance(duration, int | float) or isinstance(duration, bool)):
        problem("duration", "duration must be a number")
    attendee = body.get("attendee")
    if not isinstance(attendee, dict):
        problem("attendee", "attendee must be an object")
        return problems
    email = attendee.get("email")
    if not isinstance(email, str) or "@" not in email:
        problem("attendee.email", "Invalid email format")
    if not (attendee.get("fullname") or attendee.get("firstname")):
        problem("attendee.firstname", "Either fullname or firstname/lastname is required")
    if not isinstance(attendee.get("receiveReminders"), bool):
        problem("attendee.receiveReminders", "receiveReminders must be a boolean value")
    if not isinstance(attendee.get("notes"), dict):
        problem("attendee.notes", "notes must be an object")
    return problems


_REGISTRY_FIELDS = {
    "users": ("id", "email", "givenName", "familyName", "slug"),
    "meeting_types": ("id", "slug", "meetingInfo"),
}
_REGISTRY_DEFAULTS: dict[str, dict[str, Any]] = {"users": {}, "meeting_types": {"metadata": {}}}


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# -------------------------------------------------------------------------------------- simulator


class MeetergoSimulator:
    def __init__(self) -> None:
        self.state = _MeetergoState()
        self.control = SandboxControl(config_keys=CONFIG_KEYS, errors=MeetergoErrors(), on_reset=self._reset)
        self._generation = 0  # bumped on reset, so deliveries still in flight are not recorded afterwards
        self._worker = _DeliveryWorker(self._delivery_done)

    def _reset(self) -> None:
        self._generation += 1
        self.state = _MeetergoState()

    def register(self, app: Flask) -> None:
        self.control.install(app)
        routes: list[tuple[str, Callable[..., Response], list[str]]] = [
            ("/webhooks", self.create_webhook, ["POST"]),
            ("/webhooks", self.list_webhooks, ["GET"]),
            ("/webhooks/<webhook_id>", self.update_webhook, ["PATCH"]),
            ("/webhooks/<webhook_id>", self.delete_webhook, ["DELETE"]),
            ("/v4/booking", self.create_booking, ["POST"]),
            ("/v4/appointment/paginated", self.list_appointments, ["GET"]),
            ("/v4/appointment/<appointment_id>", self.get_appointment, ["GET"]),
            ("/v4/appointment/<appointment_id>/reschedule", self.reschedule, ["POST"]),
            ("/v4/appointment/<appointment_id>/cancel", self.cancel, ["POST"]),
            ("/v4/user", self.list_users, ["GET"]),
            ("/_sandbox/users", self.sandbox_add_users, ["POST"]),
            ("/_sandbox/meeting_types", self.sandbox_add_meeting_types, ["POST"]),
            ("/_sandbox/appointments", self.sandbox_put_appointment, ["POST"]),
            ("/_sandbox/appointments", self.sandbox_appointments, ["GET"]),
            ("/_sandbox/deliver", self.sandbox_deliver, ["POST"]),
            ("/_sandbox/deliveries", self.sandbox_deliveries, ["GET"]),
        ]
        for rule, view, methods in routes:
            app.add_url_rule(rule, f"{view.__name__}_{methods[0].lower()}", view, methods=methods)

    # ----------------------------------------------------------------------- pipeline

    def _preflight(self, *, needs_body: bool = False) -> Response | dict[str, Any]:
        """Auth, acting-user header and rate limit, then the JSON body; or the error response."""
        header = request.headers.get("Authorization")
        if not header:
            return _error(401, "Missing authorization header")
        key = _bearer(header)
        if key is None or key not in self.control.get("api_keys"):
            return _error(401, "Invalid API key")
        acting_user = request.headers.get(USER_HEADER)
        if key.startswith(PLATFORM_KEY_PREFIX):
            if not acting_user:
                return _error(400, f"Missing required header '{USER_HEADER}' for API key authentication")
            with self.control.lock:
                if self._user(acting_user) is None:
                    return _error(403, f"User {acting_user} does not belong to this company")
        elif acting_user is not None:
            return _error(403, f"The '{USER_HEADER}' header cannot be used with a personal access token")
        with self.control.lock:
            window = self.state.windows.setdefault(key, SlidingWindow(60.0))
        wait = window.try_acquire(self.control.get("rate_limit_per_minute"))
        if wait is not None:
            return _error(429, "Too Many Requests", retry_after=whole_seconds(wait))
        if not needs_body:
            return {}
        try:
            return json_object_body(request, allow_empty=True)
        except BodyError:
            return _error(400, "Unexpected token in JSON body")

    # ----------------------------------------------------------------------- webhooks

    def create_webhook(self) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        problems = _webhook_problems(body, partial=False)
        if problems:
            return _invalid(problems)
        with self.control.lock:
            if len(self.state.webhooks) >= MAX_WEBHOOKS:
                return _error(406, "Limit reached")
            webhook = {
                "id": str(uuid.uuid4()),
                "endpoint": body["endpoint"],
                "description": body.get("description"),
                "eventTypes": list(body["eventTypes"]),
                "companyId": COMPANY_ID,
                "createdAt": iso_millis(utcnow()),
            }
            self.state.webhooks.append(webhook)
            self.control.mark_applied()
            return json_response(copy.deepcopy(webhook), 201)

    def list_webhooks(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            return json_response(copy.deepcopy(self.state.webhooks), 200)

    def update_webhook(self, webhook_id: str) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            webhook = self._webhook(webhook_id)
            if webhook is None:
                return _error(404, "Webhook not found")
            problems = _webhook_problems(body, partial=True)
            if problems:
                return _invalid(problems)
            changes = {name: body[name] for name in ("endpoint", "description", "eventTypes") if name in body}
            webhook.update(copy.deepcopy(changes))
            self.control.mark_applied()
            return json_response(copy.deepcopy(webhook), 200)

    def delete_webhook(self, webhook_id: str) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            webhook = self._webhook(webhook_id)
            if webhook is None:
                return _error(404, "Webhook not found")
            self.state.webhooks.remove(webhook)
            self.control.mark_applied()
            return Response(status=204)

    # ----------------------------------------------------------------------- bookings and appointments

    def create_booking(self) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        problems = _booking_problems(body)
        if problems:
            return _invalid(problems)
        with self.control.lock:
            meeting_type = self._meeting_type(body["meetingTypeId"])
            if meeting_type is None:
                return _error(404, "Meeting type not found")
            host_ids = body.get("hostIds") or []
            if not host_ids:
                # Queues (round robin) are not simulated: hostIds are needed.
                return _error(400, "hostIds or queueId is required")
            hosts = [self._user(host_id) for host_id in host_ids]
            if any(host is None for host in hosts):
                return _error(404, "Host not found")
            minutes = meeting_type["meetingInfo"]["duration"]
            if body.get("duration") is not None and body["duration"] != minutes:
                return _error(400, "Duration must match one of the allowed durations for this meeting type")
            start = parse_iso(body["start"])
            if self._any_host_busy(host_ids, start, start + timedelta(minutes=minutes), ignore=None):
                return _error(400, SLOT_TAKEN)
            appt = make_appointment(
                start,
                hosts=[host for host in hosts if host is not None],
                meeting_type=meeting_type,
                attendee=body["attendee"],
                minutes=minutes,
                channel=body.get("channel") or "zoom",
            )
            appt["location"] = body.get("location")
            self.state.appointments[appt["id"]] = appt
            self.control.mark_applied()
            self._announce("booking_created", appt, booking_created(appt))
            return json_response({"appointmentId": appt["id"], "secret": appt["secret"]}, 201)

    def get_appointment(self, appointment_id: str) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            appt = self.state.appointments.get(appointment_id)
            if appt is None:
                return _error(404, "Appointment not found")
            return json_response(_rest_view(appt), 200)

    def reschedule(self, appointment_id: str) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        new_start = _parse_offset_time(body.get("start"))
        if new_start is None:
            return _invalid([{"field": "start", "message": "start must be an ISO 8601 date with an offset"}])
        with self.control.lock:
            appt = self.state.appointments.get(appointment_id)
            if appt is None:
                return _error(404, "Appointment not found")
            if appt.get("isCancelled"):
                return _error(400, "Cannot reschedule a cancelled appointment")
            length = parse_iso(appt["end"]) - parse_iso(appt["start"])
            busy = self._any_host_busy(appt.get("hostIds") or [], new_start, new_start + length, ignore=appt)
            if busy and not body.get("ignoreAvailability"):
                return _error(400, SLOT_TAKEN)
            old_start = appt["start"]
            stamp = _later_timestamp(appt)
            appt.update(start=iso_with_offset(new_start), end=iso_with_offset(new_start + length))
            appt.update(rescheduledAt=stamp, updatedAt=stamp)
            self.state.previous_starts[appointment_id] = old_start
            self.control.mark_applied()
            self._announce("booking_rescheduled", appt, booking_rescheduled(appt, old_start))
            return json_response(_rest_view(appt), 200)

    def cancel(self, appointment_id: str) -> Response:
        body = self._preflight(needs_body=True)
        if isinstance(body, Response):
            return body
        with self.control.lock:
            appt = self.state.appointments.get(appointment_id)
            if appt is None:
                return _error(404, "Appointment not found")
            if appt.get("isCancelled"):
                return _error(400, "Appointment is already cancelled")
            stamp = _later_timestamp(appt)
            leaving = body.get("attendeeId")
            remaining = [a for a in appt.get("attendees") or [] if a.get("id") != leaving]
            if leaving and not body.get("cancelAll") and remaining and len(remaining) < len(appt["attendees"]):
                return self._attendee_leaves(appt, leaving, remaining, stamp, body.get("reason"))
            appt["isCancelled"], appt["updatedAt"] = True, stamp
            # Cancelled through the API: by the host the key acts for.
            appt["cancel"] = {"cancelledAt": stamp, "cancelledBy": "host", "reason": body.get("reason")}
            self.control.mark_applied()
            payload = booking_cancelled(appt, self.control.get("cancel_shape"))
            self._announce("booking_cancelled", appt, payload)
            return json_response(_rest_view(appt), 200)

    def _attendee_leaves(self, appt: dict[str, Any], leaving: str, remaining: list[dict[str, Any]], stamp: str,
                         reason: Any) -> Response:
        """One attendee of a group leaves: the appointment goes on for the others, and `booking_cancelled` fires
        ("or one attendee removed from a group booking", webhooks/events) in the configured shape."""
        [leaver] = [a for a in appt["attendees"] if a.get("id") == leaving]
        appt["attendees"], appt["updatedAt"] = remaining, stamp
        cancel = {"cancelledAt": stamp, "cancelledBy": "attendee", "reason": reason}
        if self.control.get("attendee_cancel_payload") == "leaver":
            payload = {**booking_cancelled({**appt, "attendees": [leaver], "cancel": cancel},
                                           self.control.get("cancel_shape"))}
        else:
            payload = {**booking_cancelled({**appt, "cancel": cancel}, self.control.get("cancel_shape")),
                       "isCancelled": False}
        self.control.mark_applied()
        self._announce("booking_cancelled", appt, payload)
        return json_response(_rest_view(appt), 200)

    def list_appointments(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        base = self.control.get("page_base")
        page = int_arg(request, "page", base)
        # The docs page with `limit`, the n8n node with `pageSize`: either sets the page size.
        size = int_arg(request, "limit" if request.args.get("limit") else "pageSize", 20)
        if page is None or page < base:
            return _error(400, [f"page must not be less than {base}"])
        if size is None or not 1 <= size <= 100:
            return _error(400, ["limit must not be greater than 100", "limit must not be less than 1"])
        with self.control.lock:
            ordered = sorted(self.state.appointments.values(), key=lambda appt: parse_iso(appt["start"]))
            chunk = ordered[(page - base) * size : (page - base + 1) * size]
            return json_response({"appointments": [_rest_view(a) for a in chunk], "total": len(ordered)}, 200)

    def list_users(self) -> Response:
        checked = self._preflight()
        if isinstance(checked, Response):
            return checked
        limit, offset = int_arg(request, "limit", 10), int_arg(request, "offset", 0)
        if limit is None or not 1 <= limit <= 100 or offset is None or offset < 0:
            return _error(400, ["limit must be between 1 and 100", "offset must not be less than 0"])
        with self.control.lock:
            chosen = self.state.users[offset : offset + limit]
            page = [{**copy.deepcopy(user), "companyId": COMPANY_ID} for user in chosen]
            body = {"users": page, "total": len(self.state.users), "count": len(page), "offset": offset}
            return json_response(body, 200)

    # ----------------------------------------------------------------------- delivery

    def _announce(self, webhook_type: str, appt: Mapping[str, Any], payload: dict[str, Any]) -> None:
        """Queue `payload` for every webhook subscribed to `webhook_type` (caller holds the lock)."""
        for delivery in self._deliveries_for(webhook_type, appt["id"], payload):
            self.state.pending += 1
            self._worker.submit(delivery)

    def _deliveries_for(
        self, webhook_type: str, appointment_id: str, payload: dict[str, Any]
    ) -> list[_Delivery]:
        body = envelope(payload, self.control.get("envelope"))
        return [
            _Delivery(
                self._generation, webhook["endpoint"], webhook_type, appointment_id, copy.deepcopy(body)
            )
            for webhook in self.state.webhooks
            if webhook_type in webhook["eventTypes"]
        ]

    def _delivery_done(self, delivery: _Delivery, record: dict[str, Any]) -> None:
        with self.control.lock:
            if delivery.generation == self._generation:
                self.state.deliveries.append(record)
                self.state.pending -= 1

    def _payload_for(self, webhook_type: str, appt: Mapping[str, Any]) -> dict[str, Any]:
        if webhook_type == "booking_created":
            return booking_created(appt)
        if webhook_type == "booking_rescheduled":
            return booking_rescheduled(appt, self.state.previous_starts.get(appt["id"], appt["start"]))
        return booking_cancelled(appt, self.control.get("cancel_shape"))

    # ----------------------------------------------------------------------- lookups

    def _user(self, user_id: str) -> dict[str, Any] | None:
        return next((user for user in self.state.users if user["id"] == user_id), None)

    def _meeting_type(self, type_id: str) -> dict[str, Any] | None:
        return next((kind for kind in self.state.meeting_types if kind["id"] == type_id), None)

    def _webhook(self, webhook_id: str) -> dict[str, Any] | None:
        return next((webhook for webhook in self.state.webhooks if webhook["id"] == webhook_id), None)

    def _any_host_busy(
        self, host_ids: Sequence[str], start: datetime, end: datetime, ignore: Mapping[str, Any] | None
    ) -> bool:
        return any(
            appt is not ignore
            and not appt.get("isCancelled")
            and set(host_ids) & set(appt.get("hostIds") or [])
            and _overlaps(appt, start, end)
            for appt in self.state.appointments.values()
        )

    # ----------------------------------------------------------------------- /_sandbox

    def sandbox_add_users(self) -> Response:
        return self._sandbox_add("users")

    def sandbox_add_meeting_types(self) -> Response:
        return self._sandbox_add("meeting_types")

    def _sandbox_add(self, registry: str) -> Response:
        """Add (or replace, by id) one object or a list of them in the users or meeting types registry."""
        required = _REGISTRY_FIELDS[registry]
        body = request.get_json(force=True, silent=True)
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(item, dict) and all(key in item for key in required) for item in items):
            return json_response({"error": f"each item needs {', '.join(required)}"}, 400)
        with self.control.lock:
            entries: list[dict[str, Any]] = getattr(self.state, registry)
            for item in items:
                entries[:] = [entry for entry in entries if entry["id"] != item["id"]]
                entries.append({**_REGISTRY_DEFAULTS[registry], **copy.deepcopy(item)})
            return json_response({registry: copy.deepcopy(entries)}, 200)

    def sandbox_put_appointment(self) -> Response:
        """Insert or replace an appointment WITHOUT delivering anything (a webhook that got lost)."""
        body = request.get_json(force=True, silent=True)
        start = _parse_offset_time(body.get("start")) if isinstance(body, dict) else None
        if not isinstance(body, dict) or start is None:
            return json_response(
                {"error": "body must be an appointment with an ISO 'start' (with offset)"}, 400
            )
        appt = _complete_appointment(body, start)
        with self.control.lock:
            self.state.appointments[appt["id"]] = appt
        return json_response({"appointment": copy.deepcopy(appt)}, 200)

    def sandbox_appointments(self) -> Response:
        with self.control.lock:
            return json_response({"appointments": copy.deepcopy(list(self.state.appointments.values()))}, 200)

    def sandbox_deliver(self) -> Response:
        """Deliver an appointment's current event again, synchronously; answers what the receivers said."""
        body = request.get_json(force=True, silent=True) or {}
        webhook_type, times = body.get("webhookType"), body.get("times", 1)
        if webhook_type not in ("booking_created", "booking_rescheduled", "booking_cancelled"):
            return json_response({"error": "webhookType must be a booking_* event"}, 400)
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            return json_response({"error": "times must be a positive integer"}, 400)
        with self.control.lock:
            appt = self.state.appointments.get(body.get("appointment_id"))
            if appt is None:
                return json_response({"error": "unknown appointment_id"}, 404)
            deliveries = self._deliveries_for(webhook_type, appt["id"], self._payload_for(webhook_type, appt))
        records = []
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS) as client:
            for _ in range(times):
                records.extend(_post(client, delivery) for delivery in deliveries)
        with self.control.lock:
            if all(delivery.generation == self._generation for delivery in deliveries):
                self.state.deliveries.extend(records)
        return json_response(
            {"responses": [{"status": r["status"], "body": r["response"]} for r in records]}, 200
        )

    def sandbox_deliveries(self) -> Response:
        with self.control.lock:
            body = {"deliveries": copy.deepcopy(self.state.deliveries), "pending": self.state.pending}
        return json_response(body, 200)


def _complete_appointment(given: Mapping[str, Any], start: datetime) -> dict[str, Any]:
    """`given` with every missing payload field filled in as make_appointment would."""
    end = _parse_offset_time(given.get("end"))
    minutes = int((end - start).total_seconds() // 60) if end is not None else 30
    appt = make_appointment(start, minutes=minutes)
    appt.update({key: copy.deepcopy(value) for key, value in given.items() if key != "webhookType"})
    if "hosts" in given and "hostIds" not in given:
        appt["hostIds"] = [host["id"] for host in given["hosts"]]
    if "meetingType" in given and "meetingTypeId" not in given:
        appt["meetingTypeId"] = given["meetingType"]["id"]
    return appt


def _webhook_problems(body: Mapping[str, Any], *, partial: bool) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    endpoint = body.get("endpoint")
    if (not partial or "endpoint" in body) and not (
        isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))
    ):
        problems.append({"field": "endpoint", "message": "endpoint must be a URL address"})
    event_types = body.get("eventTypes")
    if (not partial or "eventTypes" in body) and not (
        isinstance(event_types, list) and event_types and all(kind in EVENT_TYPES for kind in event_types)
    ):
        problems.append(
            {"field": "eventTypes", "message": f"each value in eventTypes must be one of {EVENT_TYPES}"}
        )
    if body.get("description") is not None and not isinstance(body["description"], str):
        problems.append({"field": "description", "message": "description must be a string"})
    return problems


def create_app() -> Flask:
    app = Flask("sandbox.meetergo")
    MeetergoSimulator().register(app)
    return app
