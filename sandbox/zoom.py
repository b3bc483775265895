"""Zoom simulator: Server-to-Server OAuth and the five meeting operations of the OpenAPI subset.

Behaviour follows sandbox/SPEC.md: tokens with a TTL, request validation against the OpenAPI subset
(plus Zoom's stricter `start_time` rule), a fresh `start_url` on every GET (its expiry readable from the
zak JWT), the per-host daily create/update cap and per-second limits by rate-limit label.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Flask, Response, request

from sandbox.control import (
    ConfigKey,
    SandboxControl,
    any_object,
    boolean,
    integer,
    json_response,
    string_list,
    text,
)
from sandbox.openapi import FieldError, zoom_contract
from sandbox.util import (
    BodyError,
    SlidingWindow,
    iso_seconds,
    json_object_body,
    one_second_ahead_iso,
    random_digits,
    utcnow,
    zone_or_none,
)

DEFAULT_ACCOUNT_ID = "sandbox-account"
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"
# The classic scopes that cover every call meetbridge makes (create, update, delete, get, list meetings).
TOKEN_SCOPE = "meeting:write:admin meeting:read:admin user:read:admin"
PUBLIC_URL = "https://zoom.sandbox"
# GET /users/{userId}/meetings: "The length of agenda gets truncated to 250 characters when you list all
# meetings for a user" (the OpenAPI subset, the agenda field).
LISTED_AGENDA_LENGTH = 250
# Key of the sandbox's zak JWTs. Public on purpose: tests may verify signatures with it.
ZAK_SIGNING_KEY = b"meetbridge-sandbox-zak-signing-key"
CUSTCREATE_START_URL_TTL_SECONDS = 90 * 24 * 3600

LIGHT = "light"
MEDIUM = "medium"
HEAVY = "heavy"  # no call of the simulated subset is Heavy; the budget is kept for completeness
LABELS = (LIGHT, MEDIUM, HEAVY)

# Per-second budgets by account plan and rate-limit label (developers.zoom.us/docs/api/rate-limits/; API-FACTS
# 2.5). Account-level: every app on the account shares them. Business stands for Business+ (Business,
# Education, Enterprise), which share one row of the table.
PLAN_RATES_PER_SECOND: dict[str, dict[str, int]] = {
    "free": {LIGHT: 4, MEDIUM: 2, HEAVY: 1},
    "pro": {LIGHT: 30, MEDIUM: 20, HEAVY: 10},
    "business": {LIGHT: 80, MEDIUM: 60, HEAVY: 40},
}

PER_SECOND_MESSAGE = "You have reached the maximum per-second rate limit for this API. Try again later."
# Account-level daily limits by plan and label (the same table: Free's Light 6,000/day and Medium 2,000/day; the
# paid plans' Heavy and Resource-intensive share a daily cap, and no simulated call is either).
PLAN_DAILY_LIMITS: dict[str, dict[str, int]] = {"free": {LIGHT: 6000, MEDIUM: 2000, HEAVY: 1000}}
DAILY_MESSAGE = ("You have reached the maximum daily rate limit for this API. Refer to the response header for "
                 "details on when you can make another request.")
MALFORMED_BODY_MESSAGE = "Request Body should be a valid JSON object."
INVALID_FIELD_MESSAGE = "Invalid field."

# What a created meeting's settings hold when the request leaves them out (the request schema's defaults,
# plus the booleans Zoom reports as false).
SETTINGS_DEFAULTS: dict[str, Any] = {
    "host_video": False,
    "participant_video": False,
    "join_before_host": False,
    "jbh_time": 0,
    "mute_upon_entry": False,
    "watermark": False,
    "use_pmi": False,
    "approval_type": 2,
    "registration_type": 1,
    "audio": "both",
    "auto_recording": "none",
    "waiting_room": False,
    "alternative_hosts": "",
    "alternative_hosts_email_notification": True,
    "close_registration": False,
    "email_notification": True,
    "meeting_authentication": False,
    "encryption_type": "enhanced_encryption",
    "private_meeting": False,
}

# Only the labels a simulated call has can be set one by one; Heavy follows the plan.
_RATE_LIMIT_FIELDS = {label: ConfigKey(None, integer(minimum=1, nullable=True)) for label in (LIGHT, MEDIUM)}

CONFIG_KEYS: dict[str, ConfigKey] = {
    "account_id": ConfigKey(DEFAULT_ACCOUNT_ID, text()),
    "client_id": ConfigKey(DEFAULT_CLIENT_ID, text()),
    "client_secret": ConfigKey(DEFAULT_CLIENT_SECRET, text()),
    "token_ttl_seconds": ConfigKey(3600, integer(minimum=0)),
    # What the app was granted: returned as the token's space-separated `scope`, e.g. granular names for an app
    # made after Zoom introduced them. Not enforced on the API calls.
    "scope": ConfigKey(TOKEN_SCOPE, text()),
    "start_url_ttl_seconds": ConfigKey(7200, integer(minimum=0)),
    "custcreate_users": ConfigKey([], string_list()),
    "start_url_expiry_readable": ConfigKey(True, boolean()),
    "host_daily_limit": ConfigKey(100, integer(minimum=0)),
    # How the per-host daily cap is answered: the 429 seen in practice, or the HTTP 300 the OpenAPI spec files.
    "host_daily_limit_form": ConfigKey("429", text(("429", "300"))),
    "known_users": ConfigKey(None, string_list(nullable=True)),
    # Users Zoom will not take as alternative hosts (unlicensed ones, say): a create or update naming one is
    # refused. Which users, and the answer's code, are not documented (sandbox/SPEC.md).
    "refused_alternative_hosts": ConfigKey([], string_list()),
    # Per-label overrides of the plan's budgets (null: the plan's, or unlimited without a plan).
    "rate_limits_per_second": ConfigKey({LIGHT: None, MEDIUM: None}, any_object(), fields=_RATE_LIMIT_FIELDS),
    # The account's plan: its per-second budgets are enforced (null: none, unless set per label above).
    "rate_limit_plan": ConfigKey(None, lambda value: None if value is None else text(PLAN_RATES_PER_SECOND)(value)),
    # Per-label overrides of the plan's account-wide daily limits (null: the plan's, or none).
    "daily_limits": ConfigKey({LIGHT: None, MEDIUM: None}, any_object(), fields=_RATE_LIMIT_FIELDS),
}

_UTC_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_LOCAL_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


# ------------------------------------------------------------------------------------------- errors


def _zoom_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"code": code, "message": message}, status, headers)


def _per_second_limited(category: str | None, limit: int | None = None) -> Response:
    # API-FACTS 2.5: Zoom's per-second 429 names the label and the kind of limit; Retry-After is an ISO time.
    headers = {"Retry-After": one_second_ahead_iso(), "X-RateLimit-Type": "QPS"}
    if category is not None:
        headers["X-RateLimit-Category"] = category.capitalize()
    if limit is not None:
        headers["X-RateLimit-Limit"] = str(limit)
        headers["X-RateLimit-Remaining"] = "0"
    return _zoom_error(429, 429, PER_SECOND_MESSAGE, headers)


class _LabelWindow(SlidingWindow):
    """One label's sliding 1-second window, with what it let through and refused (GET /_sandbox/rate_limits)."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.accepted = 0
        self.refused = 0
        self.peak = 0  # the most calls it ever held in one second

    def try_acquire(self, limit: int | None) -> float | None:
        wait = super().try_acquire(limit)
        with self._lock:
            if wait is None:
                self.accepted += 1
                self.peak = max(self.peak, len(self._calls))
            else:
                self.refused += 1
        return wait


