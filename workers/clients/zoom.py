"""Zoom Meetings API: Server-to-Server OAuth, meetings, and Zoom's rate limits.

Every call spends from the account-wide per-second budget of its rate label; creates and updates also
spend from the host's daily budget before they are sent, so requests known to 429 are never made.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import redis

from schemas.zoom import MeetingRequestSchema, MeetingResponseSchema, MeetingSpec, ZoomMeeting, carries_marker
from workers.clients.base import ApiClient
from workers.clients.errors import (
    APIConnectionError,
    APIError,
    AuthError,
    DailyLimitReached,
    NotConfigured,
    NotFound,
    RateLimited,
)
from workers.limits import HostDailyQuota, RateLimiter, next_utc_midnight
from workers.state import KEYS

log = logging.getLogger(__name__)

TOKEN_RENEW_MARGIN_SECONDS = 60  # renew this long before the token expires
INVALID_TOKEN = 124
MEETING_NOT_FOUND = 3001
LIGHT, MEDIUM = "light", "medium"
OPERATION_LABELS = {
    "create_meeting": MEDIUM,
    "list_meetings": MEDIUM,
    "get_meeting": LIGHT,
    "update_meeting": LIGHT,
    "delete_meeting": LIGHT,
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


class ZoomAuth:
    """One Server-to-Server token shared by all workers through Redis, renewed by one worker at a time."""

    def __init__(self, client: redis.Redis, *, oauth_url: str, account_id: str | None, client_id: str | None,
                 client_secret: str | None, timeout: float, transport: httpx.BaseTransport | None = None) -> None:
        self.redis = client
        self.oauth_url = oauth_url
        self.account_id = account_id
        self.credentials = (client_id, client_secret)
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)), transport=transport)
        self._cached: tuple[str, float] | None = None  # (token, expires_at) in this process

    def token(self) -> str:
        if self._cached and self._cached[1] - TOKEN_RENEW_MARGIN_SECONDS > time.time():
            return self._cached[0]
        deadline = time.monotonic() + 15
        while True:
            shared = self._read_shared()
            if shared:
                self._cached = shared
                return shared[0]
            if self.redis.set(KEYS.zoom_token_lock, "1", nx=True, px=15_000):
                try:
                    return self._renew()
                finally:
                    self.redis.delete(KEYS.zoom_token_lock)
            if time.monotonic() > deadline:
                raise APIConnectionError("timed out waiting for another worker to renew the Zoom token",
                                         service="zoom")
            time.sleep(0.05)  # another worker is renewing it

    def invalidate(self, token: str) -> None:
        """Drop `token` if it is still the shared one (Zoom rejected it)."""
        self._cached = None
        shared = self._read_shared()
        if shared and shared[0] == token:
            self.redis.delete(KEYS.zoom_token)

    def _read_shared(self) -> tuple[str, float] | None:
        raw = self.redis.get(KEYS.zoom_token)
        if not raw:
            return None
        data = json.loads(raw)
        if data["expires_at"] - TOKEN_RENEW_MARGIN_SECONDS <= time.time():
            return None
        return data["access_token"], data["expires_at"]

    def fresh_grant(self) -> dict[str, Any]:
        """A new token's whole answer (`access_token`, `expires_in`, `scope`), kept out of the shared cache.

        Several Server-to-Server tokens may be live at once, so asking for one more revokes none in use; and the
        cached shared token may predate a change of the app's scopes, so only a new one tells what it holds now.
        """
        return self._request_token()

    def _renew(self) -> str:
        data = self._request_token()
        expires_at = time.time() + float(data.get("expires_in", 3600))
        token = data["access_token"]
        ttl_ms = int((expires_at - time.time()) * 1000)
        self.redis.set(KEYS.zoom_token, json.dumps({"access_token": token, "expires_at": expires_at}), px=ttl_ms)
        self._cached = (token, expires_at)
        log.info("renewed the Zoom access token")
        return token

    def _request_token(self) -> dict[str, Any]:
        client_id, client_secret = self.credentials
        if not (self.account_id and client_id and client_secret):
            raise NotConfigured("ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID and ZOOM_CLIENT_SECRET are not set", service="zoom")
        try:
            response = self.http.post(
                self.oauth_url,
                data={"grant_type": "account_credentials", "account_id": self.account_id},
                auth=(client_id, client_secret),
            )
        except httpx.TransportError as exc:
            raise APIConnectionError(f"token request failed: {type(exc).__name__}", service="zoom") from exc
        if response.status_code in (400, 401, 403):
            raise AuthError("Zoom refused the Server-to-Server OAuth credentials (check ZOOM_ACCOUNT_ID, "
                            "ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET)", service="zoom", status=response.status_code)
        if not response.is_success:
            cls = RateLimited if response.status_code == 429 else APIConnectionError
            raise cls(f"token request answered {response.status_code}", service="zoom",
                      status=response.status_code)
        data: dict[str, Any] = response.json()
        return data


class ZoomClient(ApiClient):
    service = "zoom"

    def __init__(self, base_url: str, *, auth: ZoomAuth, limiters: dict[str, RateLimiter],
                 quota: HostDailyQuota, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.auth = auth
        self.limiters = limiters
        self.quota = quota
        self._token: str | None = None

    # --- meetings ----------------------------------------------------------------------------------------
    def create_meeting(self, host: str, spec: MeetingSpec) -> ZoomMeeting:
        self.quota.spend(host)
        # Never repeated within the call: a retry must first look for what this attempt may have created.
        response = self._call("POST", f"users/{_user_path(host)}/meetings", "create_meeting", host=host, retries=0,
                              json=MeetingRequestSchema().dump(spec))
        return MeetingResponseSchema().load(response.json())

    def get_meeting(self, meeting_id: int) -> ZoomMeeting:
        response = self._call("GET", f"meetings/{meeting_id}", "get_meeting")
        return MeetingResponseSchema().load(response.json())

    def update_meeting(self, meeting_id: int, spec: MeetingSpec, *, host: str) -> None:
        self.quota.spend(host)
        # One send per quota unit spent; the sync retries later if it fails.
        self._call("PATCH", f"meetings/{meeting_id}", "update_meeting", host=host, retries=0,
                   json=MeetingRequestSchema().dump(spec))

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
        found = [MeetingResponseSchema().load(item) for item in self._list_meetings(host)
                 if carries_marker(item.get("agenda"), appointment_id)]
        found.sort(key=lambda meeting: meeting.start_time != start_time)
        return found[0] if found else None

    def _list_meetings(self, host: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"type": "scheduled", "page_size": 300}
        while True:
            page = self._call("GET", f"users/{_user_path(host)}/meetings", "list_meetings", params=params).json()
            yield from page.get("meetings") or []
            token = page.get("next_page_token")
            if not token:
                return
            params["next_page_token"] = token

    # --- plumbing ----------------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        self._token = self.auth.token()
        return {"Authorization": f"Bearer {self._token}"}

    def before_request(self, operation: str) -> None:
        limiter = self.limiters.get(OPERATION_LABELS.get(operation, LIGHT))
        if limiter:
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
        except RateLimited as error:
            if host and _is_host_daily_limit(error):
                raise self.quota.exhaust(host, error.status) from error
            if _is_daily_limit(error):
                resume = (datetime.now(UTC) + timedelta(seconds=error.retry_after) if error.retry_after
                          else next_utc_midnight())
                raise DailyLimitReached(str(error), service="zoom", status=error.status, resume_at=resume,
                                        retry_after=error.retry_after) from error
            raise

    def error_from(self, response: httpx.Response, operation: str) -> APIError:
        error = super().error_from(response, operation)
        if response.status_code == 300 and HOST_DAILY_CAP_300_TEXT in error.message:
            # The spec files the per-host daily cap under HTTP 300.
            return RateLimited(error.message, service="zoom", status=300, code=error.code, body=error.body)
        return error

    def describe_error(self, body: Any) -> tuple[str, int | str | None]:
        message, code = super().describe_error(body)
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in body["errors"]
                                if isinstance(e, dict))
            if details:
                message = f"{message} ({details})"
        return message, code


def _user_path(email: str) -> str:
    # An email may hold "/", "?" or "#" (all legal before the @): encoded, none of them can change the path.
    return quote(email, safe="@")


# Zoom's OpenAPI spec files the per-host cap under HTTP 300 / code 300: "A maximum of {rateLimitNumber} meetings
# can be created/updated for a single user in one day." Code 300 is also every validation error, so the
# message tells the two apart (error_from turns only that message into a RateLimited).
HOST_DAILY_CAP_300_TEXT = "in one day"


def _is_host_daily_limit(error: APIError) -> bool:
    if error.status == 300:
        return True
    # The 429 form seen in practice: "...the daily rate limit (100) ... permitted for this particular user."
    text = error.message.lower()
    return "daily" in text and ("particular user" in text or "single user" in text)


def _is_daily_limit(error: APIError) -> bool:
    return "daily" in error.message.lower()
