"""Issue 4: reschedules and cancellations follow the appointment, in any order of arrival."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox import meetergo as meetergo_sim
from tests.support import (
    NEETOCAL_VERSIONS,
    Sims,
    Stack,
    appointment,
    assert_neetocal_calls_fit,
    cancelled_payload,
    future_start,
    moved,
    neetocal_env,
    neetocal_writes,
    wait_until,
)

ZOOM_TIME = "%Y-%m-%dT%H:%M:%SZ"


def utc(moment: datetime | str) -> str:
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.astimezone(UTC).strftime(ZOOM_TIME)


def settled(stack: Stack, appointment_id: str, runs: int) -> dict[str, Any]:
    """Wait until the appointment's sync has finished `runs` times in all."""
    def done() -> dict[str, Any] | None:
        view = stack.appointment(appointment_id)
        finished = [h for h in view["history"] if h["event"] in ("synced", "cancelled", "failed")] if view else []
        return view if len(finished) >= runs and view["status"] != "pending" else None

    return wait_until(done, timeout=30, message=f"{appointment_id} to finish {runs} sync(s)")


def writes(sims: Sims) -> dict[str, int]:
    """What the service changed on each side, by kind of call (answered ones only)."""
    def count(name: str, method: str, part: str, suffix: str = "") -> int:
        return len([r for r in sims.calls(name, method, part)
                    if r["status"] and r["status"] < 400 and r["path"].endswith(suffix)])

    return {
        "zoom_create": count("zoom", "POST", "/meetings"),
        "zoom_update": count("zoom", "PATCH", "/meetings/"),
        "zoom_delete": count("zoom", "DELETE", "/meetings/"),
        **neetocal_writes(sims),
    }


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_create_reschedule_cancel(make_stack, sims: Sims, neetocal: str) -> None:
    stack = make_stack(**neetocal_env(sims, neetocal))
    appt = appointment(hour=10)
    stack.deliver(meetergo_sim.booking_created(appt))
    settled(stack, appt["id"], 1)

    new_start = future_start(days=4, hour=15)
    later = moved(appt, new_start)
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    settled(stack, appt["id"], 2)
    [meeting] = sims.zoom_meetings()
    assert (meeting["start_time"], meeting["duration"]) == (utc(new_start), 30)
    [booking] = sims.neetocal_bookings()
    assert booking["starts_at"] == utc(new_start)

    stack.deliver(cancelled_payload(later, reason="Client cancelled"))
    view = settled(stack, appt["id"], 3)
    assert view["status"] == "cancelled"
    assert sims.zoom_meetings() == []
    assert sims.neetocal_bookings() == []
    [deleted] = sims.zoom_meetings(live_only=False)
    assert deleted["deleted_query"]["cancel_meeting_reminder"] == "false"  # no reminder emails unless configured
    [cancelled] = sims.neetocal_bookings(live_only=False)
    assert cancelled["cancel_reason"] == "Client cancelled"
    assert writes(sims) == {"zoom_create": 1, "zoom_update": 1, "zoom_delete": 1,
                            "neetocal_book": 1, "neetocal_reschedule": 1, "neetocal_cancel": 1}
    assert view["zoom"]["meeting_id"] is None
    assert_neetocal_calls_fit(sims, neetocal)


