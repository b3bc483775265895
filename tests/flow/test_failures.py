"""Failures are visible and recoverable; meetergo is asked before a doubtful cancellation (issues 4 and 5)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import redis

from sandbox import meetergo as meetergo_sim
from schemas.meetergo import parse_delivery
from tests.support import ADMIN_TOKEN, Sims, Stack, appointment, cancelled_payload, wait_until
from workers.state import KEYS
from workers.tasks import run_sync
from workers.wiring import build_services


def replay(stack: Stack, appointment_id: str) -> int:
    return stack.http.post(f"{stack.web_url}/api/appointments/{appointment_id}/replay",
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code


def test_unknown_host_fails_at_once_with_a_clear_reason_and_replay_heals_it(
        stack: Stack, sims: Sims, redis_client: redis.Redis) -> None:
    sims.configure("zoom", known_users=["john@example.com"])
    appt = appointment(host=meetergo_sim.MARIA)
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "failed")
    assert view["error"].startswith("zoom 404 (code 1001)")
    assert "maria@example.com" in view["error"]
    assert not [h for h in view["history"] if h["event"] == "retry"]  # permanent: no retries
    assert redis_client.zscore(KEYS.dead_letter, appt["id"]) is not None
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1

    sims.configure("zoom", known_users=None)
    assert replay(stack, appt["id"]) == 202
    stack.wait_for_status(appt["id"], "synced")
    assert redis_client.zscore(KEYS.dead_letter, appt["id"]) is None
    assert replay(stack, appt["id"]) == 202  # any number of times
    wait_until(lambda: len([h for h in stack.appointment(appt["id"])["history"] if h["event"] == "synced"]) == 2)
    assert len(sims.zoom_meetings()) == 1 and len(sims.neetocal_bookings()) == 1
    assert replay(stack, "never-seen") == 404


def test_retries_run_out_into_the_dead_letter_set(make_stack, sims: Sims, redis_client: redis.Redis) -> None:
    sims.configure("neetocal", fault_rate=1.0, fault_kinds=["500"])
    stack = make_stack(SYNC_MAX_RETRIES=2, RETRY_MAX_DELAY_SECONDS=1)
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "failed")
    assert view["error"].startswith("neetocal 500")
    assert len([h for h in view["history"] if h["event"] == "retry"]) == 2
    assert redis_client.zscore(KEYS.dead_letter, appt["id"]) is not None
    assert len(sims.zoom_meetings()) == 1  # the Zoom part stays done; the replay picks up from there


def test_syncs_of_one_appointment_never_run_at_once(stack: Stack, sims: Sims) -> None:
    sims.configure("zoom", latency_ms=300)
    appt = appointment()
    services = build_services(stack.settings)
    services.store.add_event(parse_delivery(meetergo_sim.booking_created(appt)).event)
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(run_sync(services, appt["id"]).status))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy", "busy", "busy", "synced"]
    assert len(sims.calls("zoom", "POST", "/meetings")) == 1


def test_a_group_booking_cancel_is_checked_with_meetergo_first(make_stack, sims: Sims) -> None:
    stack = make_stack(MEETERGO_API_KEY="sandbox-meetergo-key")
    appt = appointment()
    sims.post("meetergo", "appointments", appt)  # meetergo: the appointment goes on
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    stack.deliver(cancelled_payload(appt))  # one attendee left the group booking
    wait_until(lambda: any(h["event"] == "synced" for h in stack.appointment(appt["id"])["history"][-1:])
               and len([h for h in stack.appointment(appt["id"])["history"] if h["event"] == "synced"]) == 2)
    assert stack.appointment(appt["id"])["status"] == "synced"
    assert len(sims.zoom_meetings()) == 1 and len(sims.neetocal_bookings()) == 1
    assert sims.calls("meetergo", "GET", f"/v4/appointment/{appt['id']}")

    sims.http.post(f"{sims.url('meetergo')}/v4/appointment/{appt['id']}/cancel",
                   headers={"Authorization": "Bearer sandbox-meetergo-key"}, json={"reason": "all gone"})
    stack.deliver(cancelled_payload(appt, at=datetime.now(UTC)))  # now really cancelled, dated as meetergo does
    stack.wait_for_status(appt["id"], "cancelled")
    assert sims.zoom_meetings() == [] and sims.neetocal_bookings() == []
