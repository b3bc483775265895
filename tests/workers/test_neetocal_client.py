"""The NeetoCal client against the simulator's v1 and v2: one client, the routes of its version, and the v2
conflicts (reference vs CLI) worked out at run time: the documented form first, the other once, remembered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandbox.neetocal import DEFAULT_API_KEY, create_app
from sandbox.server import RunningServer, serve
from schemas.neetocal import BookingRequest, LinkSpec
from workers.clients.neetocal import NeetoCalClient

CLI_SIDE = {"v2_booking_update_method": "PUT", "v2_spot_text_field": "custom_text", "v2_slot_time_format": "24h"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = serve(create_app())
    yield running
    running.stop()


@pytest.fixture
def control(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def client_for(server: RunningServer, version: str, **kwargs) -> NeetoCalClient:
    return NeetoCalClient(f"{server.url}/api/external/{version}", api_key=DEFAULT_API_KEY, version=version,
                          timeout=5, **kwargs)


def request_for(start: datetime, email: str = "eve@example.com") -> BookingRequest:
    return BookingRequest("intro-30m", "Eve", email, start, "Europe/Berlin", {"zoom_join_url": "https://j/1"})


def lifecycle(client: NeetoCalClient) -> None:
    link = client.create_link(LinkSpec(slug="intro-30m", name="Intro", host_email="john@example.com", duration=30))
    client.set_mirror_availability(link, "john@example.com")
    client.set_custom_spot(link, "Zoom: see your booking")
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    for n in range(2):  # the second round must go straight to what worked
        booking = client.create_booking(request_for(start + timedelta(hours=4 * n), f"eve{n}@example.com"))
        assert booking.answer("zoom_join_url") == "https://j/1"
        moved = client.reschedule_booking(booking.sid, request_for(start + timedelta(hours=4 * n + 1),
                                                                  f"eve{n}@example.com"))
        assert moved.starts_at == (start + timedelta(hours=4 * n + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        client.cancel_booking(booking.sid, "no longer needed")
        assert client.get_booking(booking.sid).status == "cancelled"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_documented_side_needs_no_second_try(server: RunningServer, control: httpx.Client, version: str) -> None:
    lifecycle(client_for(server, version))
    calls = control.get("/_sandbox/requests").json()["requests"]
    assert all(c["path"].startswith(f"/api/external/{version}/") and c["status"] < 300 for c in calls), calls


def test_v2_on_the_cli_side_tries_each_other_form_once(server: RunningServer, control: httpx.Client) -> None:
    control.patch("/_sandbox/config", json=CLI_SIDE).raise_for_status()
    client = client_for(server, "v2")
    lifecycle(client)
    refused = [(c["method"], c["status"]) for c in control.get("/_sandbox/requests").json()["requests"]
               if c["status"] >= 400]
    assert sorted(refused) == [("PATCH", 405), ("POST", 422), ("POST", 422)]  # spot, create; then remembered
    assert client._chosen == {"spot_text_field": 1, "slot_time_format": 1, "booking_update_method": 1}


def test_templates_are_read_on_either_version(server: RunningServer, control: httpx.Client) -> None:
    template = control.post("/_sandbox/templates", json={"name": "T", "questions": [{"field_code": "x"}]}
                            ).json()["template"]
    for version in ("v1", "v2"):
        client = client_for(server, version, template_id=template["id"])
        found = client.get_template(template["id"])
        assert found is not None and found.is_template and found.name == "T"
        assert client.get_template("nope") is None
    link = client_for(server, "v2", template_id=template["id"]).create_link(
        LinkSpec(slug="from-t", name="From T", host_email="john@example.com", duration=30))
    [made] = [m for m in control.get("/_sandbox/meetings").json()["meetings"] if m["sid"] == link.sid]
    assert made["template_id"] == template["id"] and "x" in made["questions"]


# --- finding the booking of a create whose answer was lost ------------------------------------------------------
def test_a_join_url_shared_by_two_appointments_finds_the_one_at_the_noted_time(server: RunningServer,
                                                                              control: httpx.Client) -> None:
    """meetergo's own meeting link (a host's personal room) may be the same on a client's other appointments: a
    look-up for the booking a lost create made must not take the other one, which the sync would then move or
    cancel."""
    client = client_for(server, "v2")
    link = client.create_link(LinkSpec(slug="intro-30m", name="Intro", host_email="john@example.com", duration=30))
    client.set_mirror_availability(link, "john@example.com")
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    room = {"zoom_join_url": "https://meet.example.com/john-room"}
    made = [client.create_booking(BookingRequest("intro-30m", "Eve", "eve@example.com", start + timedelta(hours=n),
                                                 "Europe/Berlin", room)) for n in range(2)]
    for booking in made:
        found = client.find_booking("eve@example.com", room["zoom_join_url"], field="zoom_join_url",
                                    starts_at=booking.starts_at, host_email="john@example.com")
        assert found is not None and found.sid == booking.sid
    elsewhere = (start + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.find_booking("eve@example.com", room["zoom_join_url"], field="zoom_join_url", starts_at=elsewhere,
                               host_email="john@example.com") is None


SLOT = "2030-01-07T09:00:00Z"
LISTED = {"sid": "b1", "status": "confirmed", "starts_at": SLOT, "email": "eve@example.com",
          "host_email": "john@example.com"}


@pytest.mark.parametrize("unanswered", [
    {},  # the question left out (what the simulator does)
    {"form_responses": [{"field_code": "zoom_join_url", "value": ""}]},
    {"form_responses": [{"field_code": "zoom_join_url", "value": None}]},
    {"form_responses": {"zoom_join_url": None}},
    {"form_responses_as_hash": {"zoom_join_url": None}},
    {"form_responses_as_hash": {"zoom_join_url": ""}},
], ids=["absent", "list-empty", "list-null", "object-null", "hash-null", "hash-empty"])
def test_a_booking_without_a_join_url_is_found_however_the_unanswered_question_is_listed(
        unanswered: dict) -> None:
    """A phone or in-person booking carries no join URL; it is found by its time and host. NeetoCal's docs do not
    say how a form question left unanswered is listed (left out, null or empty): each reads as unanswered, never
    as the text "None"."""
    other_time = {**LISTED, "sid": "b0", "starts_at": "2030-01-06T09:00:00Z"}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"bookings": [other_time, {**LISTED, **unanswered}],
                                         "pagination": {"total_pages": 1}})

    client = NeetoCalClient("http://neetocal.test/api/external/v2", api_key="k", version="v2", timeout=5,
                            transport=httpx.MockTransport(answer))
    found = client.find_booking("eve@example.com", None, field="zoom_join_url", starts_at=SLOT,
                                host_email="john@example.com")
    assert found is not None and found.sid == "b1"
    assert found.answer("zoom_join_url") in (None, "")
    assert client.find_booking("eve@example.com", None, field="zoom_join_url", starts_at=SLOT,
                               host_email="mary@example.com") is None
