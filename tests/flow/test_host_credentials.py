"""Host credentials (the host link, the start_url and its zak) reach the host alone, and only while they should."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import (
    ROOT,
    SECRET_KEY,
    Sims,
    Stack,
    appointment,
    future_start,
    moved,
    wait_until,
)
from workers.start_urls import zak_expiry
from workers.state import KEYS

OLD_KEY = "an-earlier-secret-key-0123456789abcdef"


def path_of(link: str) -> str:
    return urlsplit(link).path


def press_start(stack: Stack, link: str) -> httpx.Response:
    """What the host page's button does: POST back to the link."""
    return stack.http.post(stack.web_url + path_of(link), follow_redirects=False)


def book(stack: Stack, **kwargs) -> dict:
    appt = appointment(**kwargs)
    assert stack.deliver(meetergo_sim.booking_created(appt)).status_code == 202
    stack.wait_for_status(appt["id"], "synced")
    return appt


def test_nothing_the_attendee_can_read_carries_a_host_credential(stack: Stack, sims: Sims) -> None:
    appt = book(stack)
    link = stack.appointment(appt["id"])["host_link"]
    assert press_start(stack, link).status_code == 302
    later = moved(appt, future_start(days=5, hour=11))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: sims.calls("neetocal", "PATCH", "/bookings"), message="the NeetoCal reschedule")
    view = stack.wait_for_status(appt["id"], "synced")

    issued = [item["start_url"] for item in sims.get("zoom", "start_urls")["start_urls"]]
    assert issued
    credentials = {view["host_link"], path_of(view["host_link"]).rsplit("/", 1)[1], *issued,
                   *(url.split("zak=", 1)[1] for url in issued)}
    # Everything meetbridge sent to NeetoCal and meetergo, and everything NeetoCal keeps and shows.
    sent = [json.dumps(r) for name in ("neetocal", "meetergo") for r in sims.requests(name)]
    stored = [json.dumps(sims.get("neetocal", "bookings")), json.dumps(sims.get("neetocal", "meetings"))]
    assert any(view["zoom"]["join_url"] in text for text in stored), "the join URL is meant for the attendee"
    for text in sent + stored:
        for credential in credentials:
            assert credential not in text
        assert "zak" not in text.lower()
    # The host still gets there through their link.
    response = press_start(stack, view["host_link"])
    assert response.status_code == 302
    assert zak_expiry(response.headers["Location"]) > time.time() + 300


def test_get_shows_a_start_page_and_only_post_redirects(stack: Stack, sims: Sims) -> None:
    appt = book(stack)
    link = stack.appointment(appt["id"])["host_link"]
    page = stack.http.get(stack.web_url + path_of(link), follow_redirects=False)
    assert page.status_code == 200
    assert "Location" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert '<form method="post">' in page.text and "Start the meeting as host" in page.text
    issued = [item["start_url"] for item in sims.get("zoom", "start_urls")["start_urls"]]
    assert not any(url in page.text for url in issued) and "zak" not in page.text
    head = stack.http.head(stack.web_url + path_of(link), follow_redirects=False)
    assert "Location" not in head.headers

    started = press_start(stack, link)
    assert started.status_code == 302
    assert started.headers["Location"] in [item["start_url"] for item in sims.get("zoom", "start_urls")["start_urls"]]


def test_a_change_of_host_kills_the_old_link_and_the_new_one_works(stack: Stack, sims: Sims) -> None:
    appt = book(stack)
    old_link = stack.appointment(appt["id"])["host_link"]
    maria = meetergo_sim.host_entry(meetergo_sim.MARIA)
    handed_over = moved(appt, datetime.fromisoformat(appt["start"]), hosts=[maria], hostIds=[maria["id"]])
    stack.deliver(meetergo_sim.booking_rescheduled(handed_over, appt["start"]))
    wait_until(lambda: [m["host_email"] for m in sims.zoom_meetings()] == ["maria@example.com"],
               message="the meeting to move to Maria")
    new_link = stack.wait_for_status(appt["id"], "synced")["host_link"]

    assert new_link != old_link
    assert press_start(stack, old_link).status_code == 410
    assert stack.http.get(stack.web_url + path_of(old_link)).status_code == 410
    response = press_start(stack, new_link)
    assert response.status_code == 302
    [maria_meeting] = sims.zoom_meetings()
    assert f"/s/{maria_meeting['id']}?" in response.headers["Location"]


