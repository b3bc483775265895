"""Zoom Meetings API: Server-to-Server OAuth, meetings, and Zoom's rate limits.

Every call spends from the account-wide per-second budget of its rate label; creates and updates also
spend from the host's daily budget before they are sent, so requests known to 429 are never made.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from schemas.zoom import MeetingRequestSchema, MeetingResponseSchema, MeetingSpec, ZoomMeeting, carries_marker
from workers.clients.base import IN_CALL_RETRIES, ApiClient
from workers.clients.errors import (
    APIConnectionError,
    APIError,
    AuthError,
    DailyCapReached,
    NotConfigured,
    NotFound,
    ValidationFailed,
)
from workers.clients.paging import token_pages
from workers.limits import HostDailyQuota, RateLimiter, next_utc_midnight
from workers.state import SharedToken

log = logging.getLogger(__name__)

TOKEN_RENEW_MARGIN_SECONDS = 60  # renew this long before the token expires
INVALID_TOKEN = 124
MEETING_NOT_FOUND = 3001

# One instance of each schema, reused: building one deep-copies its fields, which cost more than the load itself
# (bench/profile_worker showed Schema.__init__ on every API answer).
MEETING_REQUEST = MeetingRequestSchema()
MEETING_RESPONSE = MeetingResponseSchema()
LIGHT, MEDIUM = "light", "medium"
OPERATION_LABELS = {
    "create_meeting": MEDIUM,
    "list_meetings": MEDIUM,
    "get_meeting": LIGHT,
    "update_meeting": LIGHT,
    "delete_meeting": LIGHT,
}


# Zoom's own error codes (API-FACTS 2.6) by what they mean; the HTTP status decides the rest.
ZOOM_ERROR_CODES: dict[int | str, type[APIError]] = {
    INVALID_TOKEN: AuthError,  # 124: invalid or expired access token (401)
    4700: AuthError,  # the token lacks a scope
    1001: NotFound,  # "User {userId} not exist or not belong to this account." (404)
    MEETING_NOT_FOUND: NotFound,  # 3001: "Meeting {meetingId} is not found or has expired." (404)
    1010: ValidationFailed,  # user not on this account (400)
    3000: ValidationFailed,  # no access, e.g. "You cannot update or delete meetings that have started" (400)
    3002: ValidationFailed,  # the meeting is in progress (400)
    3003: ValidationFailed,  # "You are not the meeting host." (400)
    3007: ValidationFailed,  # the meeting has ended (400)
    3161: ValidationFailed,  # "Meeting hosting and scheduling capabilities are not allowed for your user account."
}


@dataclass(frozen=True)
class ScopeNeed:
    """One thing meetbridge asks of Zoom and the scopes that allow it (sandbox/SPEC.md cites the names).

    Apps made before Zoom's granular scopes hold the classic ones (several calls each); newer apps hold one
    granular scope per endpoint. Either set satisfies the need.
    """

    capability: str
    granular: str
    classic: tuple[str, ...]

    def met_by(self, granted: frozenset[str]) -> bool:
        return self.granular in granted or set(self.classic) <= granted


SCOPE_NEEDS = (
    ScopeNeed("create meetings (POST /users/{userId}/meetings)", "meeting:write:meeting:admin",
              ("meeting:write:admin",)),
    ScopeNeed("update meetings (PATCH /meetings/{meetingId})", "meeting:update:meeting:admin",
              ("meeting:write:admin",)),
    ScopeNeed("delete meetings (DELETE /meetings/{meetingId})", "meeting:delete:meeting:admin",
              ("meeting:write:admin",)),
    ScopeNeed("read meetings (GET /meetings/{meetingId})", "meeting:read:meeting:admin", ("meeting:read:admin",)),
    # A host's meetings are listed under the user: classic apps need to read users for it as well.
    ScopeNeed("list a host's meetings (GET /users/{userId}/meetings)", "meeting:read:list_meetings:admin",
              ("meeting:read:admin", "user:read:admin")),
)


def missing_scopes(scope: str | None) -> list[str]:
    """The scope names to add to the app so that a token with `scope` (Zoom's space-separated string) can do
    everything meetbridge does; empty when nothing is missing.

    An app holding granular scopes is told the granular names (Zoom does not mix the two on one app), an app
    holding only classic ones the classic names; one holding none gets the granular names, as new apps do.
    """
    granted = frozenset((scope or "").split())
    classic_app = bool(granted) and not any(name.count(":") >= 3 for name in granted)
    missing: list[str] = []
    for need in SCOPE_NEEDS:
        if need.met_by(granted):
            continue
        names = [name for name in need.classic if name not in granted] if classic_app else [need.granular]
        missing.extend(name for name in names if name not in missing)
    return missing


class ZoomOAuth(ApiClient):
    """Zoom's Server-to-Server OAuth token endpoint, through the shared client: counted like every other call
    and answered with the same errors."""

    service = "zoom"

    def __init__(self, oauth_url: str, *, account_id: str | None, client_id: str | None,
                 client_secret: str | None, **kwargs: Any) -> None:
        base, _, self.path = oauth_url.rstrip("/").rpartition("/")
        super().__init__(base, **kwargs)
        self.account_id = account_id
        self.credentials = (client_id, client_secret)

    def grant(self) -> dict[str, Any]:
        """A new token's whole answer: `access_token`, `expires_in`, `scope`."""
        try:
            response = self.request("POST", self.path, operation="oauth_token", retries=IN_CALL_RETRIES,
                                    data={"grant_type": "account_credentials", "account_id": self.account_id})
        except (AuthError, ValidationFailed) as error:
            # Zoom answers wrong credentials 400 or 401; either way only the operator can fix them.
            raise AuthError("Zoom refused the Server-to-Server OAuth credentials (check ZOOM_ACCOUNT_ID, "
                            "ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET)", service="zoom", status=error.status,
                            code=error.code) from error
        data: dict[str, Any] = response.json()
        return data

    def auth_headers(self) -> dict[str, str]:
        client_id, client_secret = self.credentials
        if not (self.account_id and client_id and client_secret):
            raise NotConfigured("ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET are not set", service="zoom")
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}


