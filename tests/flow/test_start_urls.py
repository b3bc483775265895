"""Issue 3: every upcoming meeting always has a valid start_url, and hosts a link that never expires."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import Sims, Stack, appointment, cancelled_payload, wait_until
from workers.start_urls import zak_expiry
from workers.state import KEYS, Schedule


def book(stack: Stack, count: int) -> list[str]:
    """`count` bookings for one host, 45 minutes apart (a host is never booked twice at once)."""
    ids = []
    for n in range(count):
        appt = appointment(days=2 + n // 16, hour=6 + (n % 16) * 45 // 60, minute=(n % 16) * 45 % 60)
        assert stack.deliver(meetergo_sim.booking_created(appt)).status_code == 202
        ids.append(appt["id"])
    for appointment_id in ids:
        stack.wait_for_status(appointment_id, "synced")
    return ids


def stored_start_url(client: redis.Redis, appointment_id: str) -> tuple[str, float]:
    record = client.hmget(KEYS.appointment(appointment_id), "zoom_start_url", "zoom_start_url_expires_at")
    return record[0], float(record[1])


def open_host_link(stack: Stack, link: str):
    """Press the host page's "Start the meeting as host" button (a POST back to the link)."""
    assert stack.web_url is not None
    return stack.http.post(stack.web_url + urlsplit(link).path, follow_redirects=False)


# --- host links ------------------------------------------------------------------------------------------

def test_host_link_redirects_to_a_valid_start_url(stack: Stack, redis_client: redis.Redis) -> None:
    [appointment_id] = book(stack, 1)
    view = stack.appointment(appointment_id)
    response = open_host_link(stack, view["host_link"])
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "no-store"
    location = response.headers["Location"]
    assert location == stored_start_url(redis_client, appointment_id)[0]
    assert zak_expiry(location) > time.time() + 300


def test_tampered_host_links_are_refused(stack: Stack) -> None:
    first, second = book(stack, 2)
    link = stack.appointment(first)["host_link"]
    other = stack.appointment(second)["host_link"]
    # A character in the middle of the signature: the last one of a base64 text may carry only padding bits.
    prefix, signature = link.rsplit(".", 1)
    middle = len(signature) // 2
    tampered = f"{prefix}.{signature[:middle]}{'A' if signature[middle] != 'A' else 'B'}{signature[middle + 1:]}"
    assert open_host_link(stack, tampered).status_code == 403
    # A valid signature of another appointment does not open this one.
    assert open_host_link(stack, link.rsplit("/", 1)[0] + "/" + other.rsplit("/", 1)[1]).status_code == 403
    assert open_host_link(stack, link.replace(first, "unknown-id")).status_code == 403


def test_host_link_of_an_unknown_appointment_is_404(stack: Stack) -> None:
    from workers.host_link_tokens import host_link
    from workers.state import AppointmentRecord

    never_seen = AppointmentRecord("never-seen", zoom_meeting_id=1, zoom_host="john@example.com",
                                   ends_at="2099-01-01T00:00:00+00:00")
    link = host_link(stack.settings, never_seen)
    assert link is not None
    assert open_host_link(stack, link).status_code == 404


def test_host_link_is_gone_once_cancelled(stack: Stack) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    link = stack.wait_for_status(appt["id"], "synced")["host_link"]
    stack.deliver(cancelled_payload(appt))
    stack.wait_for_status(appt["id"], "cancelled")
    assert open_host_link(stack, link).status_code == 410


def test_host_link_refreshes_an_expired_start_url_on_the_spot(stack: Stack, sims: Sims,
                                                              redis_client: redis.Redis) -> None:
    sims.configure("zoom", start_url_ttl_seconds=2)
    [appointment_id] = book(stack, 1)
    expired_url, expires_at = stored_start_url(redis_client, appointment_id)
    wait_until(lambda: time.time() > expires_at + 0.5, timeout=10)

    response = open_host_link(stack, stack.appointment(appointment_id)["host_link"])
    assert response.status_code == 302
    fresh = response.headers["Location"]
    assert fresh != expired_url
    assert zak_expiry(fresh) > time.time()
    assert stored_start_url(redis_client, appointment_id)[0] == fresh
    [meeting] = sims.zoom_meetings()
    assert meeting["gets"] == 1