@pytest.mark.parametrize("change", ["host", "cancel"])
def test_the_old_link_dies_even_while_zoom_refuses_to_delete_the_meeting(stack: Stack, sims: Sims,
                                                                         change: str) -> None:
    """The host was taken off the appointment, or it was cancelled, but Zoom keeps failing the delete (an outage, a
    spent daily cap): the sync cannot finish, and the link must not keep leading to the meeting meanwhile."""
    appt = book(stack)
    link = stack.appointment(appt["id"])["host_link"]
    sims.configure("zoom", scripted_faults=[{"method": "DELETE", "path": "/meetings/", "kind": "500", "times": 1000}])
    if change == "host":
        maria = meetergo_sim.host_entry(meetergo_sim.MARIA)
        stack.deliver(meetergo_sim.booking_rescheduled(
            moved(appt, datetime.fromisoformat(appt["start"]), hosts=[maria], hostIds=[maria["id"]]), appt["start"]))
    else:
        stack.deliver(meetergo_sim.booking_cancelled(appt))
    wait_until(lambda: sims.calls("zoom", "DELETE", "/meetings/"), message="the sync to try the delete")
    assert len(sims.zoom_meetings()) == 1, "the meeting is still there"
    assert press_start(stack, link).status_code == 410


def test_an_expired_link_is_gone(make_stack, redis_client: redis.Redis) -> None:
    stack = make_stack(HOST_LINK_GRACE_SECONDS=60)
    appt = book(stack)
    link = stack.appointment(appt["id"])["host_link"]
    assert press_start(stack, link).status_code == 302
    # Time passes: the meeting ended more than the grace period ago.
    ended = (datetime.now(UTC) - timedelta(seconds=61)).isoformat()
    redis_client.hset(KEYS.appointment(appt["id"]), "ends_at", ended)
    assert press_start(stack, link).status_code == 410
    assert stack.http.get(stack.web_url + path_of(link)).status_code == 410