class ZoomAuth:
    """One Server-to-Server token shared by all workers through Redis, renewed by one worker at a time."""

    def __init__(self, tokens: SharedToken, oauth: ZoomOAuth) -> None:
        self.tokens = tokens
        self.oauth = oauth
        self._cached: tuple[str, float] | None = None  # (token, expires_at) in this process

    def token(self) -> str:
        if self._cached and self._cached[1] - TOKEN_RENEW_MARGIN_SECONDS > time.time():
            return self._cached[0]
        deadline = time.monotonic() + 15
        while True:
            shared = self.tokens.read(TOKEN_RENEW_MARGIN_SECONDS)
            if shared:
                self._cached = shared
                return shared[0]
            with self.tokens.renewing() as mine:
                if mine:
                    return self._renew()
            if time.monotonic() > deadline:
                raise APIConnectionError("timed out waiting for another worker to renew the Zoom token",
                                         service="zoom")
            time.sleep(0.05)  # another worker is renewing it

    def invalidate(self, token: str) -> None:
        """Drop `token` if it is still the shared one (Zoom rejected it)."""
        self._cached = None
        self.tokens.drop(token)

    def fresh_grant(self) -> dict[str, Any]:
        """A new token's whole answer (`access_token`, `expires_in`, `scope`), kept out of the shared cache.

        Several Server-to-Server tokens may be live at once, so asking for one more revokes none in use; and the
        cached shared token may predate a change of the app's scopes, so only a new one tells what it holds now.
        """
        return self.oauth.grant()

    def close(self) -> None:
        self.oauth.close()

    def _renew(self) -> str:
        data = self.oauth.grant()
        expires_at = time.time() + float(data.get("expires_in", 3600))
        token = data["access_token"]
        self.tokens.write(token, expires_at)
        self._cached = (token, expires_at)
        log.info("renewed the Zoom access token")
        return token


