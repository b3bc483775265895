"""Issue 9, item 2: each host's private page and calendar feed of their upcoming meetings."""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from icalendar import Calendar
from itsdangerous.encoding import base64_encode

from sandbox import meetergo as meetergo_sim
from tests.support import ADMIN_TOKEN, ROOT, Stack, appointment, cancelled_payload, future_start, moved

JOHN, MARIA = meetergo_sim.JOHN, meetergo_sim.MARIA
ANN = {"email": "ann@example.org", "firstname": "Ann", "lastname": "Archer", "timezone": "Europe/Berlin"}
BEN = {"email": "ben@example.org", "firstname": "Ben", "lastname": "Baker", "timezone": "America/Chicago"}
CARA = {"email": "cara@example.org", "firstname": "Cara", "lastname": "Cole"}
DAN = {"email": "dan@example.org", "firstname": "Dan", "lastname": "Dunn"}


# --- helpers ---------------------------------------------------------------------------------------------

def page_links(stack: Stack, email: str) -> dict[str, str]:
    assert stack.web_url is not None
    response = stack.http.get(f"{stack.web_url}/api/hosts/{email}/page",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    links = response.json()
    assert links["email"] == email.lower()
    return links


def fetch(stack: Stack, link: str) -> httpx.Response:
    """GET a link handed out under PUBLIC_URL from this stack's web."""
    assert stack.web_url is not None
    return stack.http.get(stack.web_url + urlsplit(link).path)


def assert_private(response: httpx.Response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in response.headers["X-Robots-Tag"]


def page_meetings(response: httpx.Response) -> list[dict[str, Any]]:
    """The meetings listed on a host page, in page order."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    found = []
    for match in re.finditer(r'<li class="([^"]*)" data-appointment-id="([^"]+)">(.*?)</li>', response.text, re.S):
        classes, appointment_id, body = match.groups()
        when = re.search(r'<time class="when" datetime="([^"]+)" data-end="([^"]+)">([^<]*)</time>', body)
        assert when is not None, body
        join = re.search(r'<div class="join">Join: <a href="([^"]+)"', body)
        start = re.search(r'<a class="start" href="([^"]+)"[^>]*>Start as host</a>', body)
        found.append({
            "id": html.unescape(appointment_id),
            "classes": classes.split(),
            "start": when.group(1),
            "end": when.group(2),
            "fallback": html.unescape(when.group(3)),
            "join_url": html.unescape(join.group(1)) if join else None,
            "host_link": html.unescape(start.group(1)) if start else None,
            "text": html.unescape(re.sub(r"<[^>]+>", " ", body)),
        })
    return found


def press_start(stack: Stack, link: str) -> httpx.Response:
    """What a host page's Start button leads to: the link's page, whose button POSTs back to it."""
    return stack.http.post(stack.web_url + urlsplit(link).path, follow_redirects=False)


def feed_events(response: httpx.Response) -> tuple[Calendar, dict[str, Any]]:
    """The feed parsed with icalendar, and its VEVENTs by UID."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = Calendar.from_ical(response.content)
    events = {str(event["UID"]): event for event in calendar.walk("VEVENT")}
    assert len(events) == len(calendar.walk("VEVENT")), "a UID appears twice"
    return calendar, events


def uid(appt: dict[str, Any]) -> str:
    return f"{appt['id']}@meetbridge"


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def book(stack: Stack, *appts: dict[str, Any]) -> None:
    for appt in appts:
        assert stack.deliver(meetergo_sim.booking_created(appt)).status_code == 202
    for appt in appts:
        stack.wait_for_status(appt["id"], "synced")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetbridge.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **stack.env}, timeout=60)


# --- the page and the feed -------------------------------------------------------------------------------