def test_cancel_before_create_leaves_a_tombstone(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(cancelled_payload(appt))
    settled(stack, appt["id"], 1)
    stack.deliver(meetergo_sim.booking_created(appt))
    view = settled(stack, appt["id"], 2)
    assert view["status"] == "cancelled"
    assert sims.zoom_meetings(live_only=False) == []
    assert sims.neetocal_bookings(live_only=False) == []
    assert writes(sims) == dict.fromkeys(writes(sims), 0)


@pytest.mark.parametrize("cancel_shape", ["webhook", "rest"])
def test_both_cancel_shapes_cancel(stack: Stack, sims: Sims, cancel_shape: str) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    settled(stack, appt["id"], 1)
    stack.deliver(cancelled_payload(appt, shape=cancel_shape))
    assert settled(stack, appt["id"], 2)["status"] == "cancelled"
    assert sims.zoom_meetings() == [] and sims.neetocal_bookings() == []


def test_reschedule_before_create_is_applied_when_the_create_comes(stack: Stack, sims: Sims) -> None:
    appt = appointment(hour=10)
    new_start = future_start(days=5, hour=8)
    stack.deliver(meetergo_sim.booking_rescheduled(moved(appt, new_start), appt["start"]))
    stack.deliver(meetergo_sim.booking_created(appt))
    wait_until(lambda: stack.appointment(appt["id"])["status"] == "synced", timeout=30)
    settled(stack, appt["id"], 2)
    [meeting] = sims.zoom_meetings()
    assert meeting["start_time"] == utc(new_start)
    [booking] = sims.neetocal_bookings()
    assert booking["starts_at"] == utc(new_start)
    counts = writes(sims)
    assert (counts["zoom_create"], counts["zoom_update"], counts["neetocal_book"],
            counts["neetocal_reschedule"]) == (1, 0, 1, 0)


def test_the_same_event_three_times(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    answers = [stack.deliver(meetergo_sim.booking_created(appt)).json()["status"] for _ in range(3)]
    assert answers == ["accepted", "duplicate", "duplicate"]
    settled(stack, appt["id"], 1)
    assert len(sims.zoom_meetings()) == 1 and len(sims.neetocal_bookings()) == 1
    assert writes(sims)["zoom_create"] == 1


def test_two_reschedules_delivered_newest_first(stack: Stack, sims: Sims) -> None:
    appt = appointment(hour=10)
    stack.deliver(meetergo_sim.booking_created(appt))
    settled(stack, appt["id"], 1)
    first = moved(appt, future_start(days=4, hour=11), seconds_later=1)
    second = moved(appt, future_start(days=4, hour=16), seconds_later=2)
    stack.deliver(meetergo_sim.booking_rescheduled(second, appt["start"]))
    settled(stack, appt["id"], 2)
    stack.deliver(meetergo_sim.booking_rescheduled(first, appt["start"]))  # stale: must not undo the newer one
    settled(stack, appt["id"], 3)
    [meeting] = sims.zoom_meetings()
    assert meeting["start_time"] == utc(second["start"])
    [booking] = sims.neetocal_bookings()
    assert booking["starts_at"] == utc(second["start"])
    counts = writes(sims)
    assert (counts["zoom_update"], counts["neetocal_reschedule"]) == (1, 1)


def test_host_change_moves_the_meeting_and_the_booking(stack: Stack, sims: Sims) -> None:
    appt = appointment(hour=10)
    stack.deliver(meetergo_sim.booking_created(appt))
    first = settled(stack, appt["id"], 1)
    maria = meetergo_sim.host_entry(meetergo_sim.MARIA)
    john = meetergo_sim.host_entry(meetergo_sim.JOHN)
    handed_over = moved(appt, datetime.fromisoformat(appt["start"]), hosts=[maria, john],
                        hostIds=[maria["id"], john["id"]])
    stack.deliver(meetergo_sim.booking_rescheduled(handed_over, appt["start"]))
    view = settled(stack, appt["id"], 2)

    [meeting] = sims.zoom_meetings()
    assert meeting["host_email"] == "maria@example.com"
    assert meeting["settings"]["alternative_hosts"] == "john@example.com"
    assert meeting["id"] != first["zoom"]["meeting_id"] == sims.zoom_meetings(live_only=False)[0]["id"]
    [booking] = sims.neetocal_bookings()
    assert booking["host_email"] == "maria@example.com"
    assert booking["form_responses"]["zoom_join_url"] == view["zoom"]["join_url"]
    assert view["neetocal"]["meeting_slug"] != first["neetocal"]["meeting_slug"]
    assert writes(sims) == {"zoom_create": 2, "zoom_update": 0, "zoom_delete": 1,
                            "neetocal_book": 2, "neetocal_reschedule": 0, "neetocal_cancel": 1}


@pytest.mark.slow
def test_fifty_appointments_shuffled_against_four_workers_end_true(make_stack, sims: Sims) -> None:
    stack = make_stack(workers=4, concurrency=4)
    rng = random.Random(20261122)
    truth: dict[str, dict[str, Any]] = {}
    deliveries: list[dict[str, Any]] = []
    for n in range(50):
        host = {"id": f"host-{n}", "email": f"host{n}@example.com", "givenName": "Host", "familyName": str(n)}
        appt = appointment(days=2 + n % 5, hour=8, host=host)
        events = [meetergo_sim.booking_created(appt)]
        latest = appt
        for step in range(rng.randint(0, 2)):
            when = future_start(days=3 + rng.randint(0, 9), hour=9 + step, minute=15 * rng.randint(0, 3))
            latest = moved(latest, when)
            events.append(meetergo_sim.booking_rescheduled(latest, appt["start"]))
        cancelled = rng.random() < 0.3
        if cancelled:
            events.append(cancelled_payload(latest))
        # Repeats and shuffles, as at-least-once delivery brings them.
        events += rng.sample(events, k=rng.randint(0, len(events)))
        deliveries += events
        truth[appt["id"]] = {"cancelled": cancelled, "start": utc(latest["start"]), "host": host["email"]}
    rng.shuffle(deliveries)
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda payload: stack.deliver(payload).status_code, deliveries))
    assert set(statuses) == {202}

    def all_final() -> bool:
        views = {i: stack.appointment(i) for i in truth}
        return all(v["status"] == ("cancelled" if truth[i]["cancelled"] else "synced") for i, v in views.items())

    wait_until(all_final, timeout=120, interval=1, message="every appointment to reach its true final state")
    wait_until(lambda: stack.http is not None and _queue_empty(stack), timeout=60)

    meetings = {m["host_email"]: m for m in sims.zoom_meetings()}
    bookings = {b["host_email"]: b for b in sims.neetocal_bookings()}
    for appointment_id, want in truth.items():
        if want["cancelled"]:
            assert want["host"] not in meetings and want["host"] not in bookings, appointment_id
        else:
            assert meetings[want["host"]]["start_time"] == want["start"], appointment_id
            assert bookings[want["host"]]["starts_at"] == want["start"], appointment_id
    live = [t for t in truth.values() if not t["cancelled"]]
    assert len(sims.zoom_meetings()) == len(live) == len(sims.neetocal_bookings())
    # Never a second meeting for one appointment (each has a host of its own): one create each for the live
    # ones, at most one for those cancelled (none if the cancellation came first).
    creates = Counter(r["path"].split("/")[3] for r in sims.calls("zoom", "POST", "/meetings") if r["status"] == 201)
    for want in truth.values():
        assert creates[want["host"]] <= 1 if want["cancelled"] else creates[want["host"]] == 1, want


def _queue_empty(stack: Stack) -> bool:
    import redis

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    return client.llen("meetbridge") == 0
