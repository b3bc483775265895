"""NeetoCal's and meetergo's answers mapped onto the one error tree, at the HTTP boundary (respx)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import respx

from schemas.neetocal import BookingRequest
from workers.clients.base import before_remote_call
from workers.clients.errors import AuthError, NotConfigured, NotFound, RateLimited, SlotUnavailable, ValidationFailed
from workers.clients.meetergo import MeetergoClient
from workers.clients.neetocal import NeetoCalClient

NEETOCAL = "https://acme.neetocal.test/api/external/v2"
MEETERGO = "https://api.meetergo.test"
BOOKING = BookingRequest(meeting_slug="intro", name="Eve", email="eve@example.com",
                         start=datetime(2031, 1, 6, 10, tzinfo=UTC), time_zone="UTC")


def mocked() -> httpx.BaseTransport:
    """httpx's own transport, which respx intercepts (the service's default one, workers/clients/transport.py,
    it does not)."""
    return httpx.HTTPTransport()


def neetocal(version: str = "v2") -> NeetoCalClient:
    return NeetoCalClient(NEETOCAL.replace("v2", version), api_key="key", version=version, timeout=5,
                          transport=mocked())


@respx.mock
def test_a_taken_slot_is_a_permanent_refusal_and_v2_books_over_the_links_hours() -> None:
    route = respx.post(f"{NEETOCAL}/bookings").mock(return_value=httpx.Response(
        422, json={"error": "The selected slot is no longer available"}))
    with pytest.raises(SlotUnavailable) as raised:
        neetocal().create_booking(BOOKING)
    assert not raised.value.transient, "meetbridge books with override_availability: a refusal is NeetoCal's rule"
    assert route.calls.last.request.read() and b'"override_availability":true' in route.calls.last.request.read()


@respx.mock
def test_v1_sends_no_override_availability() -> None:
    route = respx.post(f"{NEETOCAL.replace('v2', 'v1')}/bookings").mock(return_value=httpx.Response(
        200, json={"sid": "b1", "status": "confirmed"}))
    assert neetocal("v1").create_booking(BOOKING).sid == "b1"
    assert b"override_availability" not in route.calls.last.request.read()


@respx.mock
@pytest.mark.parametrize("status, body, expected", [
    (401, {"error": "Could not authenticate, invalid API Key"}, AuthError),
    (404, {"error": "Booking not found"}, NotFound),
    (422, {"errors": ["Email is invalid"]}, ValidationFailed),
    (429, {"error": "Too many requests"}, RateLimited),
])
def test_neetocal_statuses(status: int, body: dict, expected: type) -> None:
    respx.get(f"{NEETOCAL}/bookings/b1").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(expected) as raised:
        neetocal().get_booking("b1")
    assert type(raised.value) is expected and raised.value.service == "neetocal"


def test_an_unconfigured_api_is_the_services_own_outcome() -> None:
    with pytest.raises(NotConfigured):
        MeetergoClient(MEETERGO, api_key=None, timeout=5, transport=mocked()).get_appointment("a1")


@respx.mock
def test_meetergo_errors_carry_its_field_messages() -> None:
    respx.get(f"{MEETERGO}/v4/appointment/a1").mock(return_value=httpx.Response(400, json={
        "statusCode": 400, "message": "Validation failed", "error": "Bad Request",
        "errors": [{"field": "id", "message": "Invalid id"}]}))
    with pytest.raises(ValidationFailed, match="id: Invalid id"):
        MeetergoClient(MEETERGO, api_key="rgo-token", timeout=5, transport=mocked()).get_appointment("a1")


@respx.mock
def test_an_expired_meetergo_key_is_an_auth_error_not_a_retry() -> None:
    respx.get(f"{MEETERGO}/v4/appointment/a1").mock(return_value=httpx.Response(
        401, json={"statusCode": 401, "message": "API key has expired"}))
    with pytest.raises(AuthError) as raised:
        MeetergoClient(MEETERGO, api_key="rgo-token", timeout=5, transport=mocked()).get_appointment("a1")
    assert not raised.value.transient


@respx.mock
def test_each_attempt_of_a_retried_call_first_asks_the_sync_to_keep_its_lock() -> None:
    """A retried call's rate waits and timeouts add up past what one attempt takes: the sync's hook (which extends
    the appointment's lock once its margin is spent) runs before every attempt, not only the first."""
    route = respx.get(f"{NEETOCAL}/bookings/b1").mock(side_effect=[
        httpx.Response(503, headers={"Retry-After": "0"}), httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"sid": "b1", "status": "confirmed"})])
    asked: list[str] = []
    hooked = before_remote_call.set(asked.append)
    try:
        assert neetocal().get_booking("b1").sid == "b1"
    finally:
        before_remote_call.reset(hooked)
    assert route.call_count == 3 and asked == ["GET", "GET", "GET"]


@respx.mock
def test_a_rate_limited_answer_without_retry_after_waits_a_second_before_the_next_attempt(monkeypatch) -> None:
    """A per-second budget's window is a second: retried sooner, the call only spends another 429."""
    route = respx.get(f"{NEETOCAL}/bookings/b1").mock(side_effect=[
        httpx.Response(429, json={"error": "Too many requests"}), httpx.Response(429, json={"error": "Too many"}),
        httpx.Response(200, json={"sid": "b1", "status": "confirmed"})])
    waits: list[float] = []
    monkeypatch.setattr("workers.clients.base.time.sleep", waits.append)
    assert neetocal().get_booking("b1").sid == "b1"
    assert route.call_count == 3 and len(waits) == 2 and all(wait >= 1.0 for wait in waits), waits