class ZoomErrors:
    def server_error(self) -> Response:
        return _zoom_error(500, 500, "Internal server error.")

    def rate_limited(self) -> Response:
        return _per_second_limited(None)

    def gateway_timeout(self) -> Response:
        return _zoom_error(504, 504, "Gateway timeout.")

    def not_found(self) -> Response:
        return _zoom_error(404, 404, "Not Found")

    def method_not_allowed(self) -> Response:
        return _zoom_error(405, 405, "Method Not Allowed")


# -------------------------------------------------------------------------------------------- state


@dataclass
class _Meeting:
    id: int
    uuid: str
    host_email: str
    host_id: str
    topic: str
    type: int
    start_time: datetime
    duration: int
    timezone: str
    agenda: str
    created_at: datetime
    password: str
    h323_password: str
    encrypted_password: str
    settings: dict[str, Any]
    tracking_fields: list[dict[str, Any]]
    deleted: bool = False
    deleted_query: dict[str, str] | None = None
    gets: int = 0
    patches: int = 0
    started: bool = False  # the host started it (POST /_sandbox/meetings/<id>/start): deletes answer 3002

    @property
    def join_url(self) -> str:
        return f"{PUBLIC_URL}/j/{self.id}?pwd={self.encrypted_password}"


@dataclass
class _ZoomState:
    tokens: dict[str, datetime] = field(default_factory=dict)
    tokens_issued: int = 0
    meetings: dict[int, _Meeting] = field(default_factory=dict)
    start_urls: list[dict[str, Any]] = field(default_factory=list)
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    daily_counts: dict[tuple[str, date], int] = field(default_factory=dict)
    label_daily_counts: dict[tuple[str, date], int] = field(default_factory=dict)
    windows: dict[str, _LabelWindow] = field(default_factory=lambda: {label: _LabelWindow() for label in LABELS})