def test_page_and_feed_show_the_hosts_live_meetings(stack: Stack) -> None:
    first = appointment(days=2, hour=9, attendee=ANN)
    later = appointment(days=2, hour=11, attendee=BEN, meeting_type=meetergo_sim.PRODUCT_DEMO, minutes=45)
    dropped = appointment(days=2, hour=13, attendee=CARA)
    other = appointment(days=2, hour=9, host=MARIA, attendee=DAN)
    book(stack, first, later, dropped, other)

    links = page_links(stack, JOHN["email"].upper())  # any case names the same host
    assert links["calendar_url"] == links["page_url"] + "/calendar.ics"
    assert links["page_url"].startswith("https://meetbridge.test/hosts/")
    assert page_links(stack, JOHN["email"]) == links  # stable until rotated
    _, before = feed_events(fetch(stack, links["calendar_url"]))
    assert set(before) == {uid(first), uid(later), uid(dropped)}
    earlier_sequence = int(before[uid(later)]["SEQUENCE"])

    new_start = future_start(days=3, hour=14)
    rescheduled = moved(later, new_start, minutes=45)
    stack.deliver(meetergo_sim.booking_rescheduled(rescheduled, old_start=later["start"]))
    stack.deliver(cancelled_payload(dropped))
    stack.wait_for_status(later["id"], "synced")
    stack.wait_for_status(dropped["id"], "cancelled")
    views = {a["id"]: stack.appointment(a["id"]) for a in (first, later, other)}

    # The page: the host's two live meetings, by start, the rescheduled one at its new time.
    response = fetch(stack, links["page_url"])
    assert_private(response)
    meetings = page_meetings(response)
    assert [m["id"] for m in meetings] == [first["id"], later["id"]]
    shown_first, shown_later = meetings
    assert utc(shown_first["start"]) == utc(first["start"])
    assert utc(shown_later["start"]) == new_start
    assert utc(shown_later["end"]) == new_start + timedelta(minutes=45)
    assert shown_later["fallback"] == f"{new_start:%a %d %b %Y, %H:%M}–{new_start + timedelta(minutes=45):%H:%M} UTC"
    assert "Product Demo" in shown_later["text"] and "Ben Baker" in shown_later["text"]
    assert "Discovery Call" in shown_first["text"] and "Ann Archer" in shown_first["text"]
    for shown in meetings:
        view = views[shown["id"]]
        assert shown["join_url"] == view["zoom"]["join_url"]
        assert shown["host_link"] == view["host_link"] is not None
        assert "soon" not in shown["classes"] and "now" not in shown["classes"]
    for absent in (dropped["id"], other["id"], "Cara", "Dan Dunn", views[other["id"]]["zoom"]["join_url"],
                   views[other["id"]]["host_link"]):
        assert absent not in response.text

    # The feed: the same two CONFIRMED, the cancelled one CANCELLED, the other host's meeting absent.
    response = fetch(stack, links["calendar_url"])
    assert_private(response)
    calendar, events = feed_events(response)
    assert str(calendar["VERSION"]) == "2.0" and calendar.get("PRODID")
    assert str(calendar["X-WR-CALNAME"]) == f"Meetings of {JOHN['email']}"
    assert calendar.decoded("REFRESH-INTERVAL") == timedelta(minutes=15)
    assert str(calendar["X-PUBLISHED-TTL"]) == "PT15M"
    assert set(events) == {uid(first), uid(later), uid(dropped)}
    assert str(events[uid(dropped)]["STATUS"]) == "CANCELLED"
    assert "URL" not in events[uid(dropped)]
    for appt in (first, later):
        event, view = events[uid(appt)], views[appt["id"]]
        assert str(event["STATUS"]) == "CONFIRMED"
        assert str(event["URL"]) == view["host_link"]
        assert view["zoom"]["join_url"] in str(event["DESCRIPTION"])
        assert event.decoded("DTSTART").tzinfo is not None
    assert events[uid(first)].decoded("DTSTART") == utc(first["start"])
    assert events[uid(first)].decoded("DTEND") == utc(first["end"])
    assert str(events[uid(first)]["SUMMARY"]) == "Discovery Call with Ann Archer"
    assert events[uid(later)].decoded("DTSTART") == new_start
    assert events[uid(later)].decoded("DTEND") == new_start + timedelta(minutes=45)
    assert str(events[uid(later)]["SUMMARY"]) == "Product Demo with Ben Baker"
    later_sequence = int(events[uid(later)]["SEQUENCE"])
    assert later_sequence > earlier_sequence
    assert later_sequence > int(events[uid(first)]["SEQUENCE"])
    assert int(events[uid(first)]["SEQUENCE"]) == int(before[uid(first)]["SEQUENCE"])  # unchanged: not raised
    assert "DTSTART:" in response.text and re.search(r"^DTSTART:\d{8}T\d{6}Z\r$", response.text, re.M)

    # The other host sees only their own.
    maria = page_links(stack, MARIA["email"])
    assert [m["id"] for m in page_meetings(fetch(stack, maria["page_url"]))] == [other["id"]]
    _, maria_events = feed_events(fetch(stack, maria["calendar_url"]))
    assert set(maria_events) == {uid(other)}
    assert str(maria_events[uid(other)]["STATUS"]) == "CONFIRMED"


