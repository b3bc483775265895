"""The receiver's exact answers (CONTRACT.md), each counted once under its label: `webhook_view` answers every
refusal before the event, the view the rest, all through one `reply`. Over a real HTTP connection, see
test_receiver.py and test_connection_reuse.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask import Flask

from tests.support import WEBHOOK_TOKEN
from tests.webhooks.test_fuzz import service_settings
from tests.webhooks.test_receiver import fixture
from webhooks import create_app
from workers.state import metric_field

BOOKING = json.dumps(fixture("booking_created")).encode()
URL = f"/webhooks/meetergo?token={WEBHOOK_TOKEN}"

# case: (url, body, content type, status, exact JSON answer, label counted in meetbridge_deliveries_total)
CASES: dict[str, tuple[str, bytes, str, int, dict[str, Any], str]] = {
    "no token": ("/webhooks/meetergo", BOOKING, "application/json", 401,
                 {"error": "missing or wrong token"}, "unauthorized"),
    "wrong token": ("/webhooks/meetergo?token=x" + WEBHOOK_TOKEN, BOOKING, "application/json", 401,
                    {"error": "missing or wrong token"}, "unauthorized"),
    "too large": (URL, b" " * (256 * 1024 + 1), "application/json", 413,
                  {"error": "body is larger than 256 KiB"}, "too_large"),
    "not json": (URL, BOOKING, "text/plain", 415,
                 {"error": "send the delivery as application/json", "details": {"content_type": "text/plain"}},
                 "unsupported_type"),
    "no type": (URL, BOOKING, "", 415,
                {"error": "send the delivery as application/json", "details": {"content_type": None}},
                "unsupported_type"),
    "bad utf-8": (URL, b'{"a": "\xff"}', "application/json", 400,
                  {"error": "body is not valid UTF-8", "details": {}}, "invalid"),
    "too deep": (URL, b"[" * 100_000 + b"]" * 100_000, "application/json", 400,
                 {"error": "body is nested too deeply", "details": {}}, "invalid"),
    "bad json": (URL, b'{"a": }', "application/json", 400,
                 {"error": "body is not valid JSON",
                  "details": {"json": ["Expecting value: line 1 column 7 (char 6)"]}}, "invalid"),
    "ignored": (URL, json.dumps(fixture("new_employee")).encode(), "application/vnd.meetergo+json", 202,
                {"status": "ignored", "appointment_id": None}, "ignored"),
    "accepted": (URL, BOOKING, "application/json", 202,
                 {"status": "accepted", "appointment_id": "appt-uuid-12345"}, "accepted"),
}


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(service_settings())


def counted(client: redis.Redis) -> dict[str, str]:
    return {field: value for field, value in client.hgetall("mb:metrics").items()
            if json.loads(field)[0] == "meetbridge_deliveries_total"}


@pytest.mark.parametrize("case", CASES)
def test_each_answer_is_exact_and_counted_once(app: Flask, redis_client: redis.Redis, case: str) -> None:
    url, body, content_type, status, answer, label = CASES[case]
    response = app.test_client().post(url, data=body, headers={"Content-Type": content_type} if content_type else {})

    assert (response.status_code, response.get_json()) == (status, answer)
    assert "Retry-After" not in response.headers
    assert counted(redis_client) == {metric_field("meetbridge_deliveries_total", status=label): "1"}


def test_unreachable_redis_is_a_503_with_retry_after_and_counts_nothing(
        app: Flask, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(app.extensions["meetbridge"].store, "record_delivery", unreachable)
    response = app.test_client().post(URL, data=BOOKING, content_type="application/json")

    assert response.status_code == 503
    assert response.get_json() == {"error": "the delivery could not be queued; send it again"}
    assert response.headers["Retry-After"] == "5"
    assert counted(redis_client) == {}
