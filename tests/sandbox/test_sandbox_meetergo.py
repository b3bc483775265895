"""meetergo simulator over HTTP: auth, webhooks, bookings, appointments, delivery and payload builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from sandbox import meetergo
from tests.sandbox.sandbox_helpers import WebhookReceiver, configure, wait_for

START = "2031-01-15T09:00:00+01:00"
PLATFORM_KEY = "ak_live:6f1c2d3e-0000-4000-8000-000000000001:s3cret"
DOCUMENTED_CREATED_KEYS = [
    "webhookType", "id", "secret", "start", "end", "location", "isCancelled", "rescheduledAt", "meetingInfo",
    "attendees", "hosts", "hostIds", "meetingType", "meetingTypeId", "companyId", "createdAt", "updatedAt",
]  # fmt: skip


def booking_body(**overrides: Any) -> dict[str, Any]:
    return {
        "meetingTypeId": "mt-uuid-456",
        "start": START,
        "hostIds": ["host-uuid-123"],
        "attendee": {
            "email": "client@example.com",
            "firstname": "Jane",
            "lastname": "Smith",
            "receiveReminders": True,
            "notes": {},
        },
        **overrides,
    }


def book(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v4/booking", json=booking_body(**overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


def subscribe(client: httpx.Client, endpoint: str, *events: str) -> dict[str, Any]:
    event_types = list(events) or ["booking_created", "booking_rescheduled", "booking_cancelled"]
    response = client.post("/webhooks", json={"endpoint": endpoint, "eventTypes": event_types})
    assert response.status_code == 201, response.text
    return dict(response.json())


def deliveries(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        body = client.get("/_sandbox/deliveries").json()
        return body["deliveries"] if len(body["deliveries"]) >= count and body["pending"] == 0 else None

    return list(wait_for(done))


def millis(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------- auth


def test_missing_and_unknown_keys_are_401(meetergo_api: httpx.Client) -> None:
    missing = meetergo_api.get("/v4/user", headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.json() == {
        "statusCode": 401,
        "message": "Missing authorization header",
        "error": "Unauthorized",
    }
    unknown = meetergo_api.get("/v4/user", headers={"Authorization": "Bearer rgo-nope"})
    assert unknown.json() == {"statusCode": 401, "message": "Invalid API key", "error": "Unauthorized"}


def test_platform_keys_need_the_acting_user_header(meetergo_api: httpx.Client) -> None:
    configure(meetergo_api, api_keys=[meetergo.DEFAULT_API_KEY, PLATFORM_KEY])
    platform = {"Authorization": f"Bearer {PLATFORM_KEY}"}
    missing = meetergo_api.get("/v4/user", headers=platform)
    assert missing.status_code == 400
    assert (
        missing.json()["message"]
        == "Missing required header 'x-meetergo-api-user-id' for API key authentication"
    )
    acting = meetergo_api.get("/v4/user", headers={**platform, "x-meetergo-api-user-id": "host-uuid-123"})
    assert acting.status_code == 200
    stranger = meetergo_api.get("/v4/user", headers={**platform, "x-meetergo-api-user-id": "someone-else"})
    assert stranger.status_code == 403


def test_personal_tokens_must_not_name_another_user(meetergo_api: httpx.Client) -> None:
    response = meetergo_api.get("/v4/user", headers={"x-meetergo-api-user-id": "host-uuid-456"})
    assert response.status_code == 403
    assert response.json()["statusCode"] == 403


def test_rate_limit_per_minute(meetergo_api: httpx.Client) -> None:
    configure(meetergo_api, rate_limit_per_minute=2)
    assert [meetergo_api.get("/v4/user").status_code for _ in range(3)] == [200, 200, 429]
    limited = meetergo_api.get("/v4/user")
    assert limited.json() == {"statusCode": 429, "message": "Too Many Requests", "error": "Too Many Requests"}
    assert int(limited.headers["Retry-After"]) >= 1


# --------------------------------------------------------------------------------------- webhooks


def test_webhook_management(meetergo_api: httpx.Client) -> None:
    created = meetergo_api.post(
        "/webhooks",
        json={"endpoint": "https://example.com/hook", "description": "d", "eventTypes": ["booking_created"]},
    )
    assert created.status_code == 201
    webhook = created.json()
    assert set(webhook) == {"id", "endpoint", "description", "eventTypes", "companyId", "createdAt"}
    assert webhook["companyId"] == meetergo.COMPANY_ID
    assert meetergo_api.get("/webhooks").json() == [webhook]

    patched = meetergo_api.patch(f"/webhooks/{webhook['id']}", json={"eventTypes": ["booking_cancelled"]})
    assert patched.status_code == 200 and patched.json()["eventTypes"] == ["booking_cancelled"]
    assert meetergo_api.delete(f"/webhooks/{webhook['id']}").status_code == 204
    assert meetergo_api.delete(f"/webhooks/{webhook['id']}").status_code == 404
    assert meetergo_api.get("/webhooks").json() == []


def test_webhook_validation_and_limit(meetergo_api: httpx.Client) -> None:
    invalid = meetergo_api.post("/webhooks", json={"endpoint": "ftp://x", "eventTypes": ["booking_exploded"]})
    assert invalid.status_code == 400
    assert {error["field"] for error in invalid.json()["errors"]} == {"endpoint", "eventTypes"}
    for index in range(6):
        subscribe(meetergo_api, f"https://example.com/{index}")
    seventh = meetergo_api.post(
        "/webhooks", json={"endpoint": "https://example.com/7", "eventTypes": ["booking_created"]}
    )
    assert seventh.status_code == 406
    assert seventh.json()["message"] == "Limit reached"


# ---------------------------------------------------------------------------- bookings and webhooks


def test_booking_delivers_booking_created(meetergo_api: httpx.Client, receiver: WebhookReceiver) -> None:
    subscribe(meetergo_api, f"{receiver.url}?token=very-secret-token")
    created = book(meetergo_api)
    assert set(created) == {"appointmentId", "secret"}

    [payload] = receiver.bodies(1)
    assert list(payload) == DOCUMENTED_CREATED_KEYS
    assert payload["webhookType"] == "booking_created"
    assert payload["id"] == created["appointmentId"]
    assert payload["secret"] == created["secret"]
    assert (payload["start"], payload["end"]) == (START, "2031-01-15T09:30:00+01:00")
    assert payload["hosts"][0]["email"] == "john@example.com"
    assert payload["hostIds"] == ["host-uuid-123"]
    assert payload["attendees"][0]["email"] == "client@example.com"
    assert payload["attendees"][0]["fullname"] == "Jane Smith"
    assert payload["meetingType"]["meetingInfo"] == {"name": "Discovery Call", "duration": 30}

    [record] = deliveries(meetergo_api, 1)
    assert record["status"] == 200
    assert record["webhookType"] == "booking_created"
    assert record["appointment_id"] == created["appointmentId"]
    assert "very-secret-token" not in record["endpoint"]
    assert record["body"] == payload


def test_nested_envelope(meetergo_api: httpx.Client, receiver: WebhookReceiver) -> None:
    configure(meetergo_api, envelope="nested")
    subscribe(meetergo_api, receiver.url)
    created = book(meetergo_api)
    [payload] = receiver.bodies(1)
    assert payload["event"] == "booking_created"
    assert payload["data"]["id"] == created["appointmentId"]
    assert "webhookType" not in payload["data"]


def test_reschedule_and_cancel_deliver_ordered_events(
    meetergo_api: httpx.Client, receiver: WebhookReceiver
) -> None:
    subscribe(meetergo_api, receiver.url)
    appointment_id = book(meetergo_api)["appointmentId"]
    moved = meetergo_api.post(
        f"/v4/appointment/{appointment_id}/reschedule", json={"start": "2031-01-16T14:00:00+01:00"}
    )
    assert moved.status_code == 200
    assert (moved.json()["start"], moved.json()["end"]) == (
        "2031-01-16T14:00:00+01:00",
        "2031-01-16T14:30:00+01:00",
    )
    cancelled = meetergo_api.post(f"/v4/appointment/{appointment_id}/cancel", json={"reason": "Conflict"})
    assert cancelled.status_code == 200

    created, rescheduled, cancel = receiver.bodies(3)
    assert [body["webhookType"] for body in (created, rescheduled, cancel)] == [
        "booking_created", "booking_rescheduled", "booking_cancelled",
    ]  # fmt: skip
    assert rescheduled["oldStartDate"] == START
    assert rescheduled["rescheduledAppointment"]["id"] == appointment_id
    assert rescheduled["rescheduledAppointment"]["start"] == "2031-01-16T14:00:00+01:00"
    assert rescheduled["rescheduledAppointment"]["rescheduledAt"]
    assert cancel["isCancelled"] is True
    assert set(cancel["cancel"]) == {"cancelledAt", "cancelledBy", "reason"}
    assert cancel["cancel"]["reason"] == "Conflict"
    # Each later event carries a strictly later timestamp.
    assert (
        millis(created["updatedAt"])
        < millis(rescheduled["rescheduledAt"])
        < millis(cancel["cancel"]["cancelledAt"])
    )
    assert millis(rescheduled["updatedAt"]) < millis(cancel["updatedAt"])

    again = meetergo_api.post(f"/v4/appointment/{appointment_id}/cancel", json={})
    assert again.status_code == 400


def test_rest_cancel_shape_in_webhooks_and_get(meetergo_api: httpx.Client, receiver: WebhookReceiver) -> None:
    configure(meetergo_api, cancel_shape="rest")
    subscribe(meetergo_api, receiver.url, "booking_cancelled")
    appointment_id = book(meetergo_api)["appointmentId"]
    meetergo_api.post(f"/v4/appointment/{appointment_id}/cancel")
    [payload] = receiver.bodies(1)
    assert set(payload["cancel"]) == {"actionSource", "actionAt", "actionBy", "reason"}
    appointment = meetergo_api.get(f"/v4/appointment/{appointment_id}").json()
    assert appointment["isCancelled"] is True
    assert set(appointment["cancel"]) == {"actionSource", "actionAt", "actionBy", "reason"}


def test_get_appointment_returns_the_rest_object(meetergo_api: httpx.Client) -> None:
    appointment_id = book(meetergo_api)["appointmentId"]
    body = meetergo_api.get(f"/v4/appointment/{appointment_id}").json()
    for name in (
        "id",
        "secret",
        "start",
        "end",
        "isCancelled",
        "cancel",
        "attendees",
        "attendeeIds",
        "meetingTypeId",
        "hostIds",
        "hostingInfo",
        "meetingInfo",
        "companyId",
        "createdAt",
        "updatedAt",
        "rescheduledAt",
    ):
        assert name in body
    assert body["cancel"] is None
    assert body["hostingInfo"]["mainHost"] == "host-uuid-123"
    assert body["attendeeIds"] == [body["attendees"][0]["id"]]
    missing = meetergo_api.get("/v4/appointment/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "Not Found")


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"hostIds": []}, 400, "hostIds or queueId is required"),
        ({"duration": 45}, 400, "Duration must match one of the allowed durations for this meeting type"),
        ({"meetingTypeId": "mt-unknown"}, 404, "Meeting type not found"),
        ({"start": "2031-01-15T09:00:00"}, 400, "Validation failed"),
        ({"attendee": {"email": "client@example.com", "firstname": "Jane"}}, 400, "Validation failed"),
    ],
)
def test_bad_bookings(
    meetergo_api: httpx.Client, overrides: dict[str, Any], status: int, message: str
) -> None:
    response = meetergo_api.post("/v4/booking", json=booking_body(**overrides))
    assert response.status_code == status
    assert response.json()["message"] == message


def test_missing_attendee_fields_are_listed(meetergo_api: httpx.Client) -> None:
    response = meetergo_api.post("/v4/booking", json=booking_body(attendee={"email": "bad"}))
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"attendee.email", "attendee.firstname", "attendee.receiveReminders", "attendee.notes"}


def test_taken_slots_are_refused(meetergo_api: httpx.Client) -> None:
    first = book(meetergo_api)["appointmentId"]
    overlapping = meetergo_api.post("/v4/booking", json=booking_body(start="2031-01-15T08:15:00Z"))
    assert (overlapping.status_code, overlapping.json()["message"]) == (
        400,
        "The selected time slot is no longer available",
    )
    assert meetergo_api.post("/v4/booking", json=booking_body(hostIds=["host-uuid-456"])).status_code == 201
    second = book(meetergo_api, start="2031-01-15T10:00:00+01:00")["appointmentId"]
    onto_first = {"start": START}
    assert meetergo_api.post(f"/v4/appointment/{second}/reschedule", json=onto_first).status_code == 400
    forced = meetergo_api.post(
        f"/v4/appointment/{second}/reschedule", json={**onto_first, "ignoreAvailability": True}
    )
    assert forced.status_code == 200
    meetergo_api.post(f"/v4/appointment/{first}/cancel")
    assert (
        meetergo_api.post("/v4/booking", json=booking_body(start="2031-01-15T12:00:00+01:00")).status_code
        == 201
    )


def test_paginated_appointments_follow_page_base(meetergo_api: httpx.Client) -> None:
    for start in ("2031-01-17T09:00:00Z", "2031-01-15T09:00:00Z", "2031-01-16T09:00:00Z"):
        book(meetergo_api, start=start)
    first = meetergo_api.get("/v4/appointment/paginated", params={"page": 1, "limit": 2}).json()
    assert first["total"] == 3
    assert [a["start"][:10] for a in first["appointments"]] == ["2031-01-15", "2031-01-16"]
    second = meetergo_api.get("/v4/appointment/paginated", params={"page": 2, "pageSize": 2}).json()
    assert [a["start"][:10] for a in second["appointments"]] == ["2031-01-17"]
    assert meetergo_api.get("/v4/appointment/paginated", params={"page": 0}).status_code == 400

    configure(meetergo_api, page_base=0)
    zero = meetergo_api.get("/v4/appointment/paginated", params={"page": 0, "pageSize": 2}).json()
    assert [a["start"][:10] for a in zero["appointments"]] == ["2031-01-15", "2031-01-16"]
    assert (
        meetergo_api.get("/v4/appointment/paginated").json()["appointments"][0]["start"][:10] == "2031-01-15"
    )


def test_users_and_registries(meetergo_api: httpx.Client) -> None:
    page = meetergo_api.get("/v4/user", params={"limit": 1, "offset": 1}).json()
    assert (page["total"], page["count"], page["offset"]) == (2, 1, 1)
    assert page["users"][0]["email"] == "maria@example.com"
    user = {
        "id": "host-uuid-789",
        "email": "li@example.com",
        "givenName": "Li",
        "familyName": "Wei",
        "slug": "li-wei",
    }
    assert meetergo_api.post("/_sandbox/users", json=user).status_code == 200
    assert meetergo_api.get("/v4/user").json()["total"] == 3
    kind = {"id": "mt-uuid-999", "slug": "deep-dive", "meetingInfo": {"name": "Deep Dive", "duration": 60}}
    assert meetergo_api.post("/_sandbox/meeting_types", json=[kind]).status_code == 200
    created = book(meetergo_api, meetingTypeId="mt-uuid-999", hostIds=["host-uuid-789"])
    appointment = meetergo_api.get(f"/v4/appointment/{created['appointmentId']}").json()
    assert appointment["end"] == "2031-01-15T10:00:00+01:00"
    assert meetergo_api.get("/v4/user", params={"limit": 101}).status_code == 400


# ------------------------------------------------------------------------------- sandbox delivery


def test_inserted_appointments_are_not_delivered_until_asked(
    meetergo_api: httpx.Client, receiver: WebhookReceiver
) -> None:
    subscribe(meetergo_api, receiver.url)
    appointment = meetergo.make_appointment(datetime(2031, 2, 1, 9, tzinfo=UTC), id="lost-appt")
    inserted = meetergo_api.post("/_sandbox/appointments", json=appointment)
    assert inserted.status_code == 200
    assert meetergo_api.get("/v4/appointment/lost-appt").status_code == 200
    assert meetergo_api.get("/_sandbox/deliveries").json() == {"deliveries": [], "pending": 0}

    receiver.status = 500
    answered = meetergo_api.post(
        "/_sandbox/deliver",
        json={"appointment_id": "lost-appt", "webhookType": "booking_created", "times": 2},
    )
    assert answered.status_code == 200
    assert [item["status"] for item in answered.json()["responses"]] == [500, 500]
    assert [body["id"] for body in receiver.bodies(2)] == ["lost-appt", "lost-appt"]
    assert len(deliveries(meetergo_api, 2)) == 2


def test_unreachable_endpoint_is_recorded_without_status(meetergo_api: httpx.Client) -> None:
    subscribe(meetergo_api, "http://127.0.0.1:9/hook")  # nothing listens on the discard port
    book(meetergo_api)
    [record] = deliveries(meetergo_api, 1)
    assert record["status"] is None
    assert record["error"]


# ------------------------------------------------------------------------------- payload builders


def test_make_appointment_matches_the_documented_example() -> None:
    appointment = meetergo.make_appointment(datetime(2031, 1, 15, 9, tzinfo=timezone(timedelta(hours=1))))
    assert list(meetergo.booking_created(appointment)) == DOCUMENTED_CREATED_KEYS
    assert (appointment["start"], appointment["end"]) == (START, "2031-01-15T09:30:00+01:00")
    assert appointment["hosts"][0] == {
        "id": "host-uuid-123",
        "email": "john@example.com",
        "givenName": "John",
        "familyName": "Smith",
        "fullName": "John Smith",
        "slug": "john-smith",
        "picture": None,
    }
    assert appointment["attendees"][0]["email"] == "customer@example.com"
    assert appointment["meetingTypeId"] == "mt-uuid-456"
    assert appointment["companyId"] == "company-uuid-789"
    maria = meetergo.make_appointment(datetime(2031, 1, 15, 9), host=meetergo.MARIA, minutes=45, id="x")
    assert (maria["id"], maria["hostIds"], maria["end"]) == (
        "x",
        ["host-uuid-456"],
        "2031-01-15T09:45:00+00:00",
    )


def test_payload_builders_are_pure() -> None:
    appointment = meetergo.make_appointment(datetime(2031, 1, 15, 9, tzinfo=UTC))
    snapshot = dict(appointment)
    rescheduled = meetergo.booking_rescheduled(appointment, "2031-01-14T09:00:00+00:00")
    assert rescheduled["oldStartDate"] == "2031-01-14T09:00:00+00:00"
    assert rescheduled["rescheduledAppointment"]["rescheduledAt"]
    rest = meetergo.booking_cancelled(appointment, shape="rest")
    assert rest["isCancelled"] is True and rest["cancel"]["actionBy"] == "host-uuid-123"
    nested = meetergo.envelope(rest, "nested")
    assert nested["event"] == "booking_cancelled" and nested["data"]["cancel"] == rest["cancel"]
    assert meetergo.envelope(rest) == rest
    assert appointment == snapshot


@pytest.mark.parametrize("shape", ["leaver", "remaining"])
def test_one_attendee_leaving_a_group_keeps_the_appointment(meetergo_api: httpx.Client, receiver: WebhookReceiver,
                                                            shape: str) -> None:
    configure(meetergo_api, attendee_cancel_payload=shape)
    subscribe(meetergo_api, receiver.url, "booking_cancelled")
    appt = meetergo.make_appointment(datetime(2031, 1, 15, 9, tzinfo=UTC))
    appt["attendees"].append(meetergo.attendee_entry({"email": "bob@example.com", "firstname": "Bob"}))
    meetergo_api.post("/_sandbox/appointments", json=appt).raise_for_status()
    bob = appt["attendees"][1]["id"]
    left = meetergo_api.post(f"/v4/appointment/{appt['id']}/cancel", json={"attendeeId": bob})
    assert left.status_code == 200 and left.json()["isCancelled"] is False
    assert [a["email"] for a in left.json()["attendees"]] == ["customer@example.com"]
    [payload] = receiver.bodies(1)
    assert payload["webhookType"] == "booking_cancelled"
    if shape == "leaver":
        assert payload["isCancelled"] is True and [a["id"] for a in payload["attendees"]] == [bob]
    else:
        assert payload["isCancelled"] is False and bob not in [a["id"] for a in payload["attendees"]]
    last = meetergo_api.post(f"/v4/appointment/{appt['id']}/cancel", json={"attendeeId": appt["attendees"][0]["id"]})
    assert last.json()["isCancelled"] is True, "the last attendee's leaving cancels the appointment"
