"""Appointments that are not one attendee on Zoom: other channels, phone-only bookings, the past, a meeting in
progress when it is cancelled."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import Sims, Stack, appointment, cancelled_payload, moved, wait_until
from workers.state import KEYS


def test_a_phone_appointment_gets_no_zoom_meeting_and_a_neetocal_booking_without_a_join_url(stack: Stack,
                                                                                           sims: Sims) -> None:
    appt = appointment(channel="phone")
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert sims.zoom_meetings(live_only=False) == []
    assert "channel 'phone' is not in ZOOM_CHANNELS" in view["zoom"]["none_because"]
    assert view["host_link"] is None
    [booking] = sims.neetocal_bookings()
    assert booking["email"] == "customer@example.com"
    assert "zoom_join_url" not in (booking.get("form_responses_as_hash") or booking.get("form_responses") or {})
    [link] = [m for m in sims.get("neetocal", "meetings")["meetings"] if m["slug"] == booking["meeting_slug"]]
    assert link["spot_custom_text"] == "Phone call", "the booking does not say Zoom"


def test_an_in_person_appointment_names_its_own_location(stack: Stack, sims: Sims) -> None:
    appt = appointment(channel="local")
    appt["location"] = "Hauptstr. 1, Berlin"
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings()
    [link] = [m for m in sims.get("neetocal", "meetings")["meetings"] if m["slug"] == booking["meeting_slug"]]
    assert link["spot_custom_text"] == "In person: Hauptstr. 1, Berlin"


def test_zoom_channels_decide_which_appointments_get_a_meeting(make_stack, sims: Sims) -> None:
    stack = make_stack(ZOOM_CHANNELS="zoom,local")
    appt = appointment(channel="local")
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["zoom"]["meeting_id"] and view["zoom"]["none_because"] is None
    assert len(sims.zoom_meetings()) == 1


def test_a_phone_only_attendee_gets_a_zoom_meeting_a_warning_and_no_neetocal_call(stack: Stack,
                                                                                 sims: Sims) -> None:
    appt = appointment(attendee={"firstname": "Pat", "phone": "+49 30 1234567"})
    appt["attendees"][0]["email"] = None
    assert stack.deliver(meetergo_sim.booking_created(appt)).status_code == 202
    view = stack.wait_for_status(appt["id"], "synced")
    assert len(sims.zoom_meetings()) == 1
    assert "phone-only" in view["warning"]
    assert sims.calls("neetocal", "POST", "/bookings") == []


def test_a_past_appointment_is_skipped_not_a_dead_letter(stack: Stack, sims: Sims, redis_client: redis.Redis) -> None:
    over = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    appt = appointment()
    appt.update(start=over.isoformat(), end=(over + timedelta(minutes=30)).isoformat())
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "skipped")
    assert "ended" in view["warning"] and view["error"] is None
    assert redis_client.zscore(KEYS.dead_letter, appt["id"]) is None
    assert sims.zoom_meetings(live_only=False) == [] and sims.calls("neetocal", "POST", "/bookings") == []


def test_a_cancel_during_the_meeting_still_cancels_the_neetocal_booking(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    sims.post("zoom", f"meetings/{view['zoom']['meeting_id']}/start", {})  # the host is in the meeting
    stack.deliver(cancelled_payload(appt))
    cancelled = stack.wait_for_status(appt["id"], "cancelled")
    assert sims.neetocal_bookings() == []
    [kept] = [e for e in cancelled["history"] if e["event"] == "zoom_meeting_kept"]
    assert "3002" in kept["detail"]
    assert [r["status"] for r in sims.calls("zoom", "DELETE", "/meetings/")] == [400]


def test_other_hosts_zoom_refuses_are_left_off_the_meeting_and_shown_on_the_appointment(stack: Stack,
                                                                                       sims: Sims) -> None:
    """Every other meetergo host is named as an alternative host; Zoom refuses one it will not take (an unlicensed
    user, say). The meeting is made without them, once, and the appointment says who cannot start it."""
    maria = meetergo_sim.MARIA["email"]
    sims.configure("zoom", refused_alternative_hosts=[maria])
    appt = appointment(hosts=[meetergo_sim.JOHN, meetergo_sim.MARIA])
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    [meeting] = sims.zoom_meetings()
    assert meeting["settings"]["alternative_hosts"] == ""
    assert [call["status"] for call in sims.calls("zoom", "POST", "/meetings")] == [400, 201]
    assert not sims.calls("zoom", "PATCH", "/meetings"), "what Zoom refused is not sent again"
    assert f"Zoom refused the alternative hosts ({maria}): " in view["warning"]
    assert f"Invalid alternative host: {maria}." in view["warning"], "Zoom's own words"
    assert f"only {meetergo_sim.JOHN['email']} can start it" in view["warning"]
    [created] = [entry for entry in view["history"] if entry["event"] == "zoom_meeting_created"]
    assert "Zoom refused the alternative hosts" in created["detail"]

    # Once Zoom takes her (a licence given), the next change of the appointment names her again.
    sims.configure("zoom", refused_alternative_hosts=[])
    later = moved(appt, datetime.fromisoformat(appt["start"]) + timedelta(hours=1))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: sims.zoom_meetings()[0]["settings"]["alternative_hosts"] == maria,
               message="the meeting names her as alternative host")
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["warning"] is None

    # Cancelled: the meeting is gone, and so is what was said of its alternative hosts.
    sims.configure("zoom", refused_alternative_hosts=[maria])
    again = moved(later, datetime.fromisoformat(later["start"]) + timedelta(hours=1), seconds_later=2)
    stack.deliver(meetergo_sim.booking_rescheduled(again, later["start"]))
    wait_until(lambda: (stack.appointment(appt["id"]) or {}).get("warning"), message="refused again")
    stack.deliver(cancelled_payload(again))
    view = stack.wait_for_status(appt["id"], "cancelled")
    assert view["warning"] is None


def deliver_as_escaped_json(stack: Stack, payload: dict) -> int:
    """As a JavaScript client sends text: every character outside ASCII escaped, halves of one included."""
    return stack.http.post(f"{stack.web_url}/webhooks/meetergo", params={"token": stack.env["MEETERGO_WEBHOOK_TOKENS"]},
                           content=json.dumps(payload, ensure_ascii=True).encode(),
                           headers={"Content-Type": "application/json"}).status_code


def test_half_an_emoji_in_a_name_or_a_reason_costs_that_character_not_the_booking(stack: Stack,
                                                                                    sims: Sims) -> None:
    """JSON may carry half of a character ("\\ud83d": an emoji cut in two by a client counting UTF-16 units). No
    request to Zoom or NeetoCal can carry it: kept as it came, it failed every sync of the appointment."""
    appt = appointment(attendee={"email": "bob@example.com", "firstname": "Bob \ud83d", "lastname": "Baker"})
    assert deliver_as_escaped_json(stack, meetergo_sim.booking_created(appt)) == 202
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["error"] is None and len(sims.zoom_meetings()) == 1
    [booking] = sims.neetocal_bookings()
    assert booking["name"] == "Bob \ufffd Baker"

    assert deliver_as_escaped_json(stack, cancelled_payload(appt, reason="Sorry \ud83d")) == 202
    stack.wait_for_status(appt["id"], "cancelled")
    assert sims.zoom_meetings() == []
    assert [b["status"] for b in sims.neetocal_bookings(live_only=False)] == ["cancelled"]


def test_a_meeting_moved_off_zoom_takes_its_host_link_with_it(stack: Stack, sims: Sims) -> None:
    """The appointment becomes a phone call: its Zoom meeting goes, and the host's link says so (410) rather than
    showing a Start page that can only answer 'try again in a minute' until it expires."""
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    link = httpx.URL(stack.wait_for_status(appt["id"], "synced")["host_link"])
    phone = moved(appt, datetime.fromisoformat(appt["start"]))
    phone["meetingInfo"] = {"channel": "phone", "meetingLink": None}
    stack.deliver(meetergo_sim.booking_rescheduled(phone, appt["start"]))
    wait_until(lambda: sims.zoom_meetings() == [], message="the Zoom meeting to go")
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["host_link"] is None
    for method in ("GET", "POST"):
        answer = stack.http.request(method, stack.web_url + link.raw_path.decode(), follow_redirects=False)
        assert answer.status_code == 410, (method, answer.status_code)