def test_a_meeting_moved_to_another_host_leaves_the_first_hosts_page(stack: Stack) -> None:
    appt = appointment(days=2, hour=15, attendee=ANN)
    book(stack, appt)
    john, maria = page_links(stack, JOHN["email"]), page_links(stack, MARIA["email"])
    _, events = feed_events(fetch(stack, john["calendar_url"]))
    sequence = int(events[uid(appt)]["SEQUENCE"])

    stack.deliver(meetergo_sim.booking_rescheduled(
        moved(appt, utc(appt["start"]), hosts=[meetergo_sim.host_entry(MARIA)], hostIds=[MARIA["id"]]),
        old_start=appt["start"]))
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["host_link"] is not None

    assert page_meetings(fetch(stack, john["page_url"])) == []
    _, events = feed_events(fetch(stack, john["calendar_url"]))
    assert str(events[uid(appt)]["STATUS"]) == "CANCELLED"
    assert int(events[uid(appt)]["SEQUENCE"]) > sequence
    assert view["host_link"] not in fetch(stack, john["calendar_url"]).text
    [shown] = page_meetings(fetch(stack, maria["page_url"]))
    assert shown["id"] == appt["id"] and shown["host_link"] == view["host_link"]
    _, events = feed_events(fetch(stack, maria["calendar_url"]))
    assert str(events[uid(appt)]["STATUS"]) == "CONFIRMED"


# --- the links -------------------------------------------------------------------------------------------

