"""Every appointment mirrored as its people expect: groups, meetergo's own Zoom meeting, mirror links that book
any slot and leave the hosts' own schedules alone, NeetoCal's refusals and changes made in NeetoCal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import (
    NEETOCAL_VERSIONS,
    Sims,
    Stack,
    appointment,
    assert_neetocal_calls_fit,
    cancelled_payload,
    meeting_made_by_meetergo,
    metric,
    neetocal_env,
    run_doctor,
    wait_until,
)
from workers.state import KEYS

API_KEY = "sandbox-meetergo-key"
GROUP = [
    {"email": "ann@example.com", "firstname": "Ann", "timezone": "Europe/Berlin",
     "bringalongEmails": ["sam@example.com", "charlie@example.com"]},
    {"email": "bob@example.com", "firstname": "Bob", "timezone": "America/New_York"},
    {"email": "cy@example.com", "firstname": "Cy"},
]


def group_appointment(**kwargs: Any) -> dict[str, Any]:
    appt = appointment(**kwargs)
    appt["attendees"] = [meetergo_sim.attendee_entry(person) for person in GROUP]
    return appt


def meetergo_api(sims: Sims) -> httpx.Client:
    return httpx.Client(base_url=sims.url("meetergo"), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def subscribe(sims: Sims, stack: Stack) -> None:
    """Register the stack's webhook in the meetergo simulator, as `meetbridge connect` does."""
    endpoint = f"{stack.web_url}/webhooks/meetergo?token={stack.env['MEETERGO_WEBHOOK_TOKENS']}"
    meetergo_api(sims).post("/webhooks", json={
        "endpoint": endpoint, "eventTypes": ["booking_created", "booking_rescheduled", "booking_cancelled"],
    }).raise_for_status()


def leave(sims: Sims, appt: dict[str, Any], index: int) -> None:
    """Attendee `index` (of the appointment as created) leaves it in meetergo, which tells the webhook."""
    attendee_id = appt["attendees"][index]["id"]
    meetergo_api(sims).post(f"/v4/appointment/{appt['id']}/cancel",
                            json={"attendeeId": attendee_id}).raise_for_status()


def answers(booking: dict[str, Any]) -> dict[str, Any]:
    return booking.get("form_responses") or {}


@pytest.mark.parametrize("readback, payload", [(True, "leaver"), (False, "leaver"), (False, "remaining")])
def test_a_group_gets_a_booking_each_and_only_leavers_lose_theirs(make_stack, sims: Sims, readback: bool,
                                                                  payload: str) -> None:
    sims.configure("meetergo", attendee_cancel_payload=payload)
    stack = make_stack(**({"MEETERGO_API_KEY": API_KEY} if readback else {}))
    subscribe(sims, stack)
    appt = group_appointment()
    sims.post("meetergo", "appointments", appt)
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    join_url = view["zoom"]["join_url"]
    bookings = {b["email"]: b for b in sims.neetocal_bookings()}
    assert set(bookings) == {"ann@example.com", "bob@example.com", "cy@example.com"}
    assert {b["meeting_slug"] for b in bookings.values()} == {view["neetocal"]["meeting_slug"]}
    [link] = [m for m in sims.get("neetocal", "meetings")["meetings"]
              if m["slug"] == view["neetocal"]["meeting_slug"]]
    assert link["kind"] == "grouped"
    assert all(answers(b)["zoom_join_url"] == join_url for b in bookings.values())
    assert answers(bookings["ann@example.com"])["guest_email_s"] == ["sam@example.com", "charlie@example.com"]
    assert "guest_email_s" not in answers(bookings["bob@example.com"])
    assert bookings["bob@example.com"]["time_zone"] == "America/New_York"
    assert len(view["neetocal"]["bookings"]) == 3

    leave(sims, appt, 1)  # Bob leaves
    wait_until(lambda: {b["email"] for b in sims.neetocal_bookings()} == {"ann@example.com", "cy@example.com"},
               message="Bob's booking to be cancelled")
    view = stack.wait_for_status(appt["id"], "synced")
    assert len(sims.zoom_meetings()) == 1, "the meeting stays while anyone remains"
    assert [b["status"] for b in sims.neetocal_bookings(live_only=False) if b["email"] == "bob@example.com"] == [
        "cancelled"]
    if readback:
        assert sims.calls("meetergo", "GET", f"/v4/appointment/{appt['id']}"), "the read-back decided"

    leave(sims, appt, 0)  # Ann leaves
    wait_until(lambda: {b["email"] for b in sims.neetocal_bookings()} == {"cy@example.com"},
               message="Ann's booking to be cancelled")
    leave(sims, appt, 2)  # the last one leaves: meetergo cancels the appointment
    stack.wait_for_status(appt["id"], "cancelled")
    assert sims.zoom_meetings() == [] and sims.neetocal_bookings() == []
    assert len(sims.zoom_meetings(live_only=False)) == 1, "one meeting all along"


