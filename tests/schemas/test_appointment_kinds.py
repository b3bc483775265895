"""What the intake reads of an appointment's kind: its attendees (groups, guests, phone-only) and channel."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from sandbox import meetergo as meetergo_sim
from schemas.meetergo import parse_delivery
from tests.support import appointment
from workers.desired import fold


def created(**changes):
    appt = appointment()
    appt.update(changes)
    return meetergo_sim.booking_created(appt)


def test_every_attendee_of_a_group_is_read_with_their_guests() -> None:
    people = [meetergo_sim.attendee_entry({"email": f"p{n}@example.com", "firstname": f"P{n}"}) for n in range(3)]
    people[1]["bringalongEmails"] = ["Guest1@example.com", "guest2@example.com"]
    event = parse_delivery(created(attendees=people)).event
    assert [a.email for a in event.attendees] == ["p0@example.com", "p1@example.com", "p2@example.com"]
    assert event.attendees[1].guests == ("guest1@example.com", "guest2@example.com")
    desired = fold([event])
    assert desired.group and [a.email for a in desired.attendees] == [a.email for a in event.attendees]


def test_a_phone_only_attendee_is_accepted() -> None:
    person = meetergo_sim.attendee_entry({"firstname": "Pat", "phone": "+49 30 1234567"})
    person["email"] = None
    event = parse_delivery(created(attendees=[person])).event
    assert event.attendees[0].email == "" and event.attendees[0].phone == "+49 30 1234567"


def test_an_attendee_with_neither_email_nor_phone_is_refused() -> None:
    person = meetergo_sim.attendee_entry({"firstname": "Nobody"})
    person["email"] = None
    with pytest.raises(ValidationError) as refused:
        parse_delivery(created(attendees=[person]))
    assert "phone" in str(refused.value.messages)


def test_more_than_five_guests_are_refused() -> None:
    person = meetergo_sim.attendee_entry({"email": "a@example.com"})
    person["bringalongEmails"] = [f"g{n}@example.com" for n in range(6)]
    with pytest.raises(ValidationError):
        parse_delivery(created(attendees=[person]))


def test_the_channel_and_meetergos_own_meeting_link_are_read() -> None:
    event = parse_delivery(created(meetingInfo={"channel": "Phone", "meetingLink": None},
                                   location="Main St 1")).event
    assert (event.channel, event.meeting_link, event.location) == ("phone", None, "Main St 1")
    zoom = parse_delivery(created(meetingInfo={"channel": "zoom", "meetingLink": "https://zoom.us/j/123456789"}))
    assert zoom.event.meeting_link == "https://zoom.us/j/123456789"
    assert fold([zoom.event]).channel == "zoom"


def test_a_phone_only_attendee_may_send_an_empty_email() -> None:
    person = meetergo_sim.attendee_entry({"firstname": "Pat", "phone": "+49 30 1234567"})
    person["email"] = ""
    event = parse_delivery(created(attendees=[person])).event
    assert event.attendees[0].email == "" and event.attendees[0].phone == "+49 30 1234567"