def test_a_start_url_valid_but_too_close_to_expiry_is_replaced(make_stack, sims: Sims,
                                                              redis_client: redis.Redis) -> None:
    sims.configure("zoom", start_url_ttl_seconds=200)  # valid for 200 s: less than the 300 s a host link promises
    stack = make_stack(HOST_LINK_MIN_VALIDITY_SECONDS=300)
    [appointment_id] = book(stack, 1)
    stored, expires_at = stored_start_url(redis_client, appointment_id)
    assert time.time() < expires_at < time.time() + 300
    response = open_host_link(stack, stack.appointment(appointment_id)["host_link"])
    assert response.status_code == 302
    assert response.headers["Location"] != stored
    assert sims.zoom_meetings()[0]["gets"] == 1
    assert "start_url_refreshed" in [e["event"] for e in stack.appointment(appointment_id)["history"]]


# --- the refresh schedule ------------------------------------------------------------------------------

TTL, LEAD, SWEEP = 40, 15, 2


@pytest.mark.slow
def test_twenty_meetings_never_hold_an_expired_start_url_for_two_minutes(make_stack, sims: Sims,
                                                                         redis_client: redis.Redis) -> None:
    sims.configure("zoom", start_url_ttl_seconds=TTL)
    stack = make_stack(beat=True, START_URL_REFRESH_LEAD_SECONDS=LEAD, REFRESH_SWEEP_SECONDS=SWEEP)
    ids = book(stack, 20)
    watch_started = time.time()

    expired_seen: list[tuple[str, float]] = []
    while time.time() - watch_started < 120:
        now = time.time()
        for appointment_id in ids:
            start_url, expires_at = stored_start_url(redis_client, appointment_id)
            assert expires_at == zak_expiry(start_url)  # the expiry is read from the zak itself
            if expires_at <= now:
                expired_seen.append((appointment_id, now - expires_at))
        time.sleep(0.25)
    watch_ended = time.time()
    assert expired_seen == [], f"stored start_urls expired: {expired_seen[:5]}"

    # The fewest GETs that keep the policy: a refresh each time the start_url comes within LEAD of its
    # expiry. The create brought the first one, so refreshes fall every TTL - LEAD seconds after it.
    meetings = sims.zoom_meetings()
    assert len(meetings) == 20
    for meeting in meetings:
        created_at = issued_times(sims, meeting["id"])[0]
        needed = int((watch_ended - created_at) // (TTL - LEAD))
        assert abs(meeting["gets"] - needed) <= 1, f"meeting {meeting['id']}: {meeting['gets']} GETs, {needed} needed"


def issued_times(sims: Sims, meeting_id: int) -> list[float]:
    from datetime import datetime

    return sorted(datetime.fromisoformat(item["issued_at"].replace("Z", "+00:00")).timestamp()
                  for item in sims.get("zoom", "start_urls")["start_urls"] if item["meeting_id"] == meeting_id)


@pytest.mark.slow
def test_two_beats_never_refresh_one_meeting_twice_for_one_expiry(make_stack, sims: Sims) -> None:
    ttl, lead = 12, 6
    sims.configure("zoom", start_url_ttl_seconds=ttl)
    stack = make_stack(beat=True, START_URL_REFRESH_LEAD_SECONDS=lead, REFRESH_SWEEP_SECONDS=0.5)
    stack.start_beat()  # a second scheduler, sweeping at the same time
    stack.start_worker()  # and a second worker to run their sweeps side by side
    ids = book(stack, 10)
    time.sleep(30)
    for meeting in sims.zoom_meetings():
        times = issued_times(sims, meeting["id"])
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        assert meeting["gets"] >= 3, f"meeting {meeting['id']} was not kept fresh"
        # One refresh per expiry: consecutive start_urls are a full (ttl - lead) apart, never twice at once.
        assert min(gaps) > (ttl - lead) - 1.5, f"meeting {meeting['id']} refreshed twice: gaps {gaps}"
    assert len(ids) == 10


def test_concurrent_sweeps_claim_each_due_meeting_once(redis_client: redis.Redis) -> None:
    schedule = Schedule(redis_client, KEYS.refresh_schedule)
    now = time.time()
    for n in range(2000):
        schedule.put(f"appt-{n}", now - 1)
    claimed: list[str] = []
    lock = threading.Lock()

    def sweeper() -> None:
        while True:
            batch = schedule.claim_due(now, 50, lease_seconds=60)
            with lock:
                claimed.extend(batch)
            if not batch:
                return

    threads = [threading.Thread(target=sweeper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 2000
    assert len(set(claimed)) == 2000