def test_meetergos_own_zoom_meeting_is_adopted_not_made_twice(stack: Stack, sims: Sims) -> None:
    made = meeting_made_by_meetergo(stack)
    appt = appointment()
    appt["meetingInfo"]["meetingLink"] = made.join_url
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert len(sims.zoom_meetings(live_only=False)) == 1
    assert view["zoom"]["meeting_id"] == made.id and view["zoom"]["made_by"] == "meetergo"
    assert view["host_link"] and view["zoom"]["start_url_expires_at"], "its start_url is kept fresh as usual"
    [booking] = sims.neetocal_bookings()
    assert answers(booking)["zoom_join_url"] == made.join_url


@pytest.mark.parametrize("link, foreign", [
    ("https://zoom.sandbox/j/98765432101?pwd=elsewhere", "https://zoom.sandbox/j/98765432101?pwd=elsewhere"),
    # A start link (a host's "Start" link pasted as the meeting type's link) logs its holder in as the host: the
    # attendee gets the meeting's join form, its passcode and nothing else.
    ("https://zoom.sandbox/s/98765432101?zak=eyJ0eXAi.HOST-SECRET&pwd=elsewhere",
     "https://zoom.sandbox/j/98765432101?pwd=elsewhere"),
    ("https://zoom.sandbox/j/98765432101?tk=HOST-SECRET", "https://zoom.sandbox/j/98765432101"),
], ids=["join", "start-link", "token"])
def test_a_zoom_link_outside_the_account_is_the_join_url_and_offers_no_host_link(stack: Stack, sims: Sims,
                                                                                  link: str, foreign: str) -> None:
    appt = appointment()
    appt["meetingInfo"]["meetingLink"] = link
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert sims.zoom_meetings(live_only=False) == [] and not sims.calls("zoom", "POST", "/meetings")
    assert sims.calls("zoom", "GET", "/meetings/98765432101"), "the meeting was looked up"
    assert view["zoom"]["join_url"] == foreign and view["host_link"] is None
    assert "outside this Zoom account" in view["zoom"]["none_because"]
    [booking] = sims.neetocal_bookings()
    assert answers(booking)["zoom_join_url"] == foreign


