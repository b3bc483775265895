"""Retention: every appointment's keys expire after it ended or was cancelled, so Redis does not fill up."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import redis

from sandbox import meetergo as meetergo_sim
from tests.support import Stack, appointment, cancelled_payload, moved, wait_until
from workers.state import KEYS
from workers.tasks import sweep_schedules
from workers.wiring import build_services

SHARED_SETS = (KEYS.appointments, KEYS.dead_letter, KEYS.pending, KEYS.refresh_schedule, KEYS.deferred_schedule,
               KEYS.ended_schedule, KEYS.forget_schedule)


def own_keys(client: redis.Redis, appointment_id: str) -> list[str]:
    return [key for key in client.scan_iter(f"*{appointment_id}*")]


def in_sets(client: redis.Redis, appointment_id: str) -> list[str]:
    return [key for key in SHARED_SETS if client.zscore(key, appointment_id) is not None]


def sweep(stack: Stack) -> None:
    services = build_services(stack.settings)
    try:
        sweep_schedules(services)
    finally:
        services.close()


def test_every_key_of_a_synced_appointment_has_a_ttl(stack: Stack, redis_client: redis.Redis) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    keys = own_keys(redis_client, appt["id"])
    assert {KEYS.appointment(appt["id"]), KEYS.events(appt["id"]), KEYS.history(appt["id"])} <= set(keys)
    ends = datetime.fromisoformat(appt["end"]).timestamp()
    for key in keys:
        ttl = redis_client.ttl(key)
        assert ttl > 0, f"{key} has no TTL"
        assert abs(time.time() + ttl - (ends + 30 * 86400)) < 60, f"{key} does not expire 30 days after the end"
    # What is not the appointment's alone expires too: the delivery markers, the link cache, the host's index.
    for pattern in ("mb:delivery:*", "mb:neetocal:link:*", "mb:hostidx:*"):
        found = list(redis_client.scan_iter(pattern))
        assert found and all(redis_client.ttl(key) > 0 for key in found), pattern


def test_a_cancelled_appointment_is_forgotten_after_the_retention(make_stack, redis_client: redis.Redis) -> None:
    stack = make_stack(RETENTION_DAYS=0)  # time moved by configuration: "30 days later" is now
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    assert in_sets(redis_client, appt["id"])
    stack.deliver(cancelled_payload(appt))
    wait_until(lambda: not redis_client.exists(KEYS.appointment(appt["id"])), timeout=30,
               message="the cancelled appointment's record to expire")
    sweep(stack)
    assert own_keys(redis_client, appt["id"]) == []
    assert in_sets(redis_client, appt["id"]) == []


def test_an_ended_meeting_drops_its_start_url_compacts_its_events_and_expires(make_stack,
                                                                               redis_client: redis.Redis) -> None:
    stack = make_stack(NEETOCAL_API_URL=None, RETENTION_DAYS=1 / 86400 * 20)  # 20 s after the end
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    appt = appointment()
    appt.update(start=(soon - timedelta(minutes=30)).isoformat(), end=soon.isoformat())
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    later = moved(appt, soon - timedelta(minutes=25), minutes=25)  # the same end, another start
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: len(redis_client.hgetall(KEYS.events(appt["id"]))) == 2
               and stack.appointment(appt["id"])["history"][-1]["event"] == "synced", message="the reschedule")
    assert redis_client.hget(KEYS.appointment(appt["id"]), "zoom_start_url")

    wait_until(lambda: time.time() > soon.timestamp() + 1, timeout=15)
    sweep(stack)
    record = redis_client.hgetall(KEYS.appointment(appt["id"]))
    assert "zoom_start_url" not in record and record["status"] == "synced"
    [compacted] = [json.loads(raw) for raw in redis_client.hvals(KEYS.events(appt["id"]))]
    assert compacted["start"] == (soon - timedelta(minutes=25)).isoformat()
    assert redis_client.ttl(KEYS.events(appt["id"])) > 0

    wait_until(lambda: own_keys(redis_client, appt["id"]) == [], timeout=40, message="every key to expire")
    sweep(stack)
    assert in_sets(redis_client, appt["id"]) == []