def test_tampered_and_rotated_links_are_refused(stack: Stack) -> None:
    appt = appointment(days=2, hour=10, attendee=ANN)
    other = appointment(days=2, hour=10, host=MARIA, attendee=DAN)
    book(stack, appt, other)
    links, maria = page_links(stack, JOHN["email"]), page_links(stack, MARIA["email"])
    token = urlsplit(links["page_url"]).path.rsplit("/", 1)[1]
    payload, signature = token.split(".")

    forged_payload = base64_encode(json.dumps([MARIA["email"], 0], separators=(",", ":"))).decode()
    tampered = [
        f"{payload}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",  # a changed signature
        f"{forged_payload}.{signature}",  # John's signature on Maria's name
        f"{payload}.{urlsplit(maria['page_url']).path.rsplit('.', 1)[1]}",  # Maria's signature on John's name
        payload,  # no signature at all
    ]
    for bad in tampered:
        for suffix in ("", "/calendar.ics"):
            response = stack.http.get(f"{stack.web_url}/hosts/{bad}{suffix}")
            assert response.status_code == 403, (bad, suffix)
            assert_private(response)
            assert len(response.content) < 2000 and JOHN["email"] not in response.text

    [shown] = page_meetings(fetch(stack, links["page_url"]))  # the genuine one opens
    [marias] = page_meetings(fetch(stack, maria["page_url"]))

    rotated = cli(stack, "host-page", JOHN["email"], "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    printed = dict(line.split(None, 1) for line in rotated.stdout.splitlines())
    new = {"page_url": printed["page:"].strip(), "calendar_url": printed["calendar:"].strip()}
    assert new["page_url"] != links["page_url"] and new["calendar_url"] != links["calendar_url"]
    for link in (links["page_url"], links["calendar_url"]):
        response = fetch(stack, link)
        assert response.status_code == 403, link
        assert_private(response)
    [now_shown] = page_meetings(fetch(stack, new["page_url"]))
    assert now_shown["id"] == appt["id"]
    # The host links the old page and feed showed (a leaked feed leaked them too) are revoked with them.
    assert now_shown["host_link"] != shown["host_link"]
    assert press_start(stack, shown["host_link"]).status_code == 410
    assert press_start(stack, now_shown["host_link"]).status_code == 302
    assert press_start(stack, marias["host_link"]).status_code == 302  # another host's are untouched
    _, events = feed_events(fetch(stack, new["calendar_url"]))
    assert set(events) == {uid(appt)}
    assert page_links(stack, JOHN["email"]) == {"email": JOHN["email"], **new}  # the admin API agrees

    # Without --rotate the CLI prints the current links; another host's links are untouched.
    shown = cli(stack, "host-page", JOHN["email"])
    assert shown.returncode == 0, shown.stderr
    assert new["page_url"] in shown.stdout and new["calendar_url"] in shown.stdout
    assert page_meetings(fetch(stack, maria["page_url"]))


def test_admin_api_needs_its_token_and_an_email(stack: Stack) -> None:
    url = f"{stack.web_url}/api/hosts/{JOHN['email']}/page"
    assert stack.http.get(url).status_code == 401
    assert stack.http.get(url, headers={"Authorization": "Bearer wrong-token-0123456789abc"}).status_code == 401
    response = stack.http.get(f"{stack.web_url}/api/hosts/not-an-email/page",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400


def test_a_link_signed_with_an_old_key_opens_while_the_key_is_a_fallback(make_stack: Callable[..., Stack]) -> None:
    old_key, new_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    before = make_stack(SECRET_KEY=old_key)
    appt = appointment(days=2, hour=10, attendee=ANN)
    book(before, appt)
    old_links = page_links(before, JOHN["email"])

    # The key rotated, the old one kept as a fallback: the old links still open; new ones use the new key.
    rolling = make_stack(workers=0, SECRET_KEY=new_key, SECRET_KEY_FALLBACKS=old_key)
    assert [m["id"] for m in page_meetings(fetch(rolling, old_links["page_url"]))] == [appt["id"]]
    assert uid(appt) in feed_events(fetch(rolling, old_links["calendar_url"]))[1]
    new_links = page_links(rolling, JOHN["email"])
    assert new_links["page_url"] != old_links["page_url"]
    assert [m["id"] for m in page_meetings(fetch(rolling, new_links["page_url"]))] == [appt["id"]]
    assert fetch(before, new_links["page_url"]).status_code == 403  # the old web never knew the new key

    # The fallback removed: the old links are dead, the new ones open.
    after = make_stack(workers=0, SECRET_KEY=new_key)
    for link in (old_links["page_url"], old_links["calendar_url"]):
        assert fetch(after, link).status_code == 403
    assert [m["id"] for m in page_meetings(fetch(after, new_links["page_url"]))] == [appt["id"]]
    assert uid(appt) in feed_events(fetch(after, new_links["calendar_url"]))[1]


# --- what a sync changes, and what the page highlights (pure: no stack) --------------------------------------

def _desired(start: datetime, minutes: int = 30, host: str = "John@Example.com", cancelled: bool = False):
    from schemas.events import Attendee, Host, MeetingType
    from workers.desired import Desired

    return Desired(appointment_id="a1", cancelled=cancelled, start=start, end=start + timedelta(minutes=minutes),
                   hosts=(Host(email=host),), attendees=(Attendee(email="ann@example.org", name="Ann Archer"),),
                   meeting_type=MeetingType(name="Discovery Call"))


def _after(record: Any, change: Any) -> Any:
    from dataclasses import replace

    values = {k: int(v) if k == "page_sequence" else v for k, v in change.fields.items()}
    return replace(record, **values)


def test_the_sequence_rises_on_each_significant_change_only() -> None:
    from workers.host_pages import CANCELLED_KEPT_SECONDS, page_change
    from workers.state import AppointmentRecord

    now = datetime.now(UTC).timestamp()
    start = future_start(days=2)
    record = AppointmentRecord("a1")
    first = page_change(_desired(start), record, "synced", now)
    assert first is not None and first.fields["page_sequence"] == "0" and first.fields["page_host"] == JOHN["email"]
    assert first.score == (start + timedelta(minutes=30)).timestamp() and first.moved_from is None
    record = _after(record, first)

    again = page_change(_desired(start), record, "synced", now + 60)  # a replay: nothing changed
    assert again is not None and again.fields == first.fields  # page_updated kept too
    longer = page_change(_desired(start, minutes=45), record, "synced", now)
    assert longer is not None and longer.fields["page_sequence"] == "1"
    record = _after(record, longer)
    moved_host = page_change(_desired(start, minutes=45, host=MARIA["email"]), record, "synced", now)
    assert moved_host is not None and moved_host.fields["page_sequence"] == "2"
    assert moved_host.moved_from == JOHN["email"] and moved_host.fields["page_host"] == MARIA["email"]
    assert moved_host.moved_score >= now + CANCELLED_KEPT_SECONDS
    record = _after(record, moved_host)
    gone = page_change(_desired(start, minutes=45, cancelled=True), record, "cancelled", now)
    assert gone is not None and gone.fields["page_sequence"] == "3" and gone.fields["page_status"] == "cancelled"
    assert gone.fields["page_host"] == MARIA["email"]  # it leaves the calendar it was in
    assert gone.score >= now + CANCELLED_KEPT_SECONDS

    from workers.desired import Desired

    unknown = Desired(appointment_id="a2", cancelled=True, start=None, end=None, hosts=(), attendees=(),
                      meeting_type=None)
    assert page_change(unknown, AppointmentRecord("a2"), "cancelled", now) is None


def test_a_meeting_about_to_start_or_under_way_is_highlighted() -> None:
    from workers.host_pages import HostMeeting

    start = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    meeting = HostMeeting("a1", start, start + timedelta(minutes=30), "Ann", "Discovery Call", 0, False)
    at = start.timestamp()
    assert meeting.state(at - 16 * 60) is None
    assert meeting.state(at - 15 * 60) == "soon"
    assert meeting.state(at - 1) == "soon"
    assert meeting.state(at) == "now"
    assert meeting.state(at + 29 * 60) == "now"
    assert meeting.state(at + 30 * 60) is None and not meeting.upcoming(at + 30 * 60)
    assert meeting.upcoming(at + 29 * 60)


def test_control_characters_in_a_name_do_not_reach_the_calendar_feed(stack: Stack) -> None:
    """RFC 5545 allows no control characters in a text value, and a strict calendar refuses the whole feed."""
    odd = appointment(days=2, hour=9, attendee={**ANN, "firstname": "Ann\x00\x0b\x1c", "lastname": "\x85Archer"})
    book(stack, odd)
    response = fetch(stack, page_links(stack, JOHN["email"])["calendar_url"])
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]", response.content)
    _, events = feed_events(response)
    assert "Ann Archer" in str(events[uid(odd)]["SUMMARY"])