def test_off_grid_and_overlapping_appointments_are_booked_and_strangers_are_refused(stack: Stack,
                                                                                    sims: Sims) -> None:
    odd = appointment(hour=10, minute=7)
    first = appointment(hour=14, attendee={"email": "eve@example.com", "firstname": "Eve"})
    overlapping = appointment(hour=14, minute=15, attendee={"email": "max@example.com", "firstname": "Max"})
    for appt in (odd, first, overlapping):
        stack.deliver(meetergo_sim.booking_created(appt))
    for appt in (odd, first, overlapping):
        view = stack.wait_for_status(appt["id"], "synced")
        assert view["warning"] is None
    assert len(sims.neetocal_bookings()) == 3
    assert all(call["json"]["override_availability"] is True for call in sims.calls("neetocal", "POST", "/bookings"))
    [link] = [m for m in sims.get("neetocal", "meetings")["meetings"] if m["slug"] == view["neetocal"]["meeting_slug"]]
    assert not sims.calls("neetocal", "PATCH", "/availabilities"), "the host's schedule is not meetbridge's to edit"

    # A stranger books the host directly on the mirror link, for 03:00 on a Sunday (as its public page would):
    # the link keeps the host's own hours, which meetbridge's bookings pass over and a stranger's do not.
    sunday = datetime.now(UTC).date() + timedelta(days=(6 - datetime.now(UTC).weekday()) % 7 + 7)
    refused = httpx.post(f"{sims.url('neetocal')}/api/external/v2/bookings",
                         headers={"X-Api-Key": "sandbox-neetocal-key"},
                         json={"meeting_slug": link["slug"], "name": "Stranger", "email": "stranger@example.com",
                               "slot_date": sunday.isoformat(), "slot_start_time": "03:00 AM", "time_zone": "UTC"})
    assert refused.status_code == 422, refused.text
    assert len(sims.neetocal_bookings()) == 3


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_mirror_links_leave_the_hosts_own_schedule_and_links_as_they_were(make_stack, sims: Sims,
                                                                           neetocal: str) -> None:
    """A link's availability is the host's schedule, shared with the host's other links: editing it through the
    link ("if the availability is used elsewhere, that would also be updated") would close (v2) or open around
    the clock (v1) every link the host already has."""
    api = httpx.Client(base_url=f"{sims.url('neetocal')}/api/external/{neetocal}",
                       headers={"X-Api-Key": "sandbox-neetocal-key"}, timeout=10)
    own = api.post("/meetings", json={"slug": "john-consulting", "name": "Consulting", "hosts": ["john@example.com"],
                                      "duration": 30}).json()["meeting"]
    stack = make_stack(**neetocal_env(sims, neetocal))
    appt = appointment(hour=20)  # outside the host's hours: v1 books it only on a link with hours of its own
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["warning"] is None and len(sims.neetocal_bookings()) == 1
    assert_neetocal_calls_fit(sims, neetocal)

    links = {m["slug"]: m for m in sims.get("neetocal", "meetings")["meetings"]}
    weekdays_nine_to_five = [{"wday": day, "start_time": "09:00 AM", "end_time": "05:00 PM"}
                             for day in ("monday", "tuesday", "wednesday", "thursday", "friday")]
    assert links[own["slug"]]["availability"]["periods"] == weekdays_nine_to_five, "the host's own link is as it was"
    [working_hours] = [a for a in sims.get("neetocal", "availabilities")["availabilities"] if a["default"]]
    assert working_hours["periods"] == weekdays_nine_to_five, "the host's schedule is as it was"
    sunday = datetime.now(UTC).date() + timedelta(days=(6 - datetime.now(UTC).weekday()) % 7 + 7)
    stranger = {"meeting_slug": own["slug"], "name": "Stranger", "email": "stranger@example.com",
                "slot_date": sunday.isoformat(), "slot_start_time": "03:00 AM", "time_zone": "UTC"}
    assert api.post("/bookings", json=stranger).status_code == 422, "the host's own link is not opened all day"
    mirror = links[view["neetocal"]["meeting_slug"]]
    if neetocal == "v1":  # a schedule of the mirror link's own, open all day
        [made] = sims.calls("neetocal", "POST", "/availability/create")
        assert made["json"]["email"] == "john@example.com"
        assert len(mirror["availability"]["periods"]) == 7
    else:
        assert not [c for c in sims.requests("neetocal") if "availabilit" in c["path"]]

    # The link cache lapses (a week on, a Redis restart): the link is set up again, but a schedule is made once,
    # since each create makes one more.
    redis.Redis.from_url(stack.env["REDIS_URL"]).delete(KEYS.neetocal_link(mirror["slug"]))
    second = appointment(hour=21, attendee={"email": "eve@example.com", "firstname": "Eve"})
    stack.deliver(meetergo_sim.booking_created(second))
    assert stack.wait_for_status(second["id"], "synced")["neetocal"]["meeting_slug"] == mirror["slug"]
    assert len(sims.calls("neetocal", "GET", "/meetings")) >= 2, "the link was looked up again"
    assert len(sims.calls("neetocal", "POST", "/availability/create")) == (1 if neetocal == "v1" else 0)
    assert len(sims.get("neetocal", "availabilities")["availabilities"]) == (2 if neetocal == "v1" else 1)


def test_a_neetocal_refusal_is_a_warning_counted_and_shown_not_a_dead_letter(stack: Stack, sims: Sims,
                                                                             redis_client: redis.Redis) -> None:
    # Under way: it began ten minutes ago, so NeetoCal refuses a booking in the past; the host still needs Zoom.
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    appt = appointment()
    appt.update(start=began.isoformat(), end=(began + timedelta(minutes=40)).isoformat())
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["zoom"]["meeting_id"] and view["error"] is None
    assert "NeetoCal refused the booking of customer@example.com" in view["warning"]
    assert [r["status"] for r in sims.calls("neetocal", "POST", "/bookings")] == [422], "refused once, not retried"
    assert redis_client.zscore(KEYS.dead_letter, appt["id"]) is None
    assert redis_client.zscore(KEYS.neetocal_refused, appt["id"]) is not None
    wait_until(lambda: metric(stack, "meetbridge_neetocal_refused_total") == 1, timeout=5,
               message="the refusal counted")
    doctor = run_doctor(stack.env)
    assert "NeetoCal refused a booking of 1 appointment(s)" in doctor.stdout, doctor.stdout


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_booking_cancelled_in_neetocal_is_booked_again_at_the_next_sync(make_stack, sims: Sims,
                                                                          neetocal: str) -> None:
    stack = make_stack(**neetocal_env(sims, neetocal))
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    sid = view["neetocal"]["booking_sid"]
    # The attendee cancels the copy in NeetoCal (its own links, or a declined calendar invitation).
    api = httpx.Client(base_url=f"{sims.url('neetocal')}/api/external/{neetocal}",
                       headers={"X-Api-Key": "sandbox-neetocal-key"})
    if neetocal == "v2":
        api.patch(f"/bookings/{sid}", json={"status": "cancelled"}).raise_for_status()
    else:
        api.post(f"/bookings/{sid}/cancel", json={}).raise_for_status()
    later = {**appt, "start": (datetime.fromisoformat(appt["start"]) + timedelta(hours=1)).isoformat(),
             "end": (datetime.fromisoformat(appt["end"]) + timedelta(hours=1)).isoformat()}
    later["updatedAt"] = later["rescheduledAt"] = (datetime.now(UTC)).isoformat()
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: len(sims.neetocal_bookings()) == 1 and sims.neetocal_bookings()[0]["sid"] != sid,
               message="the booking to be made again")
    view = stack.wait_for_status(appt["id"], "synced")
    assert "neetocal_booking_rebooked" in [entry["event"] for entry in view["history"]]
    [booking] = sims.neetocal_bookings()
    assert booking["starts_at"] == datetime.fromisoformat(later["start"]).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert view["error"] is None and view["neetocal"]["booking_sid"] == booking["sid"]
    if neetocal == "v2":
        assert_neetocal_calls_fit(sims, neetocal)


