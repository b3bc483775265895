"""Issue 3: what leaves the refresh schedule, and what a failing refresh looks like."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import Sims, Stack, appointment, cancelled_payload, future_start, moved, wait_until
from workers.state import KEYS
from workers.tasks import refresh_one
from workers.wiring import build_services


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


def zoom_admin(sims: Sims, stack: Stack) -> httpx.Client:
    """Someone working in Zoom directly, with the account's own token."""
    token = httpx.post(f"{sims.url('zoom')}/oauth/token", params={"grant_type": "account_credentials",
                       "account_id": stack.env["ZOOM_ACCOUNT_ID"]},
                       auth=(stack.env["ZOOM_CLIENT_ID"], stack.env["ZOOM_CLIENT_SECRET"])).json()["access_token"]
    return httpx.Client(base_url=f"{sims.url('zoom')}/v2", headers={"Authorization": f"Bearer {token}"})


def metric(stack: Stack, line_start: str) -> float:
    for line in stack.http.get(f"{stack.web_url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_meetings_deleted_or_moved_in_zoom_are_put_back_within_one_refresh(make_stack, sims: Sims) -> None:
    sims.configure("zoom", start_url_ttl_seconds=8)
    stack = make_stack(beat=True, START_URL_REFRESH_LEAD_SECONDS=4, REFRESH_SWEEP_SECONDS=1)
    deleted, shifted = appointment(hour=8), appointment(hour=11)
    for appt in (deleted, shifted):
        stack.deliver(meetergo_sim.booking_created(appt))
    views = {appt["id"]: stack.wait_for_status(appt["id"], "synced") for appt in (deleted, shifted)}
    zoom = zoom_admin(sims, stack)
    gone_id = views[deleted["id"]]["zoom"]["meeting_id"]
    moved_id = views[shifted["id"]]["zoom"]["meeting_id"]
    assert zoom.delete(f"/meetings/{gone_id}").status_code == 204
    assert zoom.patch(f"/meetings/{moved_id}", json={"start_time": "2031-01-01T09:00:00Z", "duration": 90,
                                                    "timezone": "UTC"}).status_code == 204

    def healed() -> bool:
        history = [e["event"] for appt in (deleted, shifted) for e in stack.appointment(appt["id"])["history"]]
        return history.count("zoom_drift_healed") == 2

    wait_until(healed, timeout=20, message="both meetings to be put back")  # one refresh cycle is 4 s here
    remade = stack.wait_for_status(deleted["id"], "synced")
    assert remade["zoom"]["meeting_id"] != gone_id
    live = {m["id"]: m for m in sims.zoom_meetings()}
    assert set(live) == {remade["zoom"]["meeting_id"], moved_id}
    assert live[moved_id]["start_time"] == shifted["start"].replace("+00:00", "Z")
    assert live[moved_id]["duration"] == 30
    # The attendee's NeetoCal booking carries the new meeting's join URL (the same sync puts it there, just after
    # it notes the meeting healed).
    expected = sorted([remade["zoom"]["join_url"], views[shifted["id"]]["zoom"]["join_url"]])
    wait_until(lambda: sorted(b["form_responses"]["zoom_join_url"] for b in sims.neetocal_bookings()) == expected,
               message="the bookings to carry the join URLs")
    wait_until(lambda: (metric(stack, 'meetbridge_drift_healed_total{kind="gone"}'),
                        metric(stack, 'meetbridge_drift_healed_total{kind="changed"}')) == (1, 1), timeout=5,
               message="both heals counted")


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


def test_a_meeting_moved_to_a_later_time_after_it_ended_gets_a_start_url_again(make_stack, sims: Sims,
                                                                                redis_client: redis.Redis) -> None:
    """The ended sweep drops a meeting's start_url at its end (a no-show, say); when the host then moves it to
    tomorrow, the moved meeting needs one again, fetched ahead of time and kept fresh as before."""
    stack = make_stack(beat=True, REFRESH_SWEEP_SECONDS=0.5)
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    appt = {**appointment(), "start": (ends - timedelta(minutes=30)).isoformat(), "end": ends.isoformat()}
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    record = KEYS.appointment(appt["id"])
    assert redis_client.hget(record, "zoom_start_url")
    wait_until(lambda: not redis_client.hget(record, "zoom_start_url"), timeout=20,
               message="the ended sweep to drop the start_url")

    tomorrow = future_start(1)
    stack.deliver(meetergo_sim.booking_rescheduled(moved(appt, tomorrow), appt["start"]))
    wait_until(lambda: redis_client.hget(record, "zoom_start") == tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ"),
               timeout=20, message="the meeting to move")
    wait_until(lambda: redis_client.hget(record, "zoom_start_url"), timeout=20,
               message="a start_url for the moved meeting")
    assert redis_client.zscore(KEYS.refresh_schedule, appt["id"]) is not None


def test_a_start_url_fetched_for_the_host_after_the_meeting_ended_is_not_kept(make_stack,
                                                                              redis_client: redis.Redis) -> None:
    """The host link still opens for a while after the end (HOST_LINK_GRACE_SECONDS: an overrunning meeting); the
    start_url it fetches then is a host credential nobody needs once it is handed over, and is dropped again."""
    stack = make_stack(beat=True, REFRESH_SWEEP_SECONDS=0.5)
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    appt = {**appointment(), "start": (ends - timedelta(minutes=30)).isoformat(), "end": ends.isoformat()}
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")
    record = KEYS.appointment(appt["id"])
    wait_until(lambda: not redis_client.hget(record, "zoom_start_url"), timeout=20,
               message="the ended sweep to drop the start_url")

    link = httpx.URL(view["host_link"])
    pressed = stack.http.post(stack.web_url + link.raw_path.decode(), follow_redirects=False)
    assert pressed.status_code == 302 and "zak=" in pressed.headers["location"], pressed.text
    assert "fetched on demand for the host link" in [e["detail"] for e in stack.appointment(appt["id"])["history"]]
    wait_until(lambda: not redis_client.hget(record, "zoom_start_url"), timeout=20,
               message="the start_url handed to the host after the end to be dropped again")


@pytest.mark.parametrize("zoom_answer", ["start_url", "gone"])
def test_a_refresh_that_outlasts_its_lock_keeps_nothing_of_a_meeting_replaced_meanwhile(
        stack: Stack, sims: Sims, redis_client: redis.Redis, zoom_answer: str) -> None:
    """A refresh asks Zoom under the appointment's lock, but a slow Zoom (retries, waits) may outlast it, and a sync
    may meanwhile hand the appointment to another host's meeting. What the refresh then learns is about the old
    meeting: its start_url (the old host's credential) must not stand for the new one, nor its 404 mark the new
    meeting gone."""
    appointment_id = synced(stack)
    record = KEYS.appointment(appointment_id)
    old_meeting = redis_client.hget(record, "zoom_meeting_id")
    if zoom_answer == "gone":
        zoom_admin(sims, stack).delete(f"/meetings/{old_meeting}").raise_for_status()
    sims.configure("zoom", latency_ms=1500)
    services = build_services(stack.settings)
    result: dict[str, str] = {}
    asking = threading.Thread(target=lambda: result.update(outcome=refresh_one(services, appointment_id,
                                                                               force=True)))
    asking.start()
    time.sleep(0.5)  # the refresh is waiting on Zoom: its lock lapses, a sync hands the meeting to Maria
    redis_client.hset(record, mapping={"zoom_meeting_id": "99999999999", "zoom_host": "maria@example.com",
                                       "zoom_start_url": "https://zoom.us/s/99999999999?zak=maria"})
    asking.join(timeout=15)
    assert result["outcome"] == "superseded"
    assert redis_client.hget(record, "zoom_start_url") == "https://zoom.us/s/99999999999?zak=maria"
    assert redis_client.hget(record, "zoom_drift") is None