# ---------------------------------------------------------------------------------------- helpers


def user_id_for(email: str) -> str:
    """A stable Zoom-style user id (22 url-safe characters) for a host email."""
    digest = hashlib.sha256(email.lower().encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_zak(payload: dict[str, Any], key: bytes = ZAK_SIGNING_KEY) -> str:
    """An HS256 JWT built with the standard library."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def parse_start_time(value: str, zone_name: str | None) -> datetime | None:
    """Zoom's accepted `start_time` forms as a UTC instant, or None when the value is not acceptable.

    `yyyy-MM-ddTHH:mm:ssZ` is UTC; `yyyy-MM-ddTHH:mm:ss` is local time in `zone_name` (required then).
    Numeric offsets and fractional seconds are rejected.
    """
    if _UTC_START.match(value):
        return _strict_datetime(value[:-1], "UTC")
    if _LOCAL_START.match(value) and zone_name is not None:
        return _strict_datetime(value, zone_name)
    return None


def _strict_datetime(local: str, zone_name: str) -> datetime | None:
    zone = zone_or_none(zone_name)
    if zone is None:
        return None
    try:
        return datetime.strptime(local, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=zone).astimezone(UTC)
    except ValueError:  # e.g. month 13
        return None


def _encode_page_token(offset: int) -> str:
    return _b64url(f"offset:{offset}".encode())


def _decode_page_token(token: str) -> int | None:
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    prefix, _, number = decoded.partition(":")
    return int(number) if prefix == "offset" and number.isdigit() else None


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (client_id, secret) if separator else None


def _bearer(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


# -------------------------------------------------------------------------------------- simulator


class ZoomSimulator:
    def __init__(self) -> None:
        self.state = _ZoomState()
        self.control = SandboxControl(config_keys=CONFIG_KEYS, errors=ZoomErrors(), on_reset=self._reset)
        self.contract = zoom_contract()

    def _reset(self) -> None:
        self.state = _ZoomState()

    # ----------------------------------------------------------------------- wiring

    def register(self, app: Flask) -> None:
        self.control.install(app)
        routes: list[tuple[str, str, Callable[..., Response], list[str]]] = [
            ("/oauth/token", "token", self.issue_token, ["POST"]),
            ("/v2/users/<path:user_id>/meetings", "create_meeting", self.create_meeting, ["POST"]),
            ("/v2/users/<path:user_id>/meetings", "list_meetings", self.list_meetings, ["GET"]),
            ("/v2/meetings/<meeting_id>", "get_meeting", self.get_meeting, ["GET"]),
            ("/v2/meetings/<meeting_id>", "update_meeting", self.update_meeting, ["PATCH"]),
            ("/v2/meetings/<meeting_id>", "delete_meeting", self.delete_meeting, ["DELETE"]),
            ("/_sandbox/meetings", "sandbox_meetings", self.sandbox_meetings, ["GET"]),
            ("/_sandbox/tokens", "sandbox_tokens", self.sandbox_tokens, ["GET"]),
            ("/_sandbox/start_urls", "sandbox_start_urls", self.sandbox_start_urls, ["GET"]),
            ("/_sandbox/validation_errors", "sandbox_validation", self.sandbox_validation_errors, ["GET"]),
            ("/_sandbox/quota", "sandbox_quota", self.sandbox_quota, ["POST"]),
            ("/_sandbox/rate_limits", "sandbox_rate_limits", self.sandbox_rate_limits, ["GET"]),
            ("/_sandbox/meetings/<int:meeting_id>/start", "sandbox_start", self.sandbox_start_meeting, ["POST"]),
        ]
        for rule, endpoint, view, methods in routes:
            app.add_url_rule(rule, endpoint, view, methods=methods)

    # ----------------------------------------------------------------------- OAuth

    def issue_token(self) -> Response:
        config = self.control.config()
        expected = (config["client_id"], config["client_secret"])
        if _basic_credentials(request.headers.get("Authorization")) != expected:
            body = {"reason": "Invalid client_id or client_secret", "error": "invalid_client"}
            return json_response(body, 401)
        params = {**request.form.to_dict(), **request.args.to_dict()}
        if params.get("grant_type") != "account_credentials":
            return json_response({"reason": "Unsupported grant type", "error": "invalid_request"}, 400)
        if params.get("account_id") != config["account_id"]:
            return json_response({"reason": "Invalid account_id", "error": "invalid_request"}, 400)
        token = secrets.token_urlsafe(48)
        now = utcnow()
        with self.control.lock:
            self.state.tokens = {key: expiry for key, expiry in self.state.tokens.items() if expiry > now}
            self.state.tokens[token] = now + timedelta(seconds=config["token_ttl_seconds"])
            self.state.tokens_issued += 1
            self.control.mark_applied()
        return json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": config["token_ttl_seconds"],
                "scope": config["scope"],
                "api_url": request.host_url.rstrip("/"),
            },
            200,
        )

    # ----------------------------------------------------------------------- API operations

    def _refused_alternative_host(self, body: dict[str, Any]) -> Response | None:
        settings = body.get("settings") if isinstance(body.get("settings"), dict) else {}
        named = [email.strip().lower() for email in str(settings.get("alternative_hosts") or "").split(";")]
        unwelcome = {email.lower() for email in self.control.get("refused_alternative_hosts")}
        refused = [email for email in named if email in unwelcome]
        if not refused:
            return None
        return _zoom_error(400, 300, f"Invalid alternative host: {refused[0]}.")

    def create_meeting(self, user_id: str) -> Response:
        checked = self._preflight(MEDIUM, "POST", "/users/{userId}/meetings", {"userId": user_id})
        if isinstance(checked, Response):
            return checked
        body = checked
        timezone = body.get("timezone")
        start_time = utcnow().replace(microsecond=0)
        if "start_time" in body:
            parsed = parse_start_time(body["start_time"], timezone)
            if parsed is None:
                return self._start_time_invalid(body["start_time"])
            start_time = parsed
        with self.control.lock:
            host_email = self._resolve_user(user_id)
            if host_email is None:
                return _user_not_found(user_id)
            refused = self._refused_alternative_host(body) or self._spend_daily_quota(host_email)
            if refused is not None:
                return refused
            meeting = self._new_meeting(host_email, body, start_time)
            self.state.meetings[meeting.id] = meeting
            self.control.mark_applied()
            return json_response(self._created_view(meeting), 201)

    def list_meetings(self, user_id: str) -> Response:
        checked = self._preflight(MEDIUM, "GET", "/users/{userId}/meetings", {"userId": user_id})
        if isinstance(checked, Response):
            return checked
        page_size = int(request.args.get("page_size") or 30)
        token = request.args.get("next_page_token") or ""
        offset = _decode_page_token(token) if token else 0
        if offset is None:
            return self._validation_failed(
                [FieldError("next_page_token", "unknown or expired next_page_token")]
            )
        with self.control.lock:
            host_email = self._resolve_user(user_id)
            if host_email is None:
                return _user_not_found(user_id)
            listed = self._listed_meetings(host_email, request.args.get("type") or "scheduled")
            page = listed[offset : offset + page_size]
            next_offset = offset + len(page)
            return json_response(
                {
                    "next_page_token": _encode_page_token(next_offset) if next_offset < len(listed) else "",
                    "page_size": page_size,
                    "total_records": len(listed),
                    "meetings": [self._list_item_view(meeting) for meeting in page],
                },
                200,
            )

    def get_meeting(self, meeting_id: str) -> Response:
        checked = self._preflight(LIGHT, "GET", "/meetings/{meetingId}", {"meetingId": meeting_id})
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            meeting = self._live_meeting(meeting_id)
            if meeting is None:
                return _meeting_not_found(meeting_id)
            meeting.gets += 1
            return json_response(self._detail_view(meeting), 200)

    def update_meeting(self, meeting_id: str) -> Response:
        checked = self._preflight(LIGHT, "PATCH", "/meetings/{meetingId}", {"meetingId": meeting_id})
        if isinstance(checked, Response):
            return checked
        body = checked
        with self.control.lock:
            meeting = self._live_meeting(meeting_id)
            if meeting is None:
                return _meeting_not_found(meeting_id)
            if meeting.started:
                # API-FACTS (PATCH /meetings/{meetingId}): 400 3000, e.g. "You cannot update or delete meetings
                # that have started using this method".
                return _zoom_error(400, 3000, "You cannot update or delete meetings that have started using this "
                                              "method.")
            new_start = None
            if "start_time" in body:
                new_start = parse_start_time(body["start_time"], body.get("timezone") or meeting.timezone)
                if new_start is None:
                    return self._start_time_invalid(body["start_time"])
            refused = self._refused_alternative_host(body) or self._spend_daily_quota(meeting.host_email)
            if refused is not None:
                return refused
            _apply_update(meeting, body, new_start)
            self.control.mark_applied()
            return Response(status=204)

    def delete_meeting(self, meeting_id: str) -> Response:
        checked = self._preflight(LIGHT, "DELETE", "/meetings/{meetingId}", {"meetingId": meeting_id})
        if isinstance(checked, Response):
            return checked
        with self.control.lock:
            meeting = self._live_meeting(meeting_id)
            if meeting is None:
                return _meeting_not_found(meeting_id)
            if meeting.started:
                # API-FACTS (DELETE /meetings/{meetingId}): 400 3002 while the meeting is in progress.
                return _zoom_error(400, 3002, "Sorry, you cannot delete this meeting since it is in progress.")
            meeting.deleted = True
            meeting.deleted_query = request.args.to_dict()
            self.control.mark_applied()
            return Response(status=204)

    # ----------------------------------------------------------------------- the shared API pipeline

    def _preflight(
        self, category: str, method: str, template: str, path_params: dict[str, str]
    ) -> Response | dict[str, Any]:
        """Auth, per-second limit and contract validation; the parsed body, or the error response."""
        if not self._token_is_live(_bearer(request.headers.get("Authorization"))):
            return _zoom_error(401, 124, "Invalid access token.")
        limit = self._per_second_limit(category)
        if self.state.windows[category].try_acquire(limit) is not None:
            return _per_second_limited(category, limit)
        refused = self._spend_daily_limit(category)
        if refused is not None:
            return refused
        operation = self.contract.operation(method, template)
        errors = operation.check_parameters({"path": path_params, "query": request.args.to_dict()})
        body: dict[str, Any] = {}
        if operation.body_validator is not None:
            try:
                body = json_object_body(request)
            except BodyError:
                self._record_validation([FieldError("<body>", MALFORMED_BODY_MESSAGE)])
                return _zoom_error(300, 300, MALFORMED_BODY_MESSAGE)
            errors += operation.check_body(body)
            errors += _timezone_errors(body)
        if errors:
            return self._validation_failed(errors)
        return body

    def _spend_daily_limit(self, category: str) -> Response | None:
        """Count the call against its label's account-wide daily limit, or Zoom's daily 429 (API-FACTS 2.5: the
        message, `X-RateLimit-Type: Daily-limit`, and `Retry-After` as an ISO time: the next 00:00 UTC)."""
        limit = self.control.get("daily_limits").get(category)
        plan = self.control.get("rate_limit_plan")
        if limit is None and plan is not None:
            limit = PLAN_DAILY_LIMITS.get(plan, {}).get(category)
        if limit is None:
            return None
        key = (category, utcnow().date())
        used = self.state.label_daily_counts.get(key, 0)
        if used >= limit:
            midnight = datetime.combine(key[1] + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            return _zoom_error(429, 429, DAILY_MESSAGE, {
                "X-RateLimit-Type": "Daily-limit", "X-RateLimit-Category": category.capitalize(),
                "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                "Retry-After": midnight.strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.state.label_daily_counts[key] = used + 1
        return None

    def _per_second_limit(self, category: str) -> int | None:
        """The label's budget: its own setting, else the plan's, else none."""
        limit = self.control.get("rate_limits_per_second").get(category)
        plan = self.control.get("rate_limit_plan")
        if limit is None and plan is not None:
            limit = PLAN_RATES_PER_SECOND[plan][category]
        return limit

    def sandbox_rate_limits(self) -> Response:
        """Per label: the budget in force, and the calls let through and refused since the last reset."""
        labels = {}
        for label, window in self.state.windows.items():
            labels[label] = {"limit_per_second": self._per_second_limit(label), "accepted": window.accepted,
                             "refused": window.refused, "peak_per_second": window.peak}
        return json_response({"plan": self.control.get("rate_limit_plan"), "labels": labels}, 200)

    def _token_is_live(self, token: str | None) -> bool:
        if token is None:
            return False
        with self.control.lock:
            expiry = self.state.tokens.get(token)
        return expiry is not None and expiry > utcnow()

    def _validation_failed(self, errors: list[FieldError]) -> Response:
        self._record_validation(errors)
        body = {
            "code": 300,
            "message": "Validation Failed.",
            # Zoom says little per field; the detail is kept in /_sandbox/validation_errors.
            "errors": [{"field": error.field, "message": INVALID_FIELD_MESSAGE} for error in errors],
        }
        return json_response(body, 300)

    def _start_time_invalid(self, value: Any) -> Response:
        message = (
            f"start_time {value!r} must be yyyy-MM-ddTHH:mm:ssZ, or yyyy-MM-ddTHH:mm:ss with a valid timezone"
        )
        return self._validation_failed([FieldError("start_time", message)])

    def _record_validation(self, errors: list[FieldError]) -> None:
        seq = self.control.current_seq()
        with self.control.lock:
            self.state.validation_errors.extend(
                {
                    "seq": seq,
                    "method": request.method,
                    "path": request.path,
                    "field": e.field,
                    "message": e.message,
                }
                for e in errors
            )

    def _spend_daily_quota(self, host_email: str) -> Response | None:
        """Count one create/update for the host today, or the daily-limit 429 when the cap is reached."""
        limit = self.control.get("host_daily_limit")
        key = (host_email, utcnow().date())
        used = self.state.daily_counts.get(key, 0)
        if used >= limit:
            message = (
                f"You have exceeded the daily rate limit ({limit}) of Meeting Create/Update API requests "
                "permitted for this particular user. You may resume these requests at GMT 00:00:00."
            )
            if self.control.get("host_daily_limit_form") == "300":
                # The spec's own form (POST /users/{userId}/meetings and PATCH /meetings/{meetingId}, HTTP 300).
                return _zoom_error(300, 300, f"A maximum of {limit} meetings can be created/updated for a single "
                                             "user in one day.")
            # Deliberately no Retry-After: it has been seen absent on this 429.
            headers = {"X-RateLimit-Type": "Daily-limit", "X-RateLimit-Category": "Medium"}
            return _zoom_error(429, 429, message, headers)
        self.state.daily_counts[key] = used + 1
        return None

    # ----------------------------------------------------------------------- users and meetings

    def _resolve_user(self, user_id: str) -> str | None:
        """The host email a path `userId` (email or user id) names, or None if not on the account."""
        known = self.control.get("known_users")
        candidates = [email.lower() for email in known] if known is not None else self._emails_seen()
        if "@" in user_id:
            email = user_id.lower()
            return email if known is None or email in candidates else None
        # "me" and unknown ids: a Server-to-Server app has no "me" user.
        return next((email for email in candidates if user_id_for(email) == user_id), None)

    def _emails_seen(self) -> list[str]:
        return sorted({meeting.host_email for meeting in self.state.meetings.values()})

    def _live_meeting(self, meeting_id: str) -> _Meeting | None:
        meeting = self.state.meetings.get(int(meeting_id))
        return meeting if meeting is not None and not meeting.deleted else None

    def _new_meeting(self, host_email: str, body: dict[str, Any], start_time: datetime) -> _Meeting:
        settings = {**SETTINGS_DEFAULTS, **body.get("settings", {})}
        _enforce_waiting_room(settings)
        return _Meeting(
            id=self._unused_meeting_id(),
            uuid=base64.b64encode(secrets.token_bytes(16)).decode(),
            host_email=host_email,
            host_id=user_id_for(host_email),
            topic=str(body.get("topic", "Zoom Meeting"))[:200],
            type=body.get("type", 2),
            start_time=start_time,
            duration=body.get("duration", 60),
            timezone=body.get("timezone") or "UTC",
            agenda=body.get("agenda", ""),
            created_at=utcnow().replace(microsecond=0),
            password=body.get("password") or "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(6)),
            h323_password=random_digits(6),
            encrypted_password=secrets.token_urlsafe(24),
            settings=settings,
            tracking_fields=[{**item, "visible": True} for item in body.get("tracking_fields", [])],
        )

    def _unused_meeting_id(self) -> int:
        while True:
            candidate = 10**10 + secrets.randbelow(9 * 10**10)  # 11 digits: ids exceed 32 bits
            if candidate not in self.state.meetings:
                return candidate

    def _listed_meetings(self, host_email: str, kind: str) -> list[_Meeting]:
        now = utcnow()
        selected = [m for m in self.state.meetings.values() if m.host_email == host_email and not m.deleted]
        if kind in ("upcoming", "upcoming_meetings"):
            selected = [m for m in selected if m.start_time + timedelta(minutes=m.duration) >= now]
        elif kind == "previous_meetings":
            selected = [m for m in selected if m.start_time + timedelta(minutes=m.duration) < now]
        elif kind == "live":
            selected = []  # nothing is ever started in the sandbox
        return sorted(selected, key=lambda m: (m.start_time, m.id))

    def _issue_start_url(self, meeting: _Meeting) -> str:
        config = self.control.config()
        custcreate = {email.lower() for email in config["custcreate_users"]}
        ttl = (
            CUSTCREATE_START_URL_TTL_SECONDS
            if meeting.host_email in custcreate
            else config["start_url_ttl_seconds"]
        )
        issued = utcnow().replace(microsecond=0)
        expires = issued + timedelta(seconds=ttl)
        if config["start_url_expiry_readable"]:
            claims = {
                "sub": meeting.host_email,
                "uid": meeting.host_id,
                "mnum": str(meeting.id),
                "iat": int(issued.timestamp()),
                "exp": int(expires.timestamp()),
                # Unique per issue: two GETs within one second must still get different start_urls.
                "jti": secrets.token_urlsafe(12),
            }
            zak = make_zak(claims)
        else:
            zak = secrets.token_urlsafe(48)
        start_url = f"{PUBLIC_URL}/s/{meeting.id}?zak={zak}"
        self.state.start_urls.append(
            {
                "meeting_id": meeting.id,
                "issued_at": iso_seconds(issued),
                "expires_at": iso_seconds(expires),
                "start_url": start_url,
            }
        )
        return start_url

    # ----------------------------------------------------------------------- response bodies

    def _created_view(self, meeting: _Meeting) -> dict[str, Any]:
        return {
            "id": meeting.id,
            "host_email": meeting.host_email,
            "host_id": meeting.host_id,
            "topic": meeting.topic,
            "type": meeting.type,
            "status": "waiting",
            "start_time": iso_seconds(meeting.start_time),
            "duration": meeting.duration,
            "timezone": meeting.timezone,
            "agenda": meeting.agenda,
            "created_at": iso_seconds(meeting.created_at),
            "join_url": meeting.join_url,
            "start_url": self._issue_start_url(meeting),
            "password": meeting.password,
            "h323_password": meeting.h323_password,
            "settings": dict(meeting.settings),
            "pre_schedule": False,
            "tracking_fields": list(meeting.tracking_fields),
        }

    def _detail_view(self, meeting: _Meeting) -> dict[str, Any]:
        return {
            "uuid": meeting.uuid,
            "id": meeting.id,
            "host_id": meeting.host_id,
            "host_email": meeting.host_email,
            "status": "waiting",
            "start_time": iso_seconds(meeting.start_time),
            "duration": meeting.duration,
            "timezone": meeting.timezone,
            "topic": meeting.topic,
            "agenda": meeting.agenda,
            "join_url": meeting.join_url,
            "start_url": self._issue_start_url(meeting),
            "password": meeting.password,
            "h323_password": meeting.h323_password,
            "encrypted_password": meeting.encrypted_password,
            "settings": dict(meeting.settings),
            "created_at": iso_seconds(meeting.created_at),
            "type": meeting.type,
            "pre_schedule": False,
            "tracking_fields": list(meeting.tracking_fields),
        }

    @staticmethod
    def _list_item_view(meeting: _Meeting) -> dict[str, Any]:
        return {
            # "The length of agenda gets truncated to 250 characters when you list all meetings for a user."
            "agenda": meeting.agenda[:LISTED_AGENDA_LENGTH],
            "topic": meeting.topic,
            "id": meeting.id,
            "uuid": meeting.uuid,
            "start_time": iso_seconds(meeting.start_time),
            "duration": meeting.duration,
            "timezone": meeting.timezone,
            "join_url": meeting.join_url,
            "host_id": meeting.host_id,
            "created_at": iso_seconds(meeting.created_at),
            "type": meeting.type,
        }

    # ----------------------------------------------------------------------- /_sandbox

    def sandbox_meetings(self) -> Response:
        with self.control.lock:
            meetings = [_sandbox_view(meeting) for meeting in self.state.meetings.values()]
        return json_response({"meetings": meetings}, 200)

    def sandbox_tokens(self) -> Response:
        with self.control.lock:
            return json_response({"issued": self.state.tokens_issued}, 200)

    def sandbox_start_urls(self) -> Response:
        with self.control.lock:
            return json_response({"start_urls": [dict(item) for item in self.state.start_urls]}, 200)

    def sandbox_validation_errors(self) -> Response:
        with self.control.lock:
            return json_response({"errors": [dict(item) for item in self.state.validation_errors]}, 200)

    def sandbox_start_meeting(self, meeting_id: int) -> Response:
        """The host joins: the meeting is in progress from now on."""
        with self.control.lock:
            meeting = self.state.meetings.get(meeting_id)
            if meeting is None or meeting.deleted:
                return json_response({"error": f"no live meeting {meeting_id}"}, 404)
            meeting.started = True
        return json_response({"id": meeting_id, "started": True}, 200)

    def sandbox_quota(self) -> Response:
        try:
            body = json_object_body(request)
        except BodyError:
            return json_response({"error": "body must be a JSON object"}, 400)
        user, used = body.get("user"), body.get("used")
        if not isinstance(user, str) or "@" not in user:
            return json_response({"error": "user must be an email"}, 400)
        if not isinstance(used, int) or isinstance(used, bool) or used < 0:
            return json_response({"error": "used must be an integer >= 0"}, 400)
        with self.control.lock:
            self.state.daily_counts[(user.lower(), utcnow().date())] = used
        return json_response({"user": user.lower(), "used": used}, 200)


def _timezone_errors(body: dict[str, Any]) -> list[FieldError]:
    zone = body.get("timezone")
    if zone is None or zone_or_none(zone) is not None:
        return []
    return [FieldError("timezone", f"unknown time zone {zone!r}")]


def _apply_update(meeting: _Meeting, body: dict[str, Any], new_start: datetime | None) -> None:
    # A start_time in the past is ignored, as Zoom does.
    if new_start is not None and new_start > utcnow():
        meeting.start_time = new_start
    if "duration" in body:
        meeting.duration = body["duration"]
    if "topic" in body:
        meeting.topic = str(body["topic"])[:200]
    if "agenda" in body:
        meeting.agenda = body["agenda"]
    if "timezone" in body:
        meeting.timezone = body["timezone"]
    if "settings" in body:
        meeting.settings = {**meeting.settings, **body["settings"]}
        _enforce_waiting_room(meeting.settings)
    meeting.patches += 1


def _enforce_waiting_room(settings: dict[str, Any]) -> None:
    # Zoom: enabling the waiting room disables join-before-host.
    if settings.get("waiting_room"):
        settings["join_before_host"] = False


def _user_not_found(user_id: str) -> Response:
    return _zoom_error(404, 1001, f"User {user_id} not exist or not belong to this account.")


def _meeting_not_found(meeting_id: str) -> Response:
    return _zoom_error(404, 3001, f"Meeting {meeting_id} is not found or has expired.")


def _sandbox_view(meeting: _Meeting) -> dict[str, Any]:
    return {
        "id": meeting.id,
        "deleted": meeting.deleted,
        "deleted_query": dict(meeting.deleted_query) if meeting.deleted_query is not None else None,
        "host_email": meeting.host_email,
        "host_id": meeting.host_id,
        "start_time": iso_seconds(meeting.start_time),
        "duration": meeting.duration,
        "timezone": meeting.timezone,
        "topic": meeting.topic,
        "agenda": meeting.agenda,
        "settings": dict(meeting.settings),
        "type": meeting.type,
        "created_at": iso_seconds(meeting.created_at),
        "gets": meeting.gets,
        "patches": meeting.patches,
    }


def create_app() -> Flask:
    app = Flask("sandbox.zoom")
    ZoomSimulator().register(app)
    return app
