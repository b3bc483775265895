"""Input that once crashed the intake or pinned an appointment's state: each a clear 400 or a bounded effect."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from sandbox import meetergo as meetergo_sim
from tests.support import WEBHOOK_TOKEN, appointment
from tests.webhooks.test_fuzz import service_settings
from webhooks import create_app
from workers.desired import fold
from workers.state import KEYS, Store


@pytest.fixture
def client(redis_client: redis.Redis) -> FlaskClient:
    return create_app(service_settings()).test_client()


def deliver(client: FlaskClient, payload: dict[str, Any]) -> Any:
    return client.post(f"/webhooks/meetergo?token={WEBHOOK_TOKEN}", data=json.dumps(payload),
                       content_type="application/json")


@pytest.mark.parametrize("zone", ["Europe", "America/Argentina", "x" * 300, "Europe/" + "a" * 300, "../../etc/passwd",
                                  "Europe/Berlin\n", ""])
def test_a_time_zone_that_is_not_one_is_a_400(client: FlaskClient, redis_client: redis.Redis, zone: str) -> None:
    appt = appointment()
    appt["attendees"][0]["timezone"] = zone
    response = deliver(client, meetergo_sim.booking_created(appt))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "timezone" in json.dumps(response.get_json()["details"])
    assert redis_client.dbsize() == 0 or not redis_client.exists(KEYS.appointment(appt["id"]))


def test_an_id_with_a_trailing_newline_is_a_400(client: FlaskClient, redis_client: redis.Redis) -> None:
    appt = appointment(id="appt-1\n")
    response = deliver(client, meetergo_sim.booking_created(appt))
    assert response.status_code == 400
    assert "id" in response.get_json()["details"]
    assert not list(redis_client.scan_iter("mb:appt:*"))


def test_a_payload_dated_in_2099_is_bounded_by_when_it_arrived(client: FlaskClient, redis_client: redis.Redis) -> None:
    appt = appointment()
    cancelled = meetergo_sim.booking_cancelled({**appt, "updatedAt": "2099-06-01T00:00:00.000Z",
                                                "cancel": {"cancelledAt": "2099-06-01T00:00:00.000Z",
                                                           "cancelledBy": "attendee", "reason": "x"}})
    before = datetime.now(UTC)
    assert deliver(client, cancelled).status_code == 202
    [event] = Store(redis_client).events(appt["id"])
    assert event.occurred_at.year == 2099  # meetergo's word is kept as it came
    assert before <= event.received_at <= datetime.now(UTC)
    assert event.effective_at <= event.received_at + timedelta(minutes=2)


def test_a_later_read_back_undoes_a_cancellation_dated_in_2099() -> None:
    from schemas.events import AppointmentEvent, Host

    received = datetime(2030, 1, 1, 9, tzinfo=UTC)
    start = received + timedelta(days=2)
    bogus = AppointmentEvent(kind="booking_cancelled", appointment_id="a1", cancelled=True,
                             occurred_at=datetime(2099, 1, 1, tzinfo=UTC), received_at=received)
    created = AppointmentEvent(kind="booking_created", appointment_id="a1", occurred_at=received - timedelta(hours=1),
                               received_at=received - timedelta(hours=1), start=start,
                               end=start + timedelta(minutes=30), hosts=(Host("john@example.com"),))
    truth = AppointmentEvent(kind="readback", appointment_id="a1", cancelled=False,
                             occurred_at=received + timedelta(minutes=10), received_at=received + timedelta(minutes=10),
                             start=start, end=start + timedelta(minutes=30), hosts=(Host("john@example.com"),))
    assert fold([created, bogus]).cancelled
    assert not fold([created, bogus, truth]).cancelled  # without the bound, 2099 would win for 69 years
