"""Exactly-once, shown on purpose: each write whose answer is lost (applied, then the connection dropped) is
looked up and adopted on the next attempt, never made twice."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from typing import Any

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import (
    Sims,
    Stack,
    appointment,
    cancelled_payload,
    future_start,
    meeting_made_by_meetergo,
    moved,
    wait_until,
)
from workers.state import KEYS


def lose_the_answer(sims: Sims, name: str, method: str, path: str) -> None:
    """The next matching call is applied, then its connection is dropped before the answer."""
    sims.configure(name, scripted_faults=[{"method": method, "path": path, "kind": "reset", "after_commit": True,
                                           "times": 1}])


def booked_then_changed(stack: Stack, sims: Sims, name: str, method: str, path: str, *,
                        booked: dict[str, Any] | None = None, start: datetime | None = None,
                        **changes: Any) -> dict[str, Any]:
    """A new booking (`booked`, or a Zoom appointment) whose `method path` call to `name` is applied and its answer
    lost; before the retry, meetergo changes the appointment by `changes` (at `start`, or the same time). Returns the
    appointment as first booked."""
    lose_the_answer(sims, name, method, path)
    appt = booked or appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    wait_until(lambda: faulted(sims, name), message="the answer to be lost")
    changed = moved(appt, start or datetime.fromisoformat(appt["start"]), **changes)
    stack.deliver(meetergo_sim.booking_rescheduled(changed, appt["start"]))
    return appt


def to_maria() -> dict[str, Any]:
    maria = meetergo_sim.host_entry(meetergo_sim.MARIA)
    return {"hosts": [maria], "hostIds": [maria["id"]]}


def history(stack: Stack, appointment_id: str) -> list[str]:
    return [entry["event"] for entry in stack.appointment(appointment_id)["history"]]


def faulted(sims: Sims, name: str) -> list[dict]:
    return [r for r in sims.requests(name) if r["fault"]]


def after(sims: Sims, name: str, seq: int, method: str, path: str) -> list[dict]:
    return [r for r in sims.calls(name, method, path) if r["seq"] > seq]


LONG_NAME = "Quarterly portfolio review and retirement planning consultation, including a look at " \
            "pension statements, insurance policies, tax-advantaged accounts and the estate plan"


@pytest.mark.parametrize("meeting_type", ["short", "long"])
def test_a_lost_zoom_create_answer_is_adopted(stack: Stack, sims: Sims, meeting_type: str) -> None:
    """Found by the marker on its agenda's last line, which Zoom's meeting list cuts to 250 characters: a long
    topic (a long meeting type name and the attendee's) must not push the marker out of what the list shows."""
    lose_the_answer(sims, "zoom", "POST", "/users/")
    appt = appointment()
    if meeting_type == "long":
        appt["meetingType"]["meetingInfo"]["name"] = LONG_NAME
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")

    [lost] = faulted(sims, "zoom")
    assert lost["applied"] and lost["status"] is None
    assert after(sims, "zoom", lost["seq"], "GET", "/users/john@example.com/meetings"), "no look-up was made"
    assert len(sims.zoom_meetings(live_only=False)) == 1
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1
    assert view["zoom"]["meeting_id"] == sims.zoom_meetings()[0]["id"]
    assert "zoom_create_adopted" in history(stack, appt["id"])
    assert len(sims.neetocal_bookings()) == 1


def test_a_lost_zoom_update_answer_is_adopted(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    lose_the_answer(sims, "zoom", "PATCH", "/meetings/")
    later = moved(appt, future_start(days=5, hour=9))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: "zoom_update_adopted" in history(stack, appt["id"]), message="the update to be adopted")
    view = stack.wait_for_status(appt["id"], "synced")

    [lost] = faulted(sims, "zoom")
    assert lost["applied"] and lost["method"] == "PATCH"
    meeting_id = view["zoom"]["meeting_id"]
    assert after(sims, "zoom", lost["seq"], "GET", f"/meetings/{meeting_id}"), "no look-up was made"
    assert len(sims.calls("zoom", "PATCH", "/meetings/")) == 1  # not sent again: one quota unit spent
    [meeting] = sims.zoom_meetings(live_only=False)
    assert meeting["start_time"].startswith(future_start(days=5).date().isoformat())
    assert meeting["patches"] == 1


def test_a_lost_neetocal_booking_answer_is_adopted(stack: Stack, sims: Sims) -> None:
    lose_the_answer(sims, "neetocal", "POST", "/bookings")
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")

    [lost] = faulted(sims, "neetocal")
    assert lost["applied"]
    assert after(sims, "neetocal", lost["seq"], "GET", "/bookings"), "no look-up was made"
    [booking] = sims.neetocal_bookings(live_only=False)
    assert view["neetocal"]["booking_sid"] == booking["sid"]
    assert len([r for r in sims.calls("neetocal", "POST", "/bookings") if not r["path"].endswith("/cancel")]) == 1
    assert "neetocal_create_adopted" in history(stack, appt["id"])


def test_a_lost_neetocal_reschedule_answer_is_adopted(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    sid = view["neetocal"]["booking_sid"]
    lose_the_answer(sims, "neetocal", "PATCH", "/bookings/")
    later = moved(appt, future_start(days=5, hour=9))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: "neetocal_reschedule_adopted" in history(stack, appt["id"]),
               message="the reschedule to be adopted")
    stack.wait_for_status(appt["id"], "synced")

    [lost] = faulted(sims, "neetocal")
    assert lost["applied"] and lost["method"] == "PATCH"
    assert after(sims, "neetocal", lost["seq"], "GET", f"/bookings/{sid}"), "no look-up was made"
    assert len(sims.calls("neetocal", "PATCH", "/bookings/")) == 1
    [booking] = sims.neetocal_bookings(live_only=False)
    assert booking["starts_at"].startswith(future_start(days=5).date().isoformat())


@pytest.mark.slow
def test_a_worker_killed_between_zoom_and_neetocal_resumes_where_it_stopped(make_stack, sims: Sims,
                                                                           redis_client: redis.Redis) -> None:
    # The NeetoCal booking call is held unanswered: the worker dies while waiting for it.
    sims.configure("neetocal", timeout_seconds=2, scripted_faults=[
        {"method": "POST", "path": "/bookings", "kind": "timeout", "times": 1}])
    stack = make_stack(workers=0)
    worker = stack.start_worker()
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    wait_until(lambda: sims.calls("neetocal", "POST", "/bookings"), message="the NeetoCal booking call")
    worker.kill(signal.SIGKILL)
    record = redis_client.hgetall(KEYS.appointment(appt["id"]))
    [entry] = json.loads(record["neetocal_bookings"]).values()
    assert record.get("zoom_meeting_id") and entry.get("create_pending"), record
    assert "sid" not in entry
    [held] = sims.calls("neetocal", "POST", "/bookings")

    stack.start_worker()
    view = stack.wait_for_status(appt["id"], "synced", timeout=60)
    # The restarted worker resumed from the record: no second Zoom create; it looked for the booking first.
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1
    assert len(sims.zoom_meetings(live_only=False)) == 1
    assert after(sims, "neetocal", held["seq"], "GET", "/bookings"), "no look-up was made"
    [booking] = sims.neetocal_bookings(live_only=False)
    assert view["neetocal"]["booking_sid"] == booking["sid"]
    assert booking["form_responses"]["zoom_join_url"] == view["zoom"]["join_url"]
    assert datetime.fromisoformat(view["history"][-1]["at"].replace("Z", "+00:00"))


def test_after_a_lost_create_each_appointment_adopts_its_own_meeting_only(stack: Stack, sims: Sims) -> None:
    # appt-12345 exists first, and its attendee's name imitates appt-1234's marker.
    impostor = appointment(id="appt-12345", hour=9, attendee={
        "email": "eve@example.com", "firstname": "Eve", "lastname": "\n[meetbridge:appt-1234]"})
    stack.deliver(meetergo_sim.booking_created(impostor))
    first = stack.wait_for_status("appt-12345", "synced")
    lose_the_answer(sims, "zoom", "POST", "/users/")
    own = appointment(id="appt-1234", hour=11)
    stack.deliver(meetergo_sim.booking_created(own))
    second = stack.wait_for_status("appt-1234", "synced")

    assert "zoom_create_adopted" in history(stack, "appt-1234")
    assert second["zoom"]["meeting_id"] != first["zoom"]["meeting_id"]
    meetings = {m["id"]: m for m in sims.zoom_meetings(live_only=False)}
    assert len(meetings) == 2
    assert meetings[second["zoom"]["meeting_id"]]["agenda"].splitlines()[-1] == "[meetbridge:appt-1234]"
    assert meetings[first["zoom"]["meeting_id"]]["agenda"].splitlines()[-1] == "[meetbridge:appt-12345]"
    assert "\n[meetbridge:appt-1234]" not in meetings[first["zoom"]["meeting_id"]]["agenda"]


def test_a_run_that_fails_at_neetocal_records_the_zoom_meeting_it_made(stack: Stack, sims: Sims) -> None:
    """The meeting's result rides on the run's next write; a run that fails before that write (here: looking up
    the host's scheduling link, before the booking's pending note) still records it, so the retry neither looks
    for the meeting nor makes another."""
    sims.configure("neetocal", scripted_faults=[{"method": "GET", "path": "/meetings", "kind": "500", "times": 3}])
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced", timeout=60)

    assert len(faulted(sims, "neetocal")) == 3  # the first run failed at NeetoCal, after its in-call retries
    assert "retry" in history(stack, appt["id"])
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1
    assert not sims.calls("zoom", "GET", "/users/john@example.com/meetings"), "the retry looked for the meeting"
    assert history(stack, appt["id"]).count("zoom_meeting_created") == 1
    assert view["zoom"]["meeting_id"] == sims.zoom_meetings()[0]["id"]


def test_no_write_reaches_neetocal_while_the_zoom_meeting_is_unrecorded(stack: Stack, sims: Sims,
                                                                        redis_client: redis.Redis) -> None:
    """A new host's first booking creates the host's NeetoCal link between the Zoom create and the booking. The
    meeting is in Redis before that write goes out, so a crash during it leaves nothing made and unrecorded."""
    sims.configure("neetocal", timeout_seconds=3,
                   scripted_faults=[{"method": "POST", "path": "/meetings", "kind": "timeout", "times": 1}])
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    wait_until(lambda: sims.calls("neetocal", "POST", "/meetings"), message="the link's creation to be under way")

    assert redis_client.hget(KEYS.appointment(appt["id"]), "zoom_meeting_id") == str(sims.zoom_meetings()[0]["id"])
    stack.wait_for_status(appt["id"], "synced", timeout=60)
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1


def test_a_lost_create_answer_then_a_new_host_leaves_no_meeting_behind(stack: Stack, sims: Sims) -> None:
    """The create for John is applied and its answer lost; before the retry the appointment passes to Maria. The
    retry creates Maria's meeting and looks for John's, which it deletes: no meeting lives on unrecorded."""
    appt = booked_then_changed(stack, sims, "zoom", "POST", "/users/", **to_maria())
    wait_until(lambda: [m["host_email"] for m in sims.zoom_meetings()] == ["maria@example.com"], timeout=30,
               message="the meeting to be Maria's, and John's gone")
    stack.wait_for_status(appt["id"], "synced")

    [lost] = faulted(sims, "zoom")
    assert after(sims, "zoom", lost["seq"], "GET", "/users/john@example.com/meetings"), "John's was not looked for"
    assert [m["host_email"] for m in sims.zoom_meetings()] == ["maria@example.com"]
    assert len(sims.zoom_meetings(live_only=False)) == 2  # John's was made, then deleted


def test_a_lost_create_answer_then_meetergos_own_meeting_leaves_no_meeting_behind(stack: Stack, sims: Sims) -> None:
    """meetbridge's create is applied and its answer lost; then meetergo's own Zoom integration gives the appointment
    a meeting of its own. The retry uses meetergo's and deletes the one it had made."""
    made = meeting_made_by_meetergo(stack)
    appt = booked_then_changed(stack, sims, "zoom", "POST", "/users/",
                               meetingInfo={"channel": "zoom", "meetingLink": made.join_url})
    wait_until(lambda: [m["id"] for m in sims.zoom_meetings()] == [made.id], timeout=30,
               message="meetergo's meeting alone to be left")

    view = stack.wait_for_status(appt["id"], "synced")
    assert view["zoom"]["meeting_id"] == made.id and view["zoom"]["made_by"] == "meetergo"
    assert len(sims.zoom_meetings(live_only=False)) == 2  # meetbridge's was made, then deleted


def test_a_lost_booking_answer_then_a_new_link_leaves_one_booking(stack: Stack, sims: Sims) -> None:
    """The booking is made and its answer lost; before the retry the appointment passes to Maria, so the booking
    belongs on her link. The retry finds the first booking by the join URL it carried and cancels it."""
    appt = booked_then_changed(stack, sims, "neetocal", "POST", "/bookings", **to_maria())
    wait_until(lambda: len(sims.neetocal_bookings(live_only=False)) == 2 and len(sims.neetocal_bookings()) == 1,
               timeout=30, message="the first booking cancelled and one made on Maria's link")

    view = stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings()
    assert booking["sid"] == view["neetocal"]["booking_sid"]
    assert "maria" in view["neetocal"]["meeting_slug"]
    assert "neetocal_booking_cancelled" in history(stack, appt["id"])


def test_a_lost_booking_answer_then_a_new_join_url_leaves_one_booking(stack: Stack, sims: Sims) -> None:
    """The booking is made with our meeting's join URL and its answer lost; before the retry meetergo's own Zoom
    integration gives the appointment a meeting of its own, on the same link. The retry cannot find the first
    booking by the new URL: it looks for it by the URL it carried, cancels it and books with the live one."""
    made = meeting_made_by_meetergo(stack)
    appt = booked_then_changed(stack, sims, "neetocal", "POST", "/bookings",
                               meetingInfo={"channel": "zoom", "meetingLink": made.join_url})
    wait_until(lambda: len(sims.neetocal_bookings(live_only=False)) == 2 and len(sims.neetocal_bookings()) == 1,
               timeout=30, message="the first booking cancelled and one made with meetergo's join URL")

    view = stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings()
    assert booking["sid"] == view["neetocal"]["booking_sid"]
    assert made.join_url in json.dumps(booking)
    [first] = [b for b in sims.neetocal_bookings(live_only=False) if b["status"] == "cancelled"]
    assert made.join_url not in json.dumps(first)
    assert "neetocal_booking_cancelled" in history(stack, appt["id"])


def test_a_lost_booking_answer_then_a_new_time_moves_the_booking_it_adopts(stack: Stack, sims: Sims) -> None:
    """The booking is made and its answer lost; before the retry the appointment moves (same host, same meeting).
    The retry finds the booking by its join URL, at the old time, and moves it: adopted, not left behind."""
    appt = booked_then_changed(stack, sims, "neetocal", "POST", "/bookings", start=future_start(days=5, hour=9))
    wait_until(lambda: "neetocal_create_adopted" in history(stack, appt["id"]), message="the booking to be adopted")

    view = stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings(live_only=False)
    assert booking["sid"] == view["neetocal"]["booking_sid"]
    assert booking["starts_at"].startswith(future_start(days=5).date().isoformat()), booking["starts_at"]
    assert len(sims.calls("neetocal", "PATCH", "/bookings/")) == 1


# A booking without a join URL (not a Zoom appointment) is found by its time and host instead.
def test_a_lost_booking_answer_without_a_join_url_then_a_new_time_moves_the_booking(stack: Stack,
                                                                                     sims: Sims) -> None:
    appt = booked_then_changed(stack, sims, "neetocal", "POST", "/bookings", booked=appointment(channel="phone"),
                               start=future_start(days=5, hour=9))
    wait_until(lambda: "neetocal_create_adopted" in history(stack, appt["id"]), message="the booking to be adopted")

    stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings(live_only=False)
    assert booking["starts_at"].startswith(future_start(days=5).date().isoformat()), booking["starts_at"]


def test_a_lost_booking_answer_without_a_join_url_then_a_new_host_leaves_one_booking(stack: Stack,
                                                                                      sims: Sims) -> None:
    appt = booked_then_changed(stack, sims, "neetocal", "POST", "/bookings", booked=appointment(channel="phone"),
                               **to_maria())
    view = stack.wait_for_status(appt["id"], "synced")
    [booking] = sims.neetocal_bookings()
    assert booking["sid"] == view["neetocal"]["booking_sid"] and "maria" in booking["meeting_slug"]
    assert len(sims.neetocal_bookings(live_only=False)) == 2
    assert "neetocal_booking_cancelled" in history(stack, appt["id"])


def test_a_lost_booking_answer_without_a_join_url_then_a_cancel_leaves_no_booking(stack: Stack, sims: Sims) -> None:
    lose_the_answer(sims, "neetocal", "POST", "/bookings")
    appt = appointment(channel="phone")
    stack.deliver(meetergo_sim.booking_created(appt))
    wait_until(lambda: faulted(sims, "neetocal"), message="the answer to be lost")
    stack.deliver(cancelled_payload(appt))
    stack.wait_for_status(appt["id"], "cancelled")

    [booking] = sims.neetocal_bookings(live_only=False)
    assert booking["status"] == "cancelled"
