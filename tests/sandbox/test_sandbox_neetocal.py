"""NeetoCal v1 simulator over HTTP: auth, scheduling links, availability, spots and the booking rules."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.sandbox.sandbox_helpers import configure

API = "/api/external/v1"
HOST = "oliver@example.com"
SLOT_TAKEN = {"error": "The selected slot is no longer available"}


def weekday_ahead(weekday: int) -> date:
    """The first date with this weekday (0 = Monday) at least a week from today: always in the future."""
    today = datetime.now(UTC).date()
    return today + timedelta(days=7 + (weekday - today.weekday()) % 7)


MONDAY = weekday_ahead(0)


def make_link(client: httpx.Client, slug: str = "intro", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": "Intro call", "hosts": [HOST], "duration": 30, **fields}
    response = client.post(f"{API}/meetings", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["meeting"])


def book(client: httpx.Client, slug: str = "intro", **fields: Any) -> httpx.Response:
    body = {
        "meeting_slug": slug,
        "name": "Eve Smith",
        "email": "eve@example.com",
        "time_zone": "UTC",
        "slot_date": MONDAY.isoformat(),
        "slot_start_time": "10:00 AM",
        **fields,
    }
    return client.post(f"{API}/bookings", json=body)


def booked(client: httpx.Client, slug: str = "intro", **fields: Any) -> dict[str, Any]:
    response = book(client, slug, **fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


# ------------------------------------------------------------------------------------------- auth


def test_calls_need_the_api_key(neetocal_api: httpx.Client) -> None:
    for headers in ({"X-Api-Key": "wrong"}, {"X-Api-Key": ""}):
        response = neetocal_api.get(f"{API}/meetings", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "Could not authenticate, invalid API Key"}


def test_rate_limit_per_second(neetocal_api: httpx.Client) -> None:
    configure(neetocal_api, rate_limit_per_second=2)
    statuses = [neetocal_api.get(f"{API}/meetings").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = neetocal_api.get(f"{API}/meetings")
    assert limited.json() == {"error": "Too many requests"}


# -------------------------------------------------------------------------------- scheduling links


def test_create_link_returns_documented_fields_and_default_availability(neetocal_api: httpx.Client) -> None:
    response = neetocal_api.post(
        f"{API}/meetings",
        json={
            "slug": "intro",
            "name": "Intro",
            "hosts": [HOST],
            "duration": 30,
            "description": "Hi",
            "kind": "one_on_one",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Meeting created successfully"
    link = body["meeting"]
    assert len(link["sid"]) == 7
    assert (link["slug"], link["name"], link["duration"], link["kind"]) == (
        "intro",
        "Intro",
        30,
        "one_on_one",
    )
    assert link["start_time_increment"] == 30
    assert link["hosts"] == [HOST]
    assert link["availability"] == {
        "time_zone": "UTC",
        "periods": [
            {"wday": day, "start_time": "09:00 AM", "end_time": "05:00 PM"}
            for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
        ],
    }
    for name in ("id", "description", "spot", "spot_custom_text", "created_at", "updated_at"):
        assert name in link


def test_create_link_reports_blank_required_fields(neetocal_api: httpx.Client) -> None:
    response = neetocal_api.post(f"{API}/meetings", json={})
    assert response.status_code == 422
    assert response.json() == {
        "errors": [
            "Slug can't be blank",
            "Name can't be blank",
            "Hosts can't be blank",
            "Duration can't be blank",
        ]
    }
    bad = neetocal_api.post(
        f"{API}/meetings", json={"slug": "x", "name": "x", "hosts": ["nope"], "duration": 0}
    )
    assert bad.status_code == 422
    assert len(bad.json()["errors"]) == 2


def test_slug_must_be_unique(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    response = neetocal_api.post(
        f"{API}/meetings", json={"slug": "intro", "name": "x", "hosts": [HOST], "duration": 30}
    )
    assert response.status_code == 422
    assert response.json() == {"error": "Slug has already been taken"}


def test_list_links_filters_by_host_and_paginates(neetocal_api: httpx.Client) -> None:
    for index in range(3):
        make_link(neetocal_api, f"link-{index}")
    make_link(neetocal_api, "other", hosts=["jane@example.com"])
    page = neetocal_api.get(
        f"{API}/meetings", params={"host_email": HOST, "page_size": 2, "page_number": 2}
    ).json()
    assert [link["slug"] for link in page["meetings"]] == ["link-2"]
    assert page["pagination"] == {
        "total_records": 3,
        "total_pages": 2,
        "current_page_number": 2,
        "page_size": 2,
    }
    everything = neetocal_api.get(f"{API}/meetings").json()
    assert everything["pagination"]["page_size"] == 30
    assert len(everything["meetings"]) == 4


def test_get_and_update_link(neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api)
    assert neetocal_api.get(f"{API}/meetings/{link['sid']}").json()["meeting"]["slug"] == "intro"
    missing = neetocal_api.get(f"{API}/meetings/nosuchs")
    assert (missing.status_code, missing.json()) == (404, {"error": "Meeting not found"})

    without_hosts = neetocal_api.patch(f"{API}/meetings/{link['sid']}", json={"name": "Renamed"})
    assert without_hosts.status_code == 422
    assert without_hosts.json() == {"errors": ["Hosts can't be blank"]}

    updated = neetocal_api.patch(
        f"{API}/meetings/{link['sid']}", json={"name": "Renamed", "hosts": [HOST], "duration": 45}
    )
    assert updated.status_code == 200
    assert (updated.json()["meeting"]["name"], updated.json()["meeting"]["duration"]) == ("Renamed", 45)


def test_availability_replaces_periods(neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api)
    response = neetocal_api.post(
        f"{API}/meetings/{link['sid']}/availability",
        json={
            "time_zone": "Europe/Berlin",
            "periods": [{"wday": "saturday", "start_time": "10:00AM", "end_time": "02:00 PM"}],
        },
    )
    assert response.status_code == 200
    assert response.json()["message"] == "Availability updated successfully"
    assert response.json()["meeting"]["availability"] == {
        "time_zone": "Europe/Berlin",
        "periods": [{"wday": "saturday", "start_time": "10:00 AM", "end_time": "02:00 PM"}],
    }


@pytest.mark.parametrize(
    "period",
    [
        {"wday": "Monday", "start_time": "09:00 AM", "end_time": "05:00 PM"},
        {"wday": "funday", "start_time": "09:00 AM", "end_time": "05:00 PM"},
        {"wday": "monday", "start_time": "9:00 AM", "end_time": "05:00 PM"},
        {"wday": "monday", "start_time": "09:00", "end_time": "17:00"},
        {"wday": "monday", "start_time": "05:00 PM", "end_time": "09:00 AM"},
    ],
)
def test_bad_availability_is_422(neetocal_api: httpx.Client, period: dict[str, str]) -> None:
    link = make_link(neetocal_api)
    response = neetocal_api.post(f"{API}/meetings/{link['sid']}/availability", json={"periods": [period]})
    assert response.status_code == 422
    assert "error" in response.json()


def test_create_spot(neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api)
    response = neetocal_api.post(
        f"{API}/meetings/{link['sid']}/spots",
        json={"spot": "in_person", "spot_in_person_location": "123 Main St", "is_default": True},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Spot created successfully"
    assert body["spot"]["spot"] == "in_person"
    assert body["spot"]["spot_in_person_location"] == "123 Main St"
    assert body["spot"]["is_default"] is True
    assert neetocal_api.get(f"{API}/meetings/{link['sid']}").json()["meeting"]["spot"] == "in_person"

    missing_detail = neetocal_api.post(f"{API}/meetings/{link['sid']}/spots", json={"spot": "phone_call"})
    assert missing_detail.status_code == 422
    unknown = neetocal_api.post(f"{API}/meetings/{link['sid']}/spots", json={"spot": "skype"})
    assert unknown.status_code == 422


# ----------------------------------------------------------------------------------------- bookings


def test_booking_returns_the_booking_object(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    body = booked(
        neetocal_api,
        form_responses={"guest_email_s": ["sam@example.com"], "language": "English"},
        preferred_meeting_spot="jitsi",
    )
    assert body["status"] == "confirmed"
    assert body["cancel_reason"] is None
    assert body["starts_at"] == f"{MONDAY.isoformat()}T10:00:00Z"
    assert body["ends_at"] == f"{MONDAY.isoformat()}T10:30:00Z"
    assert (body["email"], body["name"], body["time_zone"]) == ("eve@example.com", "Eve Smith", "UTC")
    assert body["host_email"] == HOST and body["host_name"]
    assert body["meeting"] == {"name": "Intro call", "slug": "intro"}
    assert body["form_responses"][1] == {
        "field": "Language",
        "value": "English",
        "type": "text",
        "field_code": "language",
    }
    for name in (
        "id",
        "sid",
        "meeting_id",
        "starts_at_for_client",
        "ends_at_for_client",
        "created_at",
        "updated_at",
        "client_booking_url",
    ):
        assert body[name]
    assert neetocal_api.get(f"{API}/bookings/{body['sid']}").json()["sid"] == body["sid"]


@pytest.mark.parametrize("slot_start_time", ["13:30", "1:30 PM", "01:30PM", "01:30 pm", "13:30 PM"])
def test_slot_start_time_must_be_12_hour(neetocal_api: httpx.Client, slot_start_time: str) -> None:
    make_link(neetocal_api)
    response = book(neetocal_api, slot_start_time=slot_start_time)
    assert response.status_code == 422
    assert response.json() == {"error": "Invalid slot_start_time. Use the format 01:30 PM"}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"slot_date": "2020-01-06"}, id="past"),
        pytest.param({"slot_start_time": "10:15 AM"}, id="off-increment"),
        pytest.param({"slot_start_time": "05:00 PM"}, id="at-end-of-availability"),
        pytest.param({"slot_start_time": "08:30 AM"}, id="before-availability"),
        pytest.param({"slot_date": weekday_ahead(5).isoformat()}, id="saturday"),
    ],
)
def test_unavailable_slots_are_422(neetocal_api: httpx.Client, fields: dict[str, str]) -> None:
    make_link(neetocal_api)
    response = book(neetocal_api, **fields)
    assert (response.status_code, response.json()) == (422, SLOT_TAKEN)


def test_slot_is_read_in_the_booking_time_zone(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    # 03:30 PM in Kolkata (UTC+05:30) is 10:00 UTC: inside the 09-17 UTC availability.
    body = booked(neetocal_api, time_zone="Asia/Kolkata", slot_start_time="03:30 PM")
    assert body["starts_at"] == f"{MONDAY.isoformat()}T10:00:00Z"
    assert body["starts_at_for_client"].endswith("15:30:00+05:30")
    # 09:00 AM in Kolkata is 03:30 UTC: outside it.
    assert book(neetocal_api, time_zone="Asia/Kolkata", slot_start_time="09:00 AM").json() == SLOT_TAKEN


def test_availability_is_checked_in_its_own_time_zone(neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api)
    periods = [{"wday": "monday", "start_time": "09:00 AM", "end_time": "11:00 AM"}]
    neetocal_api.post(
        f"{API}/meetings/{link['sid']}/availability",
        json={"time_zone": "America/New_York", "periods": periods},
    )
    ten_in_new_york = datetime.combine(MONDAY, time(10), ZoneInfo("America/New_York")).astimezone(UTC)
    body = booked(neetocal_api, slot_start_time=ten_in_new_york.strftime("%I:%M %p"))
    assert body["starts_at"] == ten_in_new_york.strftime("%Y-%m-%dT%H:%M:%SZ")
    # 10:00 UTC is 05:00 or 06:00 in New York: outside the period.
    assert book(neetocal_api, slot_start_time="10:00 AM").json() == SLOT_TAKEN


def test_end_time_1159_pm_counts_as_end_of_day(neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api)
    periods = [{"wday": "monday", "start_time": "09:00 PM", "end_time": "11:59 PM"}]
    neetocal_api.post(f"{API}/meetings/{link['sid']}/availability", json={"periods": periods})
    assert book(neetocal_api, slot_start_time="11:30 PM").status_code == 200


def test_overlapping_bookings_of_the_same_host_conflict(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api, "hour", duration=60)
    make_link(neetocal_api, "other-link")
    make_link(neetocal_api, "other-host", hosts=["jane@example.com"])
    first = booked(neetocal_api, "hour")
    # 10:30 overlaps 10:00-11:00 of the same host, even through another link.
    assert book(neetocal_api, "other-link", slot_start_time="10:30 AM").json() == SLOT_TAKEN
    assert book(neetocal_api, "hour").json() == SLOT_TAKEN
    assert book(neetocal_api, "other-host").status_code == 200
    assert book(neetocal_api, "other-link", slot_start_time="11:00 AM").status_code == 200
    # Cancelling frees the slot.
    neetocal_api.post(f"{API}/bookings/{first['sid']}/cancel")
    assert book(neetocal_api, "other-link", slot_start_time="10:30 AM").status_code == 200


def test_round_robin_takes_the_first_free_host(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api, "rr", kind="round_robin", hosts=[HOST, "jane@example.com"])
    assert booked(neetocal_api, "rr")["host_email"] == HOST
    assert booked(neetocal_api, "rr")["host_email"] == "jane@example.com"
    assert book(neetocal_api, "rr").json() == SLOT_TAKEN


@pytest.mark.parametrize(
    ("fields", "status", "body"),
    [
        ({"meeting_slug": "nope"}, 404, {"error": "Meeting not found"}),
        ({"time_zone": "Mars/Base"}, 422, None),
        ({"email": "not-an-email"}, 422, {"errors": ["Email is invalid"]}),
        ({"slot_date": "15-07-2031"}, 422, {"error": "Invalid slot_date. Use the format YYYY-MM-DD"}),
        ({"name": ""}, 422, {"errors": ["Name can't be blank"]}),
    ],
)
def test_bad_booking_input(
    neetocal_api: httpx.Client, fields: dict[str, str], status: int, body: Any
) -> None:
    make_link(neetocal_api)
    response = book(neetocal_api, **fields)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body


def test_list_bookings_with_filters(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    make_link(neetocal_api, "second", hosts=["jane@example.com"])
    kept = booked(neetocal_api)
    cancelled = booked(neetocal_api, "second", email="bob@example.com")
    neetocal_api.post(f"{API}/bookings/{cancelled['sid']}/cancel", json={"cancel_reason": "ill"})

    def sids(**params: str) -> list[str]:
        response = neetocal_api.get(f"{API}/bookings", params=params)
        assert response.status_code == 200
        return [booking["sid"] for booking in response.json()["bookings"]]

    assert sids() == [kept["sid"], cancelled["sid"]]
    assert sids(type="cancelled") == [cancelled["sid"]]
    assert sids(type="upcoming") == [kept["sid"]]
    assert sids(type="past") == []
    assert sids(client_email="bob@example.com") == [cancelled["sid"]]
    assert sids(host_email=HOST) == [kept["sid"]]
    assert sids(meeting_slug="second") == [cancelled["sid"]]
    assert neetocal_api.get(f"{API}/bookings").json()["pagination"]["total_records"] == 2


def test_reschedule_moves_the_booking(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api, "hour", duration=60)
    booking = booked(neetocal_api, "hour")
    move = {"name": "Eve", "email": "eve@example.com", "time_zone": "UTC", "slot_date": MONDAY.isoformat()}
    # Overlaps only the booking itself: allowed.
    response = neetocal_api.patch(
        f"{API}/bookings/{booking['sid']}",
        json={**move, "slot_start_time": "10:30 AM", "reschedule_reason": "later"},
    )
    assert response.status_code == 200
    assert response.json()["starts_at"] == f"{MONDAY.isoformat()}T10:30:00Z"
    assert response.json()["ends_at"] == f"{MONDAY.isoformat()}T11:30:00Z"

    incomplete = neetocal_api.patch(f"{API}/bookings/{booking['sid']}", json={"slot_start_time": "11:00 AM"})
    assert incomplete.status_code == 422
    twenty_four = neetocal_api.patch(
        f"{API}/bookings/{booking['sid']}", json={**move, "slot_start_time": "11:00"}
    )
    assert twenty_four.json() == {"error": "Invalid slot_start_time. Use the format 01:30 PM"}

    neetocal_api.post(f"{API}/bookings/{booking['sid']}/cancel")
    refused = neetocal_api.patch(
        f"{API}/bookings/{booking['sid']}", json={**move, "slot_start_time": "01:00 PM"}
    )
    assert (refused.status_code, refused.json()) == (422, {"error": "Booking is already cancelled"})


def test_cancel_once(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    booking = booked(neetocal_api)
    response = neetocal_api.post(f"{API}/bookings/{booking['sid']}/cancel", json={"cancel_reason": "Sick"})
    assert (response.status_code, response.json()) == (200, {"message": "Booking cancelled successfully"})
    after = neetocal_api.get(f"{API}/bookings/{booking['sid']}").json()
    assert (after["status"], after["cancel_reason"]) == ("cancelled", "Sick")
    again = neetocal_api.post(f"{API}/bookings/{booking['sid']}/cancel")
    assert (again.status_code, again.json()) == (422, {"error": "Booking is already cancelled"})
    assert neetocal_api.post(f"{API}/bookings/nosuchs/cancel").status_code == 404


def test_sandbox_lists_raw_bookings_and_links(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    booked(neetocal_api, form_responses={"language": "English"})
    bookings = neetocal_api.get("/_sandbox/bookings").json()["bookings"]
    assert bookings[0]["meeting_slug"] == "intro"
    assert bookings[0]["form_responses"] == {"language": "English"}
    assert [link["slug"] for link in neetocal_api.get("/_sandbox/meetings").json()["meetings"]] == ["intro"]


def test_concurrent_bookings_of_one_slot_succeed_once(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: book(neetocal_api).status_code, range(8)))
    assert sorted(statuses) == [200] + [422] * 7
    assert len(neetocal_api.get("/_sandbox/bookings").json()["bookings"]) == 1


# ------------------------------------------------------------------------------------- v2 (and templates)

V2 = "/api/external/v2"


def v2_link(client: httpx.Client, slug: str = "intro", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": "Intro call", "hosts": [HOST], "duration": 30, **fields}
    response = client.post(f"{V2}/meetings", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["meeting"])


def v2_booked(client: httpx.Client, slug: str = "intro", **fields: Any) -> dict[str, Any]:
    body = {"meeting_slug": slug, "name": "Eve Smith", "email": "eve@example.com", "time_zone": "UTC",
            "slot_date": MONDAY.isoformat(), "slot_start_time": "10:00 AM", **fields}
    response = client.post(f"{V2}/bookings", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_v1_and_v2_share_one_state(neetocal_api: httpx.Client) -> None:
    link = v2_link(neetocal_api)
    assert neetocal_api.get(f"{API}/meetings/{link['sid']}").json()["meeting"]["slug"] == "intro"
    booking = booked(neetocal_api)
    assert neetocal_api.get(f"{V2}/bookings/{booking['sid']}").json()["sid"] == booking["sid"]


def test_v2_answers_the_v1_only_routes_404(neetocal_api: httpx.Client) -> None:
    link = v2_link(neetocal_api)
    booking = v2_booked(neetocal_api)
    periods = {"periods": [{"wday": "monday", "start_time": "09:00 AM", "end_time": "05:00 PM"}]}
    assert neetocal_api.post(f"{V2}/meetings/{link['sid']}/availability", json=periods).status_code == 404
    assert neetocal_api.post(f"{V2}/bookings/{booking['sid']}/cancel", json={}).status_code == 404
    assert neetocal_api.get(f"{V2}/meeting_templates").status_code == 404
    assert neetocal_api.get(f"{V2}/bookings/{booking['sid']}").json()["status"] == "confirmed"


def test_v2_link_availability_is_a_patch_of_availabilities(neetocal_api: httpx.Client) -> None:
    link = v2_link(neetocal_api)
    body = {"periods": [{"wday": "sunday", "start_time": "12:00 AM", "end_time": "11:59 PM"}], "time_zone": "UTC"}
    response = neetocal_api.patch(f"{V2}/meetings/{link['sid']}/availabilities", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["meeting"]["availability"]["periods"] == [
        {"wday": "sunday", "start_time": "12:00 AM", "end_time": "11:59 PM"}]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_links_availability_is_the_hosts_schedule_shared_by_the_hosts_links(neetocal_api: httpx.Client,
                                                                              version: str) -> None:
    """"Note that if the availability is used elsewhere, that would also be updated" (update-meeting, both
    versions); v1's create-meeting route gives one link a schedule of its own instead."""
    first, second = make_link(neetocal_api, "first"), make_link(neetocal_api, "second")
    sunday = {"periods": [{"wday": "sunday", "start_time": "12:00 AM", "end_time": "11:59 PM"}], "time_zone": "UTC"}
    method, path = ("post", "availability") if version == "v1" else ("patch", "availabilities")
    edited = getattr(neetocal_api, method)(f"/api/external/{version}/meetings/{first['sid']}/{path}", json=sunday)
    assert edited.status_code == 200, edited.text
    hours = {m["slug"]: m["availability"]["periods"] for m in neetocal_api.get("/_sandbox/meetings").json()["meetings"]}
    assert hours["first"] == hours["second"] == sunday["periods"], "one schedule, both links"

    own = neetocal_api.post(f"{API}/meetings/{second['sid']}/availability/create",
                            json={"email": HOST, "name": "Second's own", "periods": []})
    assert own.status_code == 200, own.text
    assert own.json()["availability"]["default"] is False and own.json()["meeting_id"] == second["id"]
    hours = {m["slug"]: m["availability"]["periods"] for m in neetocal_api.get("/_sandbox/meetings").json()["meetings"]}
    assert (hours["first"], hours["second"]) == (sunday["periods"], [])
    not_a_host = neetocal_api.post(f"{API}/meetings/{second['sid']}/availability/create",
                                   json={"email": "eve@example.com", "name": "x", "periods": []})
    assert not_a_host.status_code == 422
    assert neetocal_api.post(f"{V2}/meetings/{second['sid']}/availability/create",
                             json={"email": HOST, "name": "x", "periods": []}).status_code == 404, "v1 only"


