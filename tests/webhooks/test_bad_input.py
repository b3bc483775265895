"""Issue 6: every class of malformed delivery gets the right 4xx naming the problem, and nothing is kept."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.support import WEBHOOK_TOKEN, Stack
from tests.webhooks.test_receiver import fixture, snapshot

TEN_MB = 10 * 1024 * 1024


def documented(**changes: object) -> bytes:
    return json.dumps({**fixture("booking_created"), **changes}).encode()


def chunks(size: int) -> Iterator[bytes]:
    yield b'{"webhookType": "booking_created", "padding": "'
    for _ in range(size // 65536):
        yield b"x" * 65536
    yield b'"}'


# case: (body, content type, expected status, text that must appear in the error or its details)
CASES = {
    "not json": (b"{this is not json", "application/json", 400, "not valid JSON"),
    "wrong types": (documented(hosts="john@example.com", attendees=7), "application/json", 400, "hosts"),
    "missing fields": (json.dumps({"webhookType": "booking_created", "id": "a1"}).encode(), "application/json",
                       400, "start"),
    "unknown event": (json.dumps({"webhookType": "meeting_exploded"}).encode(), "application/json", 400,
                      "Unknown event type"),
    "end before start": (documented(end="2024-01-15T08:00:00+01:00"), "application/json", 400, "end after it starts"),
    "year 9999": (documented(start="9999-01-15T09:00:00+01:00", end="9999-01-15T09:30:00+01:00"),
                  "application/json", 400, "Year 9999"),
    "10 MB body": (b"x" * TEN_MB, "application/json", 413, "256 KiB"),
    "deeply nested": (b"[" * 200_000, "application/json", 400, "nested too deeply"),
    "invalid utf-8": (b'{"webhookType": "booking_created", "id": "\xff\xfe"}', "application/json", 400, "UTF-8"),
    # The bytes of half a character, which Python's JSON reader would take.
    "surrogate bytes": (documented(id="a1").replace(b'"a1"', b'"a1\xed\xa0\xbd"'), "application/json", 400, "UTF-8"),
    "utf-16": (documented().decode().encode("utf-16"), "application/json", 400, "UTF-8"),
    "wrong content type": (documented(), "text/xml", 415, "application/json"),
    "unknown time zone": (documented(attendees=[{"email": "jane@example.com", "timezone": "Europe/Atlantis"}]),
                          "application/json", 400, "Europe/Atlantis"),
    "email that is not one": (documented(hosts=[{"email": "john(at)example.com"}]), "application/json", 400,
                              "Not a valid email"),
}


@pytest.fixture
def web(make_stack) -> Stack:
    return make_stack(workers=0)


def error_text(response: httpx.Response) -> str:
    body = response.json()
    return body["error"] + " " + json.dumps(body.get("details", {}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_4xx_naming_the_problem(web: Stack, redis_client: redis.Redis, case: str) -> None:
    body, content_type, status, named = CASES[case]
    response = web.http.post(f"{web.web_url}/webhooks/meetergo", params={"token": WEBHOOK_TOKEN}, content=body,
                             headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert named in error_text(response)
    assert snapshot(redis_client) == {}


def test_a_10_mb_body_without_a_length_is_cut_off_too(web: Stack, redis_client: redis.Redis) -> None:
    response = web.http.post(f"{web.web_url}/webhooks/meetergo", params={"token": WEBHOOK_TOKEN},
                             content=chunks(TEN_MB), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert snapshot(redis_client) == {}