class ZoomClient(ApiClient):
    service = "zoom"
    codes = ZOOM_ERROR_CODES

    def __init__(self, base_url: str, *, auth: ZoomAuth, limiters: dict[str, RateLimiter],
                 quota: HostDailyQuota, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.auth = auth
        self.limiters = limiters
        self.quota = quota
        self._token: str | None = None

    # --- meetings ----------------------------------------------------------------------------------------
    def create_meeting(self, host: str, spec: MeetingSpec) -> ZoomMeeting:
        # Never repeated within the call: a retry must first look for what this attempt may have created. (A
        # refusal made nothing: sending again without the alternative hosts cannot make a second meeting.)
        def send(sending: MeetingSpec) -> ZoomMeeting:
            with _spending_quota_of(host):
                response = self._call("POST", f"users/{_user_path(host)}/meetings", "create_meeting", host=host,
                                      retries=0, json=MEETING_REQUEST.dump(sending))
            return MEETING_RESPONSE.load(response.json())

        meeting, refusal = _without_refused_alternative_hosts(spec, send)
        return replace(meeting, alternative_hosts_refusal=refusal)

    def get_meeting(self, meeting_id: int) -> ZoomMeeting:
        response = self._call("GET", f"meetings/{meeting_id}", "get_meeting")
        return MEETING_RESPONSE.load(response.json())

    def update_meeting(self, meeting_id: int, spec: MeetingSpec, *, host: str) -> str | None:
        """Returns Zoom's refusal of the alternative hosts, if it updated the meeting without them."""
        # One send per quota unit spent; the sync retries later if it fails.
        def send(sending: MeetingSpec) -> None:
            with _spending_quota_of(host):
                self._call("PATCH", f"meetings/{meeting_id}", "update_meeting", host=host, retries=0,
                           json=MEETING_REQUEST.dump(sending))

        return _without_refused_alternative_hosts(spec, send)[1]

    def delete_meeting(self, meeting_id: int, *, notify: bool) -> bool:
        """Delete the meeting; False if Zoom no longer had it (which is just as good)."""
        flag = "true" if notify else "false"
        try:
            self._call("DELETE", f"meetings/{meeting_id}", "delete_meeting",
                       params={"schedule_for_reminder": flag, "cancel_meeting_reminder": flag})
        except NotFound:
            return False
        return True

    def find_meeting(self, host: str, appointment_id: str, start_time: str | None = None) -> ZoomMeeting | None:
        """The host's scheduled meeting that an earlier attempt made for this appointment, if any: its agenda
        ends in the appointment's marker; of several, the one at `start_time` (Zoom's UTC form) first."""
        found = [MEETING_RESPONSE.load(item) for item in self._list_meetings(host)
                 if carries_marker(item.get("agenda"), appointment_id)]
        found.sort(key=lambda meeting: meeting.start_time != start_time)
        return found[0] if found else None

    def _list_meetings(self, host: str) -> Iterator[dict[str, Any]]:
        def fetch(token: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params: dict[str, Any] = {"type": "scheduled", "page_size": 300}
            if token:
                params["next_page_token"] = token
            page = self._call("GET", f"users/{_user_path(host)}/meetings", "list_meetings", params=params).json()
            return page.get("meetings") or [], page.get("next_page_token")

        for meetings in token_pages(fetch):
            yield from meetings

    # --- plumbing ----------------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        self._token = self.auth.token()
        return {"Authorization": f"Bearer {self._token}"}

    def before_request(self, operation: str) -> None:
        limiter = self.limiters.get(OPERATION_LABELS.get(operation, LIGHT))
        host = _quota_host.get()
        if host is not None:
            _quota_host.set(None)  # one unit per call: the attempt after a renewed token spends none
            if limiter:
                limiter.acquire_spending(self.quota, host)
            else:
                self.quota.spend(host)
        elif limiter:
            limiter.acquire()

    def _call(self, method: str, path: str, operation: str, *, host: str | None = None,
              **kwargs: Any) -> httpx.Response:
        try:
            try:
                return self.request(method, path, operation=operation, **kwargs)
            except AuthError as error:
                if error.code != INVALID_TOKEN or self._token is None:
                    raise
                # The shared token was revoked or expired early: renew it and try once more.
                self.auth.invalidate(self._token)
                return self.request(method, path, operation=operation, **kwargs)
        except DailyCapReached as error:
            if host and error.per_host:
                raise self.quota.exhaust(host, error.status) from error
            limiter = self.limiters.get(OPERATION_LABELS.get(operation, LIGHT))
            if not error.per_host and error.status is not None and limiter:
                # The account's daily limit of this label: every process waits for midnight rather than ask.
                limiter.close_until(error.resume_at)
            raise

    def error_from(self, response: httpx.Response, operation: str) -> APIError:
        error = super().error_from(response, operation)
        cap = daily_cap(response.status_code, response.headers.get("X-RateLimit-Type"), error.message, error.code)
        if cap is None:
            return error
        resume = (datetime.now(UTC) + timedelta(seconds=error.retry_after) if error.retry_after
                  else next_utc_midnight())
        return DailyCapReached(error.message, service="zoom", status=error.status, code=error.code, body=error.body,
                               request_id=error.request_id, retry_after=error.retry_after, resume_at=resume,
                               per_host=cap == "host")

    def describe_error(self, body: Any) -> tuple[str, int | str | None]:
        message, code = super().describe_error(body)
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in body["errors"]
                                if isinstance(e, dict))
            if details:
                message = f"{message} ({details})"
        return message, code


# The host whose daily quota the call under way spends, with its first attempt's rate slot (before_request): one
# Redis round trip for both. A context variable, as the client is shared by a worker's threads.
_quota_host: ContextVar[str | None] = ContextVar("zoom_quota_host", default=None)


@contextmanager
def _spending_quota_of(host: str) -> Iterator[None]:
    token = _quota_host.set(host)
    try:
        yield
    finally:
        _quota_host.reset(token)


# Refusals about the meeting itself (started, over, another host's), not about whom it names.
MEETING_STATE_CODES = frozenset({3000, 3002, 3003, 3007})
Sent = TypeVar("Sent")


def _without_refused_alternative_hosts(spec: MeetingSpec,
                                      send: Callable[[MeetingSpec], Sent]) -> tuple[Sent, str | None]:
    """`send(spec)`; if Zoom refuses it while it names alternative hosts, once more without them. Which alternative
    hosts Zoom accepts (licensed users of the account, say) is not documented: "retry once without and flag"
    (API-FACTS 2.2). The appointment keeps its meeting; the other hosts cannot start it. Returns what `send`
    returned and, if they were left out, Zoom's words (the flag: the sync shows them on the appointment; all of
    them are left out, as the refusal need not say which one Zoom would not take)."""
    try:
        return send(spec), None
    except ValidationFailed as error:
        if not spec.alternative_hosts or error.code in MEETING_STATE_CODES:
            raise
        log.warning("zoom refused the alternative hosts %s (%s): the meeting goes without them",
                    ";".join(spec.alternative_hosts), error)
        refusal = f"Zoom refused the alternative hosts ({', '.join(spec.alternative_hosts)}): {error.message}"
        return send(replace(spec, alternative_hosts=())), refusal


def _user_path(email: str) -> str:
    # An email may hold "/", "?" or "#" (all legal before the @): encoded, none of them can change the path.
    return quote(email, safe="@")


def daily_cap(status: int, rate_limit_type: str | None, message: str, code: int | str | None = None) -> str | None:
    """Whether a Zoom answer says a daily budget is spent: "host" (100 creates/updates per host and UTC day),
    "api" (a daily limit of the API), or None.

    The `X-RateLimit-Type` header says it where Zoom sends it (`Daily-limit` or `QPS`, API-FACTS 2.5). It is
    seen absent on the per-host 429, and the spec files the per-host cap under 300, the code of every validation
    error too, as an HTTP status or (as Zoom sends its validation errors, over HTTP 400) the body's code: "match
    message/code, not status only" (API-FACTS 2.5). There, the message text is all Zoom gives, so it is read:
    - 300 "A maximum of {rateLimitNumber} meetings can be created/updated for a single user in one day."
      (zoom-meetings-openapi-subset.json, responses `300` of create and update);
    - 429 "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests permitted for this
      particular user." (API-FACTS 2.5, devforum sample of the per-user 429);
    - 429 "You have reached the maximum daily rate limit for this API." (API-FACTS 2.5).
    """
    text = message.lower()
    per_user = "particular user" in text or "single user" in text
    if status == 300 or (400 <= status < 500 and str(code) == "300"):
        return "host" if "in one day" in text else None
    if status != 429:
        return None
    kind = (rate_limit_type or "").lower()
    if kind == "qps":
        return None
    if kind == "daily-limit" or "daily" in text:
        return "host" if per_user else "api"
    return None
