"""The Zoom client at the HTTP boundary (respx): Zoom's answers mapped onto the one error tree, the token."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import redis
import respx

from schemas.zoom import MeetingSpec
from workers.clients.errors import (
    APIError,
    AuthError,
    DailyCapReached,
    NotFound,
    QuotaParked,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from workers.clients.zoom import MEDIUM, ZoomAuth, ZoomClient, ZoomOAuth, daily_cap
from workers.limits import HostDailyQuota, RateLimiter
from workers.state import SharedToken

API = "https://zoom.test/v2"
OAUTH = "https://zoom.test/oauth/token"
HOST = "john@example.com"


def mocked() -> httpx.BaseTransport:
    """httpx's own transport, which respx intercepts (the service's default one, workers/clients/transport.py,
    it does not)."""
    return httpx.HTTPTransport()


@pytest.fixture
def calls() -> list[tuple[str, str, int | None]]:
    return []


@pytest.fixture
def zoom(redis_client: redis.Redis, calls: list[tuple[str, str, int | None]]) -> ZoomClient:
    def observe(service: str, operation: str, status: int | None, _: float) -> None:
        calls.append((service, operation, status))

    oauth = ZoomOAuth(OAUTH, account_id="acct", client_id="id", client_secret="secret", timeout=5, observe=observe,
                      transport=mocked())
    return ZoomClient(API, auth=ZoomAuth(SharedToken(redis_client), oauth), limiters={},
                      quota=HostDailyQuota(redis_client, 100), timeout=5, observe=observe, transport=mocked())


def grant(token: str = "t1") -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "bearer", "expires_in": 3600,
                                     "scope": "meeting:read:admin"})


def zoom_error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message}, headers=headers)


@respx.mock
@pytest.mark.parametrize("answer, expected", [
    (zoom_error(404, 3001, "Meeting 1 is not found or has expired."), NotFound),
    (zoom_error(400, 3000, "You cannot update or delete meetings that have started using this method."),
     ValidationFailed),
    (zoom_error(300, 300, "Validation Failed."), ValidationFailed),
    (zoom_error(401, 4700, "Invalid access token, does not contain scopes."), AuthError),
    (httpx.Response(502, text="<html>bad gateway</html>"), ServerError),
])
def test_zoom_answers_map_onto_the_tree_by_code_then_status(zoom: ZoomClient, answer: httpx.Response,
                                                             expected: type[APIError]) -> None:
    respx.post(OAUTH).mock(return_value=grant())
    respx.get(f"{API}/meetings/1").mock(return_value=answer)
    with pytest.raises(expected) as raised:
        zoom.get_meeting(1)
    assert type(raised.value) is expected
    assert raised.value.status == answer.status_code


@respx.mock
def test_a_refused_token_is_renewed_once_and_the_call_repeated(zoom: ZoomClient, redis_client: redis.Redis,
                                                               calls: list) -> None:
    respx.post(OAUTH).mock(side_effect=[grant("old"), grant("new")])
    meeting = {"id": 1, "topic": "t", "start_time": "2031-01-01T09:00:00Z", "duration": 30}
    route = respx.get(f"{API}/meetings/1").mock(side_effect=[
        zoom_error(401, 124, "Invalid access token."), httpx.Response(200, json=meeting)])
    assert zoom.get_meeting(1).id == 1
    assert [call.request.headers["Authorization"] for call in route.calls] == ["Bearer old", "Bearer new"]
    assert ("zoom", "oauth_token", 200) in calls, "the token call is counted like any other"
    assert SharedToken(redis_client).read(0)[0] == "new"


@respx.mock
def test_a_create_spends_one_unit_of_the_hosts_quota_with_its_first_slot_however_many_attempts(
        redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, "zoom:medium", per_second=1000)
    quota = HostDailyQuota(redis_client, 100)
    slots: list[str] = []
    spend = limiter.acquire_spending
    limiter.acquire = lambda: slots.append("slot")  # type: ignore[method-assign]
    limiter.acquire_spending = lambda *args: (slots.append("slot and unit"), spend(*args))  # type: ignore[method-assign]
    zoom = ZoomClient(API, auth=ZoomAuth(SharedToken(redis_client), ZoomOAuth(
        OAUTH, account_id="acct", client_id="id", client_secret="secret", timeout=5, transport=mocked())),
        limiters={MEDIUM: limiter}, quota=quota, timeout=5, transport=mocked())
    respx.post(OAUTH).mock(side_effect=[grant("old"), grant("new")])
    respx.post(f"{API}/users/{HOST}/meetings").mock(side_effect=[
        zoom_error(401, 124, "Invalid access token."),
        httpx.Response(201, json={"id": 1, "topic": "t", "start_time": "2031-01-01T09:00:00Z", "duration": 30})])
    spec = MeetingSpec(topic="t", start_time=datetime(2031, 1, 1, 9, tzinfo=UTC), duration=30, timezone="UTC",
                       agenda="a")
    assert zoom.create_meeting(HOST, spec).id == 1
    # Each attempt takes a slot; only the first spends the host's unit, in the same round trip.
    assert slots == ["slot and unit", "slot"]
    assert quota.used(HOST) == 1


@respx.mock
def test_wrong_credentials_say_which_settings_to_check(zoom: ZoomClient) -> None:
    respx.post(OAUTH).mock(return_value=httpx.Response(401, json={"reason": "Invalid client_id or client_secret",
                                                                  "error": "invalid_client"}))
    with pytest.raises(AuthError, match="ZOOM_CLIENT_ID"):
        zoom.get_meeting(1)


@respx.mock
@pytest.mark.parametrize("answer", [
    zoom_error(429, 429, "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests "
                         "permitted for this particular user. You may resume these requests at GMT 00:00:00."),
    zoom_error(300, 300, "A maximum of 100 meetings can be created/updated for a single user in one day."),
    # The same code and message over HTTP 400, as Zoom sends its other code-300 errors.
    zoom_error(400, 300, "A maximum of 100 meetings can be created/updated for a single user in one day."),
])
def test_the_hosts_daily_cap_in_each_documented_form_parks_the_host(zoom: ZoomClient, redis_client: redis.Redis,
                                                                    answer: httpx.Response) -> None:
    respx.post(OAUTH).mock(return_value=grant())
    respx.patch(f"{API}/meetings/1").mock(return_value=answer)
    from schemas.zoom import MeetingSpec

    spec = MeetingSpec(topic="t", start_time=datetime(2031, 1, 1, 9, tzinfo=UTC), duration=30, timezone="UTC",
                       agenda="a")
    with pytest.raises(QuotaParked) as raised:
        zoom.update_meeting(1, spec, host=HOST)
    assert raised.value.resume_at.hour == 0
    assert HostDailyQuota(redis_client, 100).used(HOST) == 100, "no further request is sent today"


def test_daily_caps_are_told_from_per_second_limits() -> None:
    assert daily_cap(429, "QPS", "You have reached the maximum per-second rate limit for this API.") is None
    assert daily_cap(429, None, "You have reached the maximum per-second rate limit for this API.") is None
    assert daily_cap(429, None, "You have reached the maximum daily rate limit for this API.") == "api"
    assert daily_cap(300, None, "Validation Failed.") is None
    assert daily_cap(400, "Daily-limit", "anything") is None
    assert daily_cap(400, None, "Validation Failed.", 300) is None


@respx.mock
def test_an_accounts_daily_api_limit_waits_for_its_reset(zoom: ZoomClient) -> None:
    respx.post(OAUTH).mock(return_value=grant())
    respx.get(f"{API}/meetings/1").mock(return_value=zoom_error(
        429, 429, "You have reached the maximum daily rate limit for this API.",
        **{"X-RateLimit-Type": "Daily-limit", "Retry-After": "2031-01-02T00:00:00Z"}))
    with pytest.raises(DailyCapReached) as raised:
        zoom.get_meeting(1)
    assert not raised.value.per_host and raised.value.resume_at.year == 2031
    assert not isinstance(raised.value, RateLimited), "a daily cap is no per-second limit"


@respx.mock
@pytest.mark.parametrize("call", ["create", "update"])
def test_alternative_hosts_zoom_refuses_are_dropped_not_the_meeting(zoom: ZoomClient, call: str) -> None:
    """Which alternative hosts Zoom accepts is not documented (a user without a licence, of another account): a
    refusal while some are named is sent once more without them, and the appointment keeps its meeting."""
    from schemas.zoom import MeetingSpec

    respx.post(OAUTH).mock(return_value=grant())
    refused = zoom_error(400, 1115, "Invalid alternative host: maria@example.com.")
    made = httpx.Response(201, json={"id": 1, "topic": "t", "start_time": "2031-01-01T09:00:00Z", "duration": 30})
    route = (respx.post(f"{API}/users/{HOST}/meetings").mock(side_effect=[refused, made]) if call == "create"
             else respx.patch(f"{API}/meetings/1").mock(side_effect=[refused, httpx.Response(204)]))
    spec = MeetingSpec(topic="t", start_time=datetime(2031, 1, 1, 9, tzinfo=UTC), duration=30, timezone="UTC",
                       agenda="a", alternative_hosts=("maria@example.com",))
    if call == "create":
        assert zoom.create_meeting(HOST, spec).id == 1
    else:
        zoom.update_meeting(1, spec, host=HOST)
    first, second = (json.loads(c.request.content)["settings"] for c in route.calls)
    assert first["alternative_hosts"] == "maria@example.com" and second["alternative_hosts"] == ""


@respx.mock
def test_a_refusal_about_the_meeting_itself_is_not_sent_again(zoom: ZoomClient) -> None:
    from schemas.zoom import MeetingSpec

    respx.post(OAUTH).mock(return_value=grant())
    route = respx.patch(f"{API}/meetings/1").mock(return_value=zoom_error(
        400, 3000, "You cannot update or delete meetings that have started using this method."))
    spec = MeetingSpec(topic="t", start_time=datetime(2031, 1, 1, 9, tzinfo=UTC), duration=30, timezone="UTC",
                       agenda="a", alternative_hosts=("maria@example.com",))
    with pytest.raises(ValidationFailed):
        zoom.update_meeting(1, spec, host=HOST)
    assert route.call_count == 1
