"""Issue 3: what leaves the refresh schedule, and what a failing refresh looks like."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import Sims, Stack, appointment, cancelled_payload, future_start, moved, wait_until
from workers.services import build_services
from workers.state import KEYS
from workers.tasks import refresh_one


def synced(stack: Stack) -> str:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    return appt["id"]


def test_a_failing_refresh_shows_on_the_appointment_and_is_retried_before_expiry(
        make_stack, sims: Sims, redis_client: redis.Redis) -> None:
    sims.configure("zoom", start_url_ttl_seconds=20)
    stack = make_stack(beat=True, START_URL_REFRESH_LEAD_SECONDS=12, REFRESH_SWEEP_SECONDS=0.5)
    appointment_id = synced(stack)
    sims.configure("zoom", fault_rate=1.0, fault_kinds=["500"])
    view = wait_until(lambda: (v := stack.appointment(appointment_id)) and v["error"] and v, timeout=20)
    assert view["error"].startswith("start_url refresh failed: zoom 500")
    assert view["status"] == "synced"

    sims.configure("zoom", fault_rate=0.0)
    expires_at = float(redis_client.hget(KEYS.appointment(appointment_id), "zoom_start_url_expires_at"))
    wait_until(lambda: float(redis_client.hget(KEYS.appointment(appointment_id), "zoom_start_url_expires_at"))
               > expires_at, timeout=20, message="the refresh to be retried")
    assert time.time() < expires_at, "it was retried only after the start_url had expired"
    assert stack.appointment(appointment_id)["error"] is None


def test_a_meeting_deleted_in_zoom_leaves_the_schedule(stack: Stack, sims: Sims, redis_client: redis.Redis) -> None:
    appointment_id = synced(stack)
    meeting_id = sims.zoom_meetings()[0]["id"]
    token = httpx.post(f"{sims.url('zoom')}/oauth/token", params={"grant_type": "account_credentials",
                       "account_id": stack.env["ZOOM_ACCOUNT_ID"]},
                       auth=(stack.env["ZOOM_CLIENT_ID"], stack.env["ZOOM_CLIENT_SECRET"])).json()["access_token"]
    httpx.delete(f"{sims.url('zoom')}/v2/meetings/{meeting_id}", headers={"Authorization": f"Bearer {token}"})

    assert refresh_one(build_services(stack.settings), appointment_id, force=True) == "gone"
    assert redis_client.zscore(KEYS.refresh_schedule, appointment_id) is None
    assert "no longer exists (3001)" in stack.appointment(appointment_id)["error"]


def test_cancelled_and_ended_meetings_leave_the_schedule(stack: Stack, redis_client: redis.Redis) -> None:
    cancelled = appointment(hour=8)
    stack.deliver(meetergo_sim.booking_created(cancelled))
    stack.wait_for_status(cancelled["id"], "synced")
    assert redis_client.zscore(KEYS.refresh_schedule, cancelled["id"]) is not None
    stack.deliver(cancelled_payload(cancelled))
    stack.wait_for_status(cancelled["id"], "cancelled")
    assert redis_client.zscore(KEYS.refresh_schedule, cancelled["id"]) is None

    ended = synced(stack)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    redis_client.hset(KEYS.appointment(ended), "ends_at", past)  # time passes: the meeting is over
    assert refresh_one(build_services(stack.settings), ended) == "ended"
    assert redis_client.zscore(KEYS.refresh_schedule, ended) is None


def test_a_far_expiry_is_not_refreshed_before_the_meeting_ends(stack: Stack, sims: Sims,
                                                                redis_client: redis.Redis) -> None:
    sims.configure("zoom", custcreate_users=["john@example.com"])  # 90-day start_urls
    appointment_id = synced(stack)
    assert redis_client.zscore(KEYS.refresh_schedule, appointment_id) is None


def test_the_refresh_schedule_follows_a_rescheduled_meeting(stack: Stack, redis_client: redis.Redis) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=65)
    soon = soon.replace(minute=soon.minute - soon.minute % 5, second=0, microsecond=0) + timedelta(minutes=5)
    appt = meetergo_sim.make_appointment(soon)
    appt["updatedAt"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    # Its 2-hour start_url outlasts the meeting: nothing to refresh.
    assert redis_client.zscore(KEYS.refresh_schedule, appt["id"]) is None

    later = moved(appt, future_start(days=3, hour=9))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: redis_client.zscore(KEYS.refresh_schedule, appt["id"]) is not None, timeout=20,
               message="the moved meeting to be put on the refresh schedule")
    expires_at = float(redis_client.hget(KEYS.appointment(appt["id"]), "zoom_start_url_expires_at"))
    assert redis_client.zscore(KEYS.refresh_schedule, appt["id"]) == expires_at - 900
