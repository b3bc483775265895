"""Issue 2: a booking in meetergo becomes one Zoom meeting and one NeetoCal booking, end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis

from tests.support import (
    NEETOCAL_VERSIONS,
    Sims,
    Stack,
    assert_neetocal_calls_fit,
    meetergo_fixture,
    neetocal_env,
)
from workers.state import KEYS


def documented_example(days_ahead: int = 10) -> dict:
    """The documented booking_created example, moved into the future (same local time, same offset)."""
    body = meetergo_fixture("booking_created")
    start = datetime.fromisoformat(body["start"])
    future = (datetime.now(UTC) + timedelta(days=days_ahead)).date()
    shift = datetime.combine(future, start.timetz()) - start
    for key in ("start", "end"):
        body[key] = (datetime.fromisoformat(body[key]) + shift).isoformat()
    for key in ("createdAt", "updatedAt"):
        body[key] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    return body


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_documented_booking_becomes_one_zoom_meeting_and_one_neetocal_booking(make_stack, sims: Sims,
                                                                              redis_client: redis.Redis,
                                                                              neetocal: str) -> None:
    stack = make_stack(**neetocal_env(sims, neetocal))
    body = documented_example()
    response = stack.deliver(body)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "accepted", "appointment_id": "appt-uuid-12345"}

    view = stack.wait_for_status("appt-uuid-12345", "synced")

    start = datetime.fromisoformat(body["start"])
    [meeting] = sims.zoom_meetings()
    assert meeting["host_email"] == "john@example.com"
    assert meeting["start_time"] == start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert meeting["duration"] == 30
    assert meeting["timezone"] == "America/New_York"
    assert meeting["topic"] == "Discovery Call with Jane Doe"
    assert meeting["agenda"].splitlines()[-1] == "[meetbridge:appt-uuid-12345]"

    [booking] = sims.neetocal_bookings()
    local = start.astimezone(ZoneInfo("America/New_York"))
    assert booking["email"] == "customer@example.com"
    assert booking["time_zone"] == "America/New_York"
    assert booking["starts_at"] == start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sent = [r for r in sims.calls("neetocal", "POST", "/bookings") if r["status"] == 200][0]["json"]
    assert sent["slot_date"] == local.strftime("%Y-%m-%d")
    assert sent["slot_start_time"] == local.strftime("%I:%M %p")  # 12-hour, in the attendee's zone
    assert view["zoom"]["meeting_id"] == meeting["id"]
    assert str(meeting["id"]) in view["zoom"]["join_url"]
    assert booking["form_responses"]["zoom_join_url"] == view["zoom"]["join_url"]
    assert view["neetocal"]["booking_sid"] == booking["sid"]
    assert view["host_link"].startswith("https://meetbridge.test/h/appt-uuid-12345/")
    assert view["error"] is None
    assert "start_url" not in json.dumps(view).replace("start_url_expires_at", "")
    assert view.get("warning") is None  # the simulator keeps unknown keys by default
    # Each change's note was written with it (in one script with the record), in the order they happened.
    events = [entry["event"] for entry in view["history"]]
    assert events == ["booking_created", "zoom_meeting_created", "neetocal_link_created", "neetocal_booking_created",
                      "synced"], events
    # The meeting's end, which the start_url refresh and the host link read, went with a later write.
    ends_at = redis_client.hget(KEYS.appointment("appt-uuid-12345"), "ends_at")
    assert ends_at is not None and datetime.fromisoformat(ends_at) == datetime.fromisoformat(body["end"])
    assert_neetocal_calls_fit(sims, neetocal)


def test_every_zoom_request_validates_against_the_openapi_subset(stack: Stack, sims: Sims) -> None:
    stack.deliver(documented_example())
    stack.wait_for_status("appt-uuid-12345", "synced")
    assert sims.get("zoom", "validation_errors")["errors"] == []
    assert sims.calls("zoom", "POST", "/meetings"), "the sync sent no create request"


def test_the_join_url_goes_under_the_configured_form_field(make_stack, sims: Sims) -> None:
    stack = make_stack(NEETOCAL_JOIN_URL_FIELD="video_link")
    stack.deliver(documented_example())
    view = stack.wait_for_status("appt-uuid-12345", "synced")
    [booking] = sims.neetocal_bookings()
    assert booking["form_responses"] == {"video_link": view["zoom"]["join_url"]}
