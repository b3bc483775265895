"""The receiver's answers (CONTRACT.md): every refused delivery leaves Redis exactly as it was."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from tests.support import WEBHOOK_TOKEN, Stack, check_webhook
from tests.support import meetergo_fixture as fixture


def post(stack: Stack, body: bytes, *, token: str | None = WEBHOOK_TOKEN,
         content_type: str = "application/json") -> httpx.Response:
    assert stack.web_url is not None
    params = {"token": token} if token is not None else {}
    return stack.http.post(f"{stack.web_url}/webhooks/meetergo", params=params, content=body,
                           headers={"Content-Type": content_type})


@pytest.fixture
def web(make_stack) -> Stack:  # no worker: what is queued stays in Redis to be looked at
    return make_stack(workers=0)


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key except the metrics counters, with its content."""
    state: dict[str, object] = {}
    for key in client.scan_iter():
        if key == "mb:metrics":
            continue
        kind = client.type(key)
        state[key] = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                      "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind](key)
    return state


def test_accepted_delivery_is_recorded_and_queued(web: Stack, redis_client: redis.Redis) -> None:
    assert check_webhook(web, "booking_created", 202) == {"status": "accepted", "appointment_id": "appt-uuid-12345"}
    assert redis_client.llen("meetbridge") == 1
    assert redis_client.hget("mb:appt:appt-uuid-12345", "status") == "pending"


def test_a_repeated_delivery_is_a_duplicate_and_queues_nothing_more(web: Stack, redis_client: redis.Redis) -> None:
    body = json.dumps(fixture("booking_created")).encode()
    assert post(web, body).json()["status"] == "accepted"
    assert post(web, body).json() == {"status": "duplicate", "appointment_id": "appt-uuid-12345"}
    assert redis_client.llen("meetbridge") == 1


@pytest.mark.parametrize("name", ["new_employee", "form_submission"])
def test_events_the_service_does_not_act_on_are_ignored(web: Stack, redis_client: redis.Redis, name: str) -> None:
    response = post(web, json.dumps(fixture(name)).encode())
    assert response.status_code == 202
    assert response.json() == {"status": "ignored", "appointment_id": None}
    assert snapshot(redis_client) == {}


REFUSED = {
    "no token": (dict(token=None), 401),
    "wrong token": (dict(token="nope"), 401),
    "token of another length": (dict(token=WEBHOOK_TOKEN + "x"), 401),
    "not json content type": (dict(content_type="text/plain"), 415),
    "form content type": (dict(content_type="application/x-www-form-urlencoded"), 415),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_deliveries_queue_nothing(web: Stack, redis_client: redis.Redis, case: str) -> None:
    options, status = REFUSED[case]
    response = post(web, json.dumps(fixture("booking_created")).encode(), **options)
    assert response.status_code == status
    assert response.json()["error"]
    assert snapshot(redis_client) == {}


def test_validation_errors_are_field_level_and_queue_nothing(web: Stack, redis_client: redis.Redis) -> None:
    body = {**fixture("booking_created"), "end": "2024-01-15T07:00:00+01:00", "hosts": [{"email": "not-an-email"}]}
    response = post(web, json.dumps(body).encode())
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"end", "hosts"}
    assert snapshot(redis_client) == {}


def test_a_body_over_256_kib_is_refused_and_queues_nothing(web: Stack, redis_client: redis.Redis) -> None:
    body = {**fixture("booking_created"), "padding": "x" * (256 * 1024)}
    response = post(web, json.dumps(body).encode())
    assert response.status_code == 413
    assert snapshot(redis_client) == {}


def test_503_and_nothing_acknowledged_while_redis_is_unreachable(make_stack, private_redis) -> None:
    stack = make_stack(workers=0, REDIS_URL=private_redis.url)
    body = json.dumps(fixture("booking_created")).encode()
    private_redis.stop()
    response = post(stack, body)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "again" in response.json()["error"]
    assert stack.http.get(f"{stack.web_url}/readyz").status_code == 503
    assert stack.http.get(f"{stack.web_url}/healthz").status_code == 200

    private_redis.start()  # the sender's retry now lands, and is not mistaken for a duplicate
    response = post(stack, body)
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    client = redis.Redis.from_url(private_redis.url)
    assert client.llen("meetbridge") == 1
