"""A test per fixture (every event type has one) and the negative cases, Zulip-style."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from schemas.events import AppointmentEvent
from schemas.meetergo import ALL_EVENT_TYPES, parse_delivery
from tests.support import FIXTURES
from tests.support import meetergo_fixture as load


def test_every_event_type_has_a_fixture() -> None:
    kinds = {load(path.stem).get("webhookType") or load(path.stem).get("event") for path in FIXTURES.glob("*.json")}
    assert kinds == set(ALL_EVENT_TYPES)


def test_booking_created() -> None:
    event = parse_delivery(load("booking_created")).event
    assert event is not None
    assert event.kind == "booking_created"
    assert event.appointment_id == "appt-uuid-12345"
    assert event.start == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert event.end == datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
    assert [h.email for h in event.hosts] == ["john@example.com"]
    assert event.hosts[0].name == "John Smith"
    assert event.attendees[0].email == "customer@example.com"
    assert event.attendees[0].timezone == "America/New_York"
    assert event.meeting_type is not None and event.meeting_type.name == "Discovery Call"
    assert event.occurred_at == datetime(2024, 1, 14, 15, 30, tzinfo=UTC)
    assert not event.cancelled


def test_nested_envelope_reads_the_same_as_the_flat_one() -> None:
    nested = parse_delivery(load("booking_created__nested_envelope")).event
    flat = parse_delivery(load("booking_created")).event
    assert nested == flat
    assert nested is not None and nested.fingerprint() == flat.fingerprint()


def test_booking_rescheduled_takes_the_new_time_from_rescheduled_appointment() -> None:
    event = parse_delivery(load("booking_rescheduled")).event
    assert event is not None
    assert event.start == datetime(2024, 1, 16, 13, 0, tzinfo=UTC)
    assert event.occurred_at == datetime(2024, 1, 14, 18, 0, tzinfo=UTC)


def test_reschedule_with_only_the_new_start_keeps_the_length() -> None:
    body = load("booking_rescheduled")
    body["rescheduledAppointment"] = {"start": "2024-01-20T10:00:00Z", "rescheduledAt": "2024-01-14T18:00:00Z"}
    event = parse_delivery(body).event
    assert event is not None
    assert event.start == datetime(2024, 1, 20, 10, tzinfo=UTC)
    assert event.end == datetime(2024, 1, 20, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize("fixture", ["booking_cancelled", "booking_cancelled__rest_shape"])
def test_both_cancel_shapes(fixture: str) -> None:
    event = parse_delivery(load(fixture)).event
    assert event is not None
    assert event.cancelled
    assert event.occurred_at == datetime(2024, 1, 14, 19, 0, tzinfo=UTC)
    assert event.cancel_reason


def test_cancel_that_says_not_cancelled_is_not_a_cancellation() -> None:
    # booking_cancelled also fires when one attendee leaves a group booking.
    body = load("booking_cancelled")
    body["isCancelled"] = False
    event = parse_delivery(body).event
    assert event is not None and not event.cancelled


@pytest.mark.parametrize("fixture", ["new_employee", "form_submission"])
def test_documented_events_the_service_does_not_act_on_are_ignored(fixture: str) -> None:
    delivery = parse_delivery(load(fixture))
    assert delivery.event is None


def test_event_round_trips_through_its_stored_form() -> None:
    event = parse_delivery(load("booking_created")).event
    assert event is not None
    assert AppointmentEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


WHOLE_BODIES = {
    "unknown event type": ({"webhookType": "booking_exploded"}, ["webhookType"]),
    "no event type": ({"id": "x"}, ["webhookType"]),
    "not an object": ([1, 2], ["_schema"]),
}
# Changes to the documented booking_created example.
PATCHES = {
    "end before start": ({"end": "2024-01-15T07:00:00+01:00"}, ["end"]),
    "year 9999": ({"start": "9999-01-15T09:00:00+01:00", "end": "9999-01-15T09:30:00+01:00"}, ["start", "end"]),
    "naive time": ({"start": "2024-01-15T09:00:00"}, ["start"]),
    "longer than a day": ({"end": "2024-01-17T09:00:00+01:00"}, ["end"]),
    "unknown time zone": ({"attendees": [{"email": "a@b.co", "timezone": "Mars/Olympus"}]}, ["attendees"]),
    "email that is not one": ({"hosts": [{"email": "john at example"}]}, ["hosts"]),
    "no hosts": ({"hosts": []}, ["hosts"]),
    "wrong type": ({"hosts": "john@example.com"}, ["hosts"]),
    "id with a slash": ({"id": "../../etc"}, ["id"]),
    "missing id": ({"id": None}, ["id"]),
}


@pytest.mark.parametrize("case", sorted(WHOLE_BODIES) + sorted(PATCHES))
def test_invalid_deliveries_name_the_field(case: str) -> None:
    if case in WHOLE_BODIES:
        body, fields = WHOLE_BODIES[case]
    else:
        patch, fields = PATCHES[case]
        body = {**load("booking_created"), **patch}
    with pytest.raises(ValidationError) as raised:
        parse_delivery(body)
    assert set(fields) <= set(raised.value.messages), raised.value.messages