def test_a_reschedule_zoom_refuses_during_the_meeting_still_moves_the_neetocal_booking(stack: Stack,
                                                                                       sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    sims.post("zoom", f"meetings/{view['zoom']['meeting_id']}/start", {})  # the host is in the meeting
    later = {**appt, "start": (datetime.fromisoformat(appt["start"]) + timedelta(hours=2)).isoformat(),
             "end": (datetime.fromisoformat(appt["end"]) + timedelta(hours=2)).isoformat()}
    later["updatedAt"] = later["rescheduledAt"] = datetime.now(UTC).isoformat()
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: sims.calls("neetocal", "PATCH", "/bookings/"), message="the NeetoCal booking to move")
    view = stack.wait_for_status(appt["id"], "synced")
    [kept] = [e for e in view["history"] if e["event"] == "zoom_meeting_kept"]
    assert "3000" in kept["detail"]
    [booking] = sims.neetocal_bookings()
    assert booking["starts_at"] == datetime.fromisoformat(later["start"]).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert [r["status"] for r in sims.calls("zoom", "PATCH", "/meetings/")] == [400], "not sent again"


def test_a_cancelled_group_cancels_every_booking_even_when_one_is_gone_from_neetocal(
        stack: Stack, sims: Sims, redis_client: redis.Redis) -> None:
    """One attendee's booking was deleted in NeetoCal (its read answers 404): the others must not stay live, with a
    join URL to a meeting that is gone."""
    appt = group_appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    record = KEYS.appointment(appt["id"])
    bookings = json.loads(redis_client.hget(record, "neetocal_bookings"))
    bookings["ann@example.com"]["sid"] = "deleted-in-neetocal"  # the simulator has no delete: a sid it never made
    redis_client.hset(record, "neetocal_bookings", json.dumps(bookings))
    stack.deliver(cancelled_payload(appt))
    view = stack.wait_for_status(appt["id"], "cancelled")
    assert view["error"] is None and view["neetocal"]["bookings"] == []
    statuses = {b["email"]: b["status"] for b in sims.get("neetocal", "bookings")["bookings"]}
    assert statuses["bob@example.com"] == statuses["cy@example.com"] == "cancelled"


def test_a_scheduling_link_deleted_in_neetocal_is_made_again_not_booked_on_for_a_week(
        stack: Stack, sims: Sims, redis_client: redis.Redis) -> None:
    """The service keeps each link's identity for a week; one deleted in NeetoCal meanwhile refuses every booking
    (404): the cache forgets it and the next attempt finds (or makes) the link again."""
    first = appointment(hour=9)
    stack.deliver(meetergo_sim.booking_created(first))
    stack.wait_for_status(first["id"], "synced")
    [cached] = redis_client.keys(KEYS.neetocal_link("*"))
    link = json.loads(redis_client.get(cached))
    redis_client.set(cached, json.dumps({**link, "sid": "deleted", "slug": "deleted-in-neetocal"}))

    later = appointment(hour=12)
    stack.deliver(meetergo_sim.booking_created(later))
    view = stack.wait_for_status(later["id"], "synced")
    assert view["neetocal"]["meeting_slug"] == link["slug"]
    assert json.loads(redis_client.get(cached))["slug"] == link["slug"]
    assert len(sims.neetocal_bookings()) == 2
