"""Issue 5: nothing lost, nothing duplicated — through faults, crashes, Redis restarts, storms and quotas."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import RedisServer, Sims, Stack, appointment, future_start, moved, wait_until
from workers.celery_app import celery_config
from workers.reconciliation import reconcile
from workers.state import KEYS
from workers.wiring import build_services


def host(n: int) -> dict[str, Any]:
    return {"id": f"host-{n}", "email": f"host{n}@example.com", "givenName": "Host", "familyName": str(n)}


def bookings(count: int, hosts: int) -> list[dict[str, Any]]:
    """`count` appointments spread over `hosts` hosts, 45 minutes apart per host (no host double-booked)."""
    appointments = []
    for n in range(count):
        slot = n // hosts
        appointments.append(appointment(days=2 + slot // 16, hour=6 + (slot % 16) * 45 // 60,
                                        minute=(slot % 16) * 45 % 60, host=host(n % hosts)))
    return appointments


def deliver_all(stack: Stack, payloads: list[dict[str, Any]], threads: int = 16) -> list[int]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda payload: stack.deliver(payload).status_code, payloads))


def statuses(client: redis.Redis, ids: list[str]) -> Counter[str]:
    with client.pipeline() as pipe:
        for appointment_id in ids:
            pipe.hget(f"mb:appt:{appointment_id}", "status")
        return Counter(pipe.execute())


def wait_all_synced(client: redis.Redis, ids: list[str], timeout: float) -> None:
    wait_until(lambda: statuses(client, ids) == Counter({"synced": len(ids)}), timeout=timeout, interval=1,
               message="every appointment to be synced")


def exactly_one_each(sims: Sims, ids: list[str]) -> None:
    meetings = Counter(m["agenda"].rsplit("[meetbridge:", 1)[1].rstrip("]") for m in sims.zoom_meetings())
    assert meetings == Counter(ids), "each appointment has exactly one live Zoom meeting"
    assert len(sims.neetocal_bookings()) == len(ids)
    answers = Counter(b["form_responses"]["zoom_join_url"] for b in sims.neetocal_bookings())
    assert max(answers.values()) == 1


@pytest.mark.slow
def test_two_hundred_bookings_through_thirty_percent_faults(make_stack, sims: Sims, redis_client) -> None:
    for name in ("zoom", "neetocal"):
        sims.configure(name, fault_rate=0.3, fault_kinds=["500", "429", "timeout", "reset"], timeout_seconds=1.5,
                       seed=7)
    stack = make_stack(workers=2, concurrency=16, HTTP_TIMEOUT_SECONDS=1, RETRY_MAX_DELAY_SECONDS=4,
                       SYNC_MAX_RETRIES=12)
    appointments = bookings(200, hosts=20)
    assert set(deliver_all(stack, [meetergo_sim.booking_created(a) for a in appointments])) == {202}
    ids = [a["id"] for a in appointments]
    wait_all_synced(redis_client, ids, timeout=240)
    exactly_one_each(sims, ids)
    faults = Counter(r["fault"] for r in sims.requests("zoom") + sims.requests("neetocal") if r["fault"])
    assert set(faults) == {"500", "429", "timeout", "reset"}, faults  # every kind really happened


@pytest.mark.slow
def test_every_worker_killed_mid_sync_costs_seconds_not_the_broker_timeout(make_stack, sims: Sims,
                                                                          redis_client) -> None:
    """Default settings: 30 bookings in flight against slow APIs, every worker SIGKILLed, one started again."""
    for name in ("zoom", "neetocal"):
        sims.configure(name, latency_ms=700)
    stack = make_stack(workers=0)
    workers = [stack.start_worker(concurrency=8), stack.start_worker(concurrency=8)]
    appointments = bookings(30, hosts=10)
    deliver_all(stack, [meetergo_sim.booking_created(a) for a in appointments])
    ids = [a["id"] for a in appointments]
    # Kill them while calls are in flight: some creates have reached Zoom but not been recorded.
    wait_until(lambda: len(sims.zoom_meetings()) >= 5, timeout=30)
    for worker in workers:
        worker.kill(signal.SIGKILL)
    # One of them died in a restore scan, holding kombu's restore mutex for as long as it is set to last.
    options = celery_config(stack.settings)["broker_transport_options"]
    assert redis_client.set("unacked_mutex", "a-dead-worker", nx=True, ex=options.get("unacked_mutex_expire", 300))
    # The recovery path is really needed: messages were taken and never acknowledged, and work is unfinished.
    assert redis_client.hlen("unacked") > 0, "no task was in flight when the workers died"
    assert statuses(redis_client, ids)["synced"] < 30, "the kill came too late to test anything"
    restarted = time.monotonic()
    stack.start_worker(concurrency=8)
    wait_all_synced(redis_client, ids, timeout=60 - (time.monotonic() - restarted))
    exactly_one_each(sims, ids)
    assert redis_client.hlen("unacked") == 0


@pytest.mark.slow
def test_redis_restart_with_work_queued_loses_nothing(make_stack, sims: Sims, tmp_path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        sims.configure("zoom", latency_ms=200)
        stack = make_stack(workers=0, REDIS_URL=server.url, BROKER_VISIBILITY_TIMEOUT_SECONDS=5)
        appointments = bookings(40, hosts=10)
        payloads = [meetergo_sim.booking_created(a) for a in appointments]
        assert set(deliver_all(stack, payloads[:20])) == {202}
        acknowledged = time.monotonic()
        stack.start_worker(concurrency=4)
        wait_until(lambda: len(sims.zoom_meetings()) >= 2, timeout=30)
        # The promise of appendfsync everysec: a 202 older than the fsync window (a second; two to be safe)
        # survives a crash. Syncs keep writing up to the kill, so their last second may be lost.
        wait_until(lambda: time.monotonic() - acknowledged > 2.0, timeout=5)

        server.popen.send_signal(signal.SIGKILL)  # no goodbye: only what is on disk survives
        server.popen.wait()
        refused = deliver_all(stack, payloads[20:30])
        assert set(refused) == {503}  # not acknowledged: the sender keeps them and tries again
        server.start()
        assert set(deliver_all(stack, payloads[20:])) == {202}

        client = redis.Redis.from_url(server.url, decode_responses=True)
        wait_all_synced(client, [a["id"] for a in appointments], timeout=120)
        exactly_one_each(sims, [a["id"] for a in appointments])
        # The worker saw a new Redis process and looked before writing, since a create's note may be gone.
        assert client.get("mb:redis:restarted_at")
        assert any(field.startswith('["meetbridge_lookups_total"') for field in client.hkeys("mb:metrics"))
    finally:
        server.stop()


@pytest.mark.slow
def test_duplicate_storm(make_stack, sims: Sims, redis_client) -> None:
    stack = make_stack(workers=2, concurrency=16)
    appointments = bookings(300, hosts=30)
    payloads = [meetergo_sim.booking_created(a) for a in appointments] * 3
    results = deliver_all(stack, payloads, threads=32)
    assert set(results) == {202}
    ids = [a["id"] for a in appointments]
    wait_all_synced(redis_client, ids, timeout=180)
    assert len(sims.zoom_meetings()) == 300
    assert len(sims.neetocal_bookings()) == 300
    assert len([r for r in sims.calls("zoom", "POST", "/meetings") if r["status"] == 201]) == 300


def test_daily_quota_waits_instead_of_spending_requests_that_would_429(make_stack, sims: Sims,
                                                                       redis_client) -> None:
    stack = make_stack(ZOOM_HOST_DAILY_LIMIT=5)
    john = [appointment(days=2, hour=6 + n) for n in range(6)]
    for appt in john[:5]:
        stack.deliver(meetergo_sim.booking_created(appt))
    for appt in john[:5]:
        stack.wait_for_status(appt["id"], "synced")
    stack.deliver(meetergo_sim.booking_created(john[5]))
    view = stack.wait_for_status(john[5]["id"], "waiting")
    assert "daily limit of 5" in view["waiting"]["reason"]
    assert view["waiting"]["until"].endswith("T00:00:00Z")
    assert not [r for r in sims.requests("zoom") if r["status"] == 429]
    assert len(sims.zoom_meetings()) == 5


def _is_midnight_soon() -> bool:
    now = time.gmtime()
    return now.tm_hour == 23 and now.tm_min == 59


@pytest.mark.parametrize("form", ["429", "300"])
def test_zoom_daily_cap_parks_the_host_until_midnight_while_others_flow(stack: Stack, sims: Sims, form: str,
                                                                        redis_client: redis.Redis) -> None:
    sims.configure("zoom", host_daily_limit_form=form)
    sims.post("zoom", "quota", {"user": "maria@example.com", "used": 100})  # another app spent Maria's budget
    maria = appointment(host=meetergo_sim.MARIA)
    stack.deliver(meetergo_sim.booking_created(maria))
    view = stack.wait_for_status(maria["id"], "waiting")
    assert "daily limit" in view["waiting"]["reason"] and f"Zoom answered {form}" in view["waiting"]["reason"]
    assert view["waiting"]["until"].endswith("T00:00:00Z")

    john = appointment()
    stack.deliver(meetergo_sim.booking_created(john))
    stack.wait_for_status(john["id"], "synced")
    # Nothing will call for Maria before midnight: her sync is parked in Redis, and no task of hers is queued.
    assert redis_client.zscore(KEYS.deferred_schedule, maria["id"]) > time.time() + 60 or _is_midnight_soon()
    assert not [m for m in redis_client.lrange("meetbridge", 0, -1) if maria["id"] in m]
    maria_creates = [r for r in sims.calls("zoom", "POST", "/users/maria@example.com/meetings")]
    assert len(maria_creates) == 1 and maria_creates[0]["status"] == int(form)
    assert stack.appointment(maria["id"])["status"] == "waiting"


@pytest.mark.parametrize("form", ["429", "300"])
def test_zoom_daily_cap_on_an_update_parks_the_reschedule(stack: Stack, sims: Sims, form: str) -> None:
    sims.configure("zoom", host_daily_limit_form=form)
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    sims.post("zoom", "quota", {"user": "john@example.com", "used": 100})
    stack.deliver(meetergo_sim.booking_rescheduled(moved(appt, future_start(days=5, hour=9)), appt["start"]))
    view = stack.wait_for_status(appt["id"], "waiting")
    assert f"Zoom answered {form}" in view["waiting"]["reason"]
    assert view["waiting"]["until"].endswith("T00:00:00Z")
    patches = sims.calls("zoom", "PATCH", "/meetings/")
    assert [r["status"] for r in patches] == [int(form)]


def test_the_accounts_daily_limit_of_an_api_is_asked_once_not_by_every_sync(stack: Stack, sims: Sims,
                                                                            redis_client: redis.Redis) -> None:
    """Zoom's account-wide daily limits (Free: Medium 2,000/day) answer every call with a 429 until midnight; once
    one sync has heard it, the others wait for midnight without asking Zoom again."""
    sims.configure("zoom", daily_limits={"light": None, "medium": 1})
    first = appointment(hour=9)
    stack.deliver(meetergo_sim.booking_created(first))
    stack.wait_for_status(first["id"], "synced")  # the day's one create
    second, third = appointment(hour=11), appointment(hour=13, host=meetergo_sim.MARIA)
    stack.deliver(meetergo_sim.booking_created(second))
    view = stack.wait_for_status(second["id"], "waiting")
    assert view["waiting"]["until"].endswith("T00:00:00Z")
    stack.deliver(meetergo_sim.booking_created(third))
    view = stack.wait_for_status(third["id"], "waiting")
    assert "daily limit of the account is spent" in view["waiting"]["reason"]
    assert view["waiting"]["until"].endswith("T00:00:00Z")
    refused = [r for r in sims.requests("zoom") if r["status"] == 429]
    assert len(refused) == 1, "Zoom was asked again after it said the day's limit was spent"


def test_one_reconcile_run_heals_a_lost_webhook(make_stack, sims: Sims) -> None:
    stack = make_stack(MEETERGO_API_KEY="sandbox-meetergo-key")
    lost = appointment(host=meetergo_sim.JOHN)
    sims.post("meetergo", "appointments", lost)  # booked in meetergo; its webhook never arrived
    assert stack.appointment(lost["id"]) is None

    services = build_services(stack.settings)
    from workers.tasks import queue_syncs

    assert reconcile(services, lambda ids: queue_syncs(services, ids)) == 1
    view = stack.wait_for_status(lost["id"], "synced")
    [meeting] = sims.zoom_meetings()
    assert meeting["host_email"] == "john@example.com"
    assert view["neetocal"]["booking_sid"]
    assert reconcile(services, lambda ids: queue_syncs(services, ids)) == 0  # nothing out of date any more


def test_beat_reconciles_on_its_own(make_stack, sims: Sims) -> None:
    stack = make_stack(beat=True, MEETERGO_API_KEY="sandbox-meetergo-key", RECONCILE_SECONDS=2)
    lost = appointment()
    sims.post("meetergo", "appointments", lost)
    stack.wait_for_status(lost["id"], "synced", timeout=30)


def test_beats_sweeps_expire_but_not_before_a_busy_worker_reaches_them(stack: Stack) -> None:
    """While no worker runs (a deploy, an outage), beat goes on sending a sweep every two seconds: they expire, so
    workers coming back drop an hour's backlog of them; but not within seconds, or a queue that runs a little
    behind would drop every sweep and parked syncs would wait for it to drain."""
    schedule = celery_config(dataclasses.replace(stack.settings, meetergo_api_key="a-key"))["beat_schedule"]
    assert set(schedule) == {"sweep-schedules", "sweep-deferred", "reconcile-meetergo"}
    for name, entry in schedule.items():
        expires = entry["options"]["expires"]
        assert expires >= 2 * stack.settings.broker_visibility_timeout_seconds, name
        assert expires >= 5 * entry["schedule"] and expires <= max(5 * entry["schedule"], 3600), name
