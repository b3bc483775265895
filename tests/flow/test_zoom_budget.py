"""Zoom's token and rate budgets are shared by every worker (issues 3 and 5)."""

from __future__ import annotations

import json
import time

import redis

from sandbox import meetergo as meetergo_sim
from tests.flow.test_resilience import bookings, deliver_all, wait_all_synced
from tests.support import Sims, appointment, future_start, moved, wait_until
from workers.state import KEYS


def test_one_token_serves_every_worker(make_stack, sims: Sims, redis_client: redis.Redis) -> None:
    stack = make_stack(workers=3, concurrency=4)
    appointments = bookings(30, hosts=10)
    deliver_all(stack, [meetergo_sim.booking_created(a) for a in appointments])
    wait_all_synced(redis_client, [a["id"] for a in appointments], timeout=60)
    assert sims.get("zoom", "tokens")["issued"] == 1


def test_token_is_renewed_shortly_before_it_expires(make_stack, sims: Sims) -> None:
    sims.configure("zoom", token_ttl_seconds=62)  # renewed when 60 s or less remain: after 2 s here
    stack = make_stack()
    first = appointment(hour=8)
    stack.deliver(meetergo_sim.booking_created(first))
    stack.wait_for_status(first["id"], "synced")
    time.sleep(2.5)
    second = appointment(hour=11)
    stack.deliver(meetergo_sim.booking_created(second))
    stack.wait_for_status(second["id"], "synced")
    assert sims.get("zoom", "tokens")["issued"] == 2
    assert not [r for r in sims.requests("zoom") if r["status"] == 401]  # never used an expired token


def test_a_rejected_token_is_renewed_and_the_call_retried_once(stack, sims: Sims,
                                                               redis_client: redis.Redis) -> None:
    first = appointment(hour=8)
    stack.deliver(meetergo_sim.booking_created(first))
    stack.wait_for_status(first["id"], "synced")
    # Zoom revoked the shared token early: every worker still believes in it.
    redis_client.set(KEYS.zoom_token, json.dumps({"access_token": "revoked", "expires_at": time.time() + 3000}))
    stack.start_worker()  # a fresh process with no token of its own in memory
    for process in stack.processes[:1]:
        process.stop()
    second = appointment(hour=11)
    stack.deliver(meetergo_sim.booking_created(second))
    view = stack.wait_for_status(second["id"], "synced")
    rejected = [r for r in sims.requests("zoom") if r["status"] == 401]
    assert len(rejected) == 1
    assert sims.get("zoom", "tokens")["issued"] == 2
    assert not [h for h in view["history"] if h["event"] == "retry"]  # handled inside the one call


def test_a_refresh_wave_stays_inside_the_per_second_budget(make_stack, sims: Sims,
                                                           redis_client: redis.Redis) -> None:
    sims.configure("zoom", rate_limits_per_second={"light": 5, "medium": 5})
    # Zoom's limits are per account: this app is configured for its share, 4 of the account's 5 a second.
    stack = make_stack(workers=2, concurrency=8, ZOOM_LIGHT_PER_SECOND=4, ZOOM_MEDIUM_PER_SECOND=4)
    appointments = bookings(20, hosts=10)
    deliver_all(stack, [meetergo_sim.booking_created(a) for a in appointments])
    ids = [a["id"] for a in appointments]
    wait_all_synced(redis_client, ids, timeout=60)
    # Every start_url falls due at once, and the sweep releases them all together.
    for appointment_id in ids:
        redis_client.zadd(KEYS.refresh_schedule, {appointment_id: time.time() - 1})
        redis_client.hset(KEYS.appointment(appointment_id), "zoom_start_url_expires_at", time.time() + 60)
    from workers.tasks import sweep_schedules
    from workers.wiring import build_services

    refreshes, _ = sweep_schedules(build_services(stack.settings))
    assert refreshes == 20
    wait_until(lambda: sum(m["gets"] for m in sims.zoom_meetings()) == 20, timeout=30)
    assert not [r for r in sims.requests("zoom") if r["status"] == 429]


def test_a_reschedule_spends_the_host_budget_and_waits_when_it_is_gone(make_stack, sims: Sims) -> None:
    stack = make_stack(ZOOM_HOST_DAILY_LIMIT=2)
    appt = appointment(hour=8)
    stack.deliver(meetergo_sim.booking_created(appt))  # spends 1
    stack.wait_for_status(appt["id"], "synced")
    first = moved(appt, future_start(days=4, hour=9))
    stack.deliver(meetergo_sim.booking_rescheduled(first, appt["start"]))  # spends 2
    wait_until(lambda: sims.zoom_meetings()[0]["patches"] == 1)
    stack.wait_for_status(appt["id"], "synced")
    second = moved(first, future_start(days=4, hour=13))
    stack.deliver(meetergo_sim.booking_rescheduled(second, appt["start"]))
    view = stack.wait_for_status(appt["id"], "waiting")
    assert "daily limit of 2" in view["waiting"]["reason"]
    assert sims.zoom_meetings()[0]["patches"] == 1
    assert not [r for r in sims.requests("zoom") if r["status"] == 429]