def test_a_signed_expiry_holds_even_when_the_record_says_the_meeting_is_later(make_stack) -> None:
    from workers.host_link_tokens import host_link
    from workers.state import AppointmentRecord

    stack = make_stack(HOST_LINK_GRACE_SECONDS=0)
    appt = book(stack)
    # A link made for this appointment and host when its meeting ended a minute ago (say, before a reschedule).
    earlier = AppointmentRecord(appt["id"], zoom_meeting_id=1, zoom_host="john@example.com",
                                ends_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    stale = host_link(stack.settings, earlier)
    assert stale is not None
    assert press_start(stack, stale).status_code == 410
    assert press_start(stack, stack.appointment(appt["id"])["host_link"]).status_code == 302


def test_a_revoked_link_is_gone_and_the_next_one_works(stack: Stack) -> None:
    appt = book(stack)
    link = stack.appointment(appt["id"])["host_link"]
    result = subprocess.run([sys.executable, "-m", "meetbridge.cli", "host-link", appt["id"], "--revoke"],
                            cwd=ROOT, env={**stack.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    new_link = result.stdout.strip()
    assert new_link.startswith("https://meetbridge.test/h/") and new_link != link
    assert press_start(stack, link).status_code == 410
    assert press_start(stack, new_link).status_code == 302
    assert stack.appointment(appt["id"])["host_link"] == new_link
    history = [entry["event"] for entry in stack.appointment(appt["id"])["history"]]
    assert "host_link_revoked" in history


def test_tampered_and_foreign_links_are_refused(stack: Stack) -> None:
    first, second = book(stack, hour=9), book(stack, hour=11)
    link = stack.appointment(first["id"])["host_link"]
    other = stack.appointment(second["id"])["host_link"]
    token = link.rsplit("/", 1)[1]
    # A character inside the signature (the last one of a base64 string may carry only padding bits).
    flipped = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert press_start(stack, link.rsplit("/", 1)[0] + "/" + flipped).status_code == 403
    assert press_start(stack, link.rsplit("/", 1)[0] + "/" + other.rsplit("/", 1)[1]).status_code == 403
    assert stack.http.get(stack.web_url + path_of(link.rsplit("/", 1)[0] + "/" + flipped)).status_code == 403


def test_secret_key_rotation_keeps_links_working_while_the_old_key_is_a_fallback(make_stack) -> None:
    before = make_stack(SECRET_KEY=OLD_KEY)
    appt = book(before)
    old_link = before.appointment(appt["id"])["host_link"]
    rotated = make_stack(workers=0, SECRET_KEY=SECRET_KEY, SECRET_KEY_FALLBACKS=OLD_KEY)
    assert press_start(rotated, old_link).status_code == 302
    new_link = rotated.appointment(appt["id"])["host_link"]
    assert new_link != old_link  # new links are signed with the new key
    done = make_stack(workers=0, SECRET_KEY=SECRET_KEY)
    assert press_start(done, old_link).status_code == 403
    assert press_start(done, new_link).status_code == 302


def test_the_redirect_goes_only_to_a_zoom_start_url(make_stack, sims: Sims) -> None:
    # Only Zoom's real domains are allowed: the simulator's start_urls are then not a valid target.
    stack = make_stack(ZOOM_START_URL_DOMAINS="zoom.us")
    appt = book(stack)
    response = press_start(stack, stack.appointment(appt["id"])["host_link"])
    assert response.status_code == 503
    assert "Location" not in response.headers
    assert response.headers["Retry-After"]
    assert "Try again" in response.text


@pytest.mark.parametrize("email", ["o/neil@example.com", "what?x=1@example.com", "hash#tag@example.com"])
def test_a_host_email_cannot_change_the_zoom_path(stack: Stack, sims: Sims, email: str) -> None:
    host = {**meetergo_sim.JOHN, "email": email, "id": "host-odd"}
    appt = book(stack, host=host)
    [create] = [r for r in sims.calls("zoom", "POST", "/meetings")]
    encoded = email.replace("/", "%2F").replace("?", "%3F").replace("#", "%23").replace("=", "%3D")
    assert create["raw_path"] == f"/v2/users/{encoded}/meetings"
    [meeting] = sims.zoom_meetings()
    assert meeting["host_email"] == email
    assert stack.appointment(appt["id"])["status"] == "synced"


@pytest.mark.parametrize("others_first", [True, False], ids=["others-first", "x-first"])
def test_ids_that_look_like_keys_cannot_reach_another_appointments_keys(stack: Stack, sims: Sims,
                                                                        redis_client: redis.Redis,
                                                                        others_first: bool) -> None:
    x = "appt-x"
    lookalikes = [f"{x}:events", f"{x}:lock", f"{x}:history"]

    def book_lookalikes() -> None:
        for n, appointment_id in enumerate(lookalikes):
            book(stack, id=appointment_id, days=4 + n)

    if others_first:
        book_lookalikes()
    original = book(stack, id=x, days=2)
    snapshot = (redis_client.hgetall(KEYS.appointment(x)), redis_client.hgetall(KEYS.events(x)),
                redis_client.lrange(KEYS.history(x), 0, -1))
    if not others_first:
        book_lookalikes()
        assert (redis_client.hgetall(KEYS.appointment(x)), redis_client.hgetall(KEYS.events(x)),
                redis_client.lrange(KEYS.history(x), 0, -1)) == snapshot, "booking the look-alikes changed X"

    events = [json.loads(raw) for raw in snapshot[1].values()]
    assert {event["appointment_id"] for event in events} == {x}
    later = moved(original, future_start(days=9, hour=15))
    stack.deliver(meetergo_sim.booking_rescheduled(later, original["start"]))
    wait_until(lambda: stack.appointment(x)["history"][-1]["event"] == "synced"
               and len(redis_client.hgetall(KEYS.events(x))) == 2, message="X to follow its reschedule")
    meeting_id = stack.appointment(x)["zoom"]["meeting_id"]
    [meeting] = [m for m in sims.zoom_meetings() if m["id"] == meeting_id]
    assert meeting["start_time"].startswith(future_start(days=9).date().isoformat())
    for appointment_id in lookalikes:
        view = stack.appointment(appointment_id)
        assert view["status"] == "synced"
        assert view["zoom"]["meeting_id"] != meeting_id
    assert len(sims.zoom_meetings()) == 4


def test_a_meeting_changed_in_zoom_is_put_back_before_its_start_url_is_handed_out(make_stack, sims: Sims) -> None:
    # Every press fetches a fresh start_url (valid 200 s < the 300 s promised), so the fetch sees what Zoom holds.
    sims.configure("zoom", start_url_ttl_seconds=200)
    stack = make_stack(HOST_LINK_MIN_VALIDITY_SECONDS=300)
    appt = book(stack)
    view = stack.appointment(appt["id"])
    meeting_id = view["zoom"]["meeting_id"]
    token = httpx.post(f"{sims.url('zoom')}/oauth/token", params={"grant_type": "account_credentials",
                       "account_id": stack.env["ZOOM_ACCOUNT_ID"]},
                       auth=(stack.env["ZOOM_CLIENT_ID"], stack.env["ZOOM_CLIENT_SECRET"])).json()["access_token"]
    moved_in_zoom = httpx.patch(f"{sims.url('zoom')}/v2/meetings/{meeting_id}",
                                headers={"Authorization": f"Bearer {token}"},
                                json={"start_time": "2031-01-01T09:00:00Z", "timezone": "UTC"})
    assert moved_in_zoom.status_code == 204

    refused = press_start(stack, view["host_link"])
    assert refused.status_code == 503 and "Location" not in refused.headers
    wait_until(lambda: "zoom_drift_healed" in [e["event"] for e in stack.appointment(appt["id"])["history"]],
               message="the sync the link queued to put the meeting back")
    [meeting] = sims.zoom_meetings()
    assert meeting["start_time"] == appt["start"].replace("+00:00", "Z")
    assert press_start(stack, stack.appointment(appt["id"])["host_link"]).status_code == 302