def test_v2_reschedule_and_cancel_are_one_patch(neetocal_api: httpx.Client) -> None:
    v2_link(neetocal_api)
    booking = v2_booked(neetocal_api)
    moved = neetocal_api.patch(f"{V2}/bookings/{booking['sid']}", json={
        "slot_date": MONDAY.isoformat(), "slot_start_time": "11:00 AM", "time_zone": "UTC",
        "reschedule_reason": "moved"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["starts_at"] == f"{MONDAY.isoformat()}T11:00:00Z"
    cancelled = neetocal_api.patch(f"{V2}/bookings/{booking['sid']}", json={"status": "cancelled",
                                                                            "cancel_reason": "no longer"})
    assert cancelled.status_code == 200
    again = neetocal_api.get(f"{V2}/bookings/{booking['sid']}").json()
    assert (again["status"], again["cancel_reason"]) == ("cancelled", "no longer")
    assert neetocal_api.patch(f"{V2}/bookings/{booking['sid']}", json={"status": "cancelled"}).status_code == 422


def test_v2_update_method_follows_the_config(neetocal_api: httpx.Client) -> None:
    v2_link(neetocal_api)
    booking = v2_booked(neetocal_api)
    body = {"status": "cancelled"}
    assert neetocal_api.put(f"{V2}/bookings/{booking['sid']}", json=body).status_code == 405  # reference: PATCH
    configure(neetocal_api, v2_booking_update_method="PUT")  # the CLI's side
    assert neetocal_api.patch(f"{V2}/bookings/{booking['sid']}", json=body).status_code == 405
    assert neetocal_api.put(f"{V2}/bookings/{booking['sid']}", json=body).status_code == 200


def test_v2_slot_time_format_follows_the_config(neetocal_api: httpx.Client) -> None:
    v2_link(neetocal_api)
    v2_booked(neetocal_api)  # 12-hour, as the reference writes it
    configure(neetocal_api, v2_slot_time_format="24h")  # as the CLI sends it
    refused = neetocal_api.post(f"{V2}/bookings", json={
        "meeting_slug": "intro", "name": "A", "email": "a@example.com", "time_zone": "UTC",
        "slot_date": MONDAY.isoformat(), "slot_start_time": "02:00 PM"})
    assert refused.status_code == 422 and "slot_start_time" in refused.json()["error"]
    ok = v2_booked(neetocal_api, email="b@example.com", slot_start_time="14:00")
    assert ok["starts_at"] == f"{MONDAY.isoformat()}T14:00:00Z"
    # v1 keeps its 12-hour rule whatever v2 takes.
    assert book(neetocal_api, slot_start_time="15:00").status_code == 422


@pytest.mark.parametrize("field", ["spot_custom_text", "custom_text"])
def test_v2_spot_text_field_follows_the_config(neetocal_api: httpx.Client, field: str) -> None:
    link = v2_link(neetocal_api)
    configure(neetocal_api, v2_spot_text_field=field)
    other = "custom_text" if field == "spot_custom_text" else "spot_custom_text"
    refused = neetocal_api.post(f"{V2}/meetings/{link['sid']}/spots", json={"spot": "custom", other: "Zoom"})
    assert refused.status_code == 422 and "custom text" in refused.text.lower()
    created = neetocal_api.post(f"{V2}/meetings/{link['sid']}/spots", json={"spot": "custom", field: "Zoom"})
    assert created.status_code == 200 and created.json()["spot"]["spot_custom_text"] == "Zoom"


def test_v2_bookings_carry_form_responses_as_list_and_hash(neetocal_api: httpx.Client) -> None:
    v2_link(neetocal_api)
    booking = v2_booked(neetocal_api, form_responses={"zoom_join_url": "https://zoom.sandbox/j/1"})
    assert booking["form_responses"] == [{"field": "Zoom join url", "value": "https://zoom.sandbox/j/1",
                                          "type": "text", "field_code": "zoom_join_url"}]
    assert booking["form_responses_as_hash"] == {"zoom_join_url": "https://zoom.sandbox/j/1"}


def add_template(client: httpx.Client, *codes: str) -> dict[str, Any]:
    response = client.post("/_sandbox/templates", json={
        "name": "Zoom calls", "description": "From the template", "start_time_increment": 15,
        "questions": [{"field_code": code} for code in codes]})
    assert response.status_code == 200, response.text
    return dict(response.json()["template"])


def test_a_link_from_a_template_copies_its_questions_and_values(neetocal_api: httpx.Client) -> None:
    template = add_template(neetocal_api, "zoom_join_url")
    link = v2_link(neetocal_api, template_id=template["id"], description="Mine")
    assert link["template_id"] == template["id"]
    assert link["questions"] == ["name", "email", "zoom_join_url"]
    assert link["start_time_increment"] == 15  # copied
    assert link["description"] == "Mine"  # the request overrides the template
    assert neetocal_api.get(f"{V2}/meeting-templates/{template['id']}").json()["is_template"] is True
    assert neetocal_api.get(f"{V2}/meeting-templates/{template['sid']}").status_code == 200
    listed = neetocal_api.get(f"{V2}/meeting-templates").json()["templates"]
    assert [t["id"] for t in listed] == [template["id"]]
    assert [t["id"] for t in neetocal_api.get(f"{API}/meeting_templates").json()["templates"]] == [template["id"]]


def test_an_unknown_template_is_refused(neetocal_api: httpx.Client) -> None:
    for base in (API, V2):
        response = neetocal_api.post(f"{base}/meetings", json={
            "slug": f"x{base[-1]}", "name": "X", "hosts": [HOST], "duration": 30, "template_id": "nope"})
        assert response.status_code == 404 and response.json() == {"error": "Meeting template not found"}
    assert neetocal_api.get(f"{V2}/meeting-templates/nope").status_code == 404


def test_unknown_form_responses_are_kept_or_dropped_per_config(neetocal_api: httpx.Client) -> None:
    template = add_template(neetocal_api, "zoom_join_url")
    v2_link(neetocal_api, "plain")
    v2_link(neetocal_api, "templated", template_id=template["id"])
    answers = {"zoom_join_url": "https://zoom.sandbox/j/1", "other": "x"}
    kept = v2_booked(neetocal_api, "plain", form_responses=answers)
    assert kept["form_responses_as_hash"] == answers  # the default keeps every key
    configure(neetocal_api, drop_unknown_form_responses=True)
    dropped = v2_booked(neetocal_api, "plain", email="b@example.com", slot_start_time="11:00 AM",
                        form_responses=answers)
    assert dropped["form_responses_as_hash"] == {}
    from_template = v2_booked(neetocal_api, "templated", email="c@example.com", slot_start_time="12:00 PM",
                              form_responses=answers)
    assert from_template["form_responses_as_hash"] == {"zoom_join_url": "https://zoom.sandbox/j/1"}


# ------------------------------------------------------------------- group links and override_availability


def test_a_grouped_link_seats_several_bookings_at_one_slot(neetocal_api: httpx.Client) -> None:
    make_link(neetocal_api, "group", kind="grouped")
    first = booked(neetocal_api, "group", email="ann@example.com",
                   form_responses={"guest_email_s": ["sam@example.com"]})
    second = booked(neetocal_api, "group", email="bob@example.com")
    assert first["starts_at"] == second["starts_at"]
    make_link(neetocal_api, "single")
    assert book(neetocal_api, "single", slot_start_time="10:15 AM").json() == SLOT_TAKEN, "the host is busy"


def test_v2_override_availability_lifts_hours_increment_and_overlap_but_not_the_past(
        neetocal_api: httpx.Client) -> None:
    link = make_link(neetocal_api, "mirror", start_time_increment=30)
    closed = neetocal_api.patch(f"/api/external/v2/meetings/{link['sid']}/availabilities",
                                json={"periods": [], "time_zone": "UTC"})
    assert closed.status_code == 200, closed.text
    v2 = "/api/external/v2/bookings"
    stranger = {"meeting_slug": "mirror", "name": "S", "email": "s@example.com", "time_zone": "UTC",
                "slot_date": MONDAY.isoformat(), "slot_start_time": "03:07 AM"}
    assert neetocal_api.post(v2, json=stranger).json() == SLOT_TAKEN, "no public hours: nobody can book"
    assert neetocal_api.post(f"{API}/bookings", json={**stranger, "override_availability": True}).json() == \
        SLOT_TAKEN, "v1 documents no override"
    for email in ("a@example.com", "b@example.com"):  # off the increment, at night, and overlapping
        response = neetocal_api.post(v2, json={**stranger, "email": email, "override_availability": True})
        assert response.status_code == 200, response.text
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    past = neetocal_api.post(v2, json={**stranger, "slot_date": yesterday, "override_availability": True})
    assert past.json() == SLOT_TAKEN
