"""Folding events into the appointment's current state: order of arrival never matters."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from schemas.events import AppointmentEvent, Attendee, Host, MeetingType
from workers.desired import answering, fold, needs_confirmation

T0 = datetime(2030, 1, 1, 9, tzinfo=UTC)
JOHN, MARIA = Host("john@example.com", "John"), Host("maria@example.com", "Maria")
JANE = Attendee("jane@example.com", "Jane", "Europe/Berlin")


def event(kind: str, at_minutes: int, start_hour: int = 9, hosts=(JOHN,), cancelled=False,
          attendees=(JANE,), **extra) -> AppointmentEvent:
    start = T0.replace(hour=start_hour)
    return AppointmentEvent(
        kind=kind, appointment_id="a1", occurred_at=T0 - timedelta(days=1) + timedelta(minutes=at_minutes),
        start=start, end=start + timedelta(minutes=30), hosts=hosts, attendees=attendees,
        meeting_type=MeetingType("mt", "call", "Call"), cancelled=cancelled, **extra)


def test_nothing_known_is_nothing_to_do() -> None:
    assert fold([]) is None


def test_newest_reschedule_wins_in_any_order() -> None:
    events = [event("booking_created", 0, 9), event("booking_rescheduled", 10, 11),
              event("booking_rescheduled", 20, 14)]
    for order in itertools.permutations(events):
        desired = fold(list(order))
        assert desired is not None and desired.start == T0.replace(hour=14)


def test_cancellation_is_final_against_late_creates_and_reschedules() -> None:
    events = [event("booking_created", 0), event("booking_cancelled", 5, cancelled=True, cancel_reason="no"),
              event("booking_rescheduled", 10, 15)]
    for order in itertools.permutations(events):
        desired = fold(list(order))
        assert desired is not None and desired.cancelled and desired.cancel_reason == "no"


def test_a_cancel_alone_is_a_tombstone() -> None:
    bare = AppointmentEvent(kind="booking_cancelled", appointment_id="a1", occurred_at=T0, cancelled=True)
    desired = fold([bare])
    assert desired is not None and desired.cancelled and desired.start is None


def test_a_newer_readback_overrules_a_group_booking_cancel() -> None:
    cancel = event("booking_cancelled", 5, cancelled=True)
    readback = event("readback", 6, cancelled=False)
    assert needs_confirmation([event("booking_created", 0), cancel])
    desired = fold([event("booking_created", 0), cancel, readback])
    assert desired is not None and not desired.cancelled
    assert not needs_confirmation([cancel, readback])


def test_fields_an_event_leaves_out_come_from_older_ones() -> None:
    bare_readback = AppointmentEvent(kind="readback", appointment_id="a1", occurred_at=T0,
                                     start=T0.replace(hour=16), end=T0.replace(hour=17))
    desired = fold([event("booking_created", 0), bare_readback])
    assert desired is not None
    assert desired.start == T0.replace(hour=16)
    assert desired.hosts == (JOHN,)
    assert desired.meeting_type is not None and desired.meeting_type.name == "Call"
    assert desired.time_zone == "Europe/Berlin"


def test_host_change_and_alternative_hosts() -> None:
    desired = fold([event("booking_created", 0, hosts=(JOHN,)), event("booking_rescheduled", 5, hosts=(MARIA, JOHN))])
    assert desired is not None
    assert desired.host == MARIA
    assert desired.alternative_hosts == ("john@example.com",)
    assert desired.duration_minutes == 30


def test_equal_timestamps_are_decided_by_intake_order_never_by_listing_order() -> None:
    # meetergo dates two reschedules to the same second; the intake recorded them in some order (seq).
    to_eleven, to_fourteen = event("booking_rescheduled", 10, 11), event("booking_rescheduled", 10, 14)
    for first, second in ((to_eleven, to_fourteen), (to_fourteen, to_eleven)):
        recorded = [replace(first, seq=2), replace(second, seq=3), event("booking_created", 0)]
        results = {fold(list(order)) for order in itertools.permutations(recorded)}
        assert len(results) == 1, "every listing order folds alike"
        [desired] = results
        assert desired is not None and desired.start == second.start, "the one recorded later wins"


def test_a_cancel_naming_some_attendees_of_a_group_is_those_attendees_leaving() -> None:
    people = (Attendee("ann@example.com", "Ann"), Attendee("bob@example.com", "Bob"), Attendee("", "Pat", None, "+1"))
    created = event("booking_created", 0, attendees=people)
    bob_leaves = event("booking_cancelled", 5, cancelled=True, attendees=(people[1],))
    for order in itertools.permutations([created, bob_leaves]):
        desired = fold(list(order))
        assert desired is not None and not desired.cancelled
        assert [a.name for a in desired.attendees] == ["Ann", "Pat"]
    everyone_cancels = event("booking_cancelled", 6, cancelled=True, attendees=people)
    desired = fold([created, bob_leaves, everyone_cancels])
    assert desired is not None and desired.cancelled
    assert needs_confirmation([created, bob_leaves]), "with a read-back configured, meetergo decides"


def test_a_readback_answering_a_cancel_stands_even_when_meetergo_did_not_date_a_change() -> None:
    created = event("booking_created", 0)
    cancel = event("booking_cancelled", 5, cancelled=True)
    still_on = event("readback", 0, cancelled=False)  # dated by meetergo's updatedAt, older than the webhook
    desired = fold([created, cancel, answering(still_on, [created, cancel])])
    assert desired is not None and not desired.cancelled
    newer = event("readback", 9, cancelled=False)
    assert answering(newer, [created, cancel]) is newer
