"""The admin API's answers (CONTRACT.md)."""

from __future__ import annotations

import json

import redis

from meetbridge.config import Settings
from tests.support import ADMIN_TOKEN, REDIS_URL, SECRET_KEY, WEBHOOK_TOKEN
from webhooks import create_app
from workers.state import KEYS


def client(admin_token: str | None = ADMIN_TOKEN):
    settings = Settings(redis_url=REDIS_URL, webhook_tokens=(WEBHOOK_TOKEN,), secret_key=SECRET_KEY,
                        admin_token=admin_token)
    return create_app(settings).test_client()


def test_without_an_admin_token_configured_the_api_does_not_exist(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.appointment("a1"), mapping={"status": "synced"})
    assert client(admin_token=None).get("/api/appointments/a1",
                                        headers={"Authorization": "Bearer anything"}).status_code == 404


def test_the_admin_token_is_required(redis_client: redis.Redis) -> None:
    redis_client.hset(KEYS.appointment("a1"), mapping={"status": "synced"})
    api = client()
    assert api.get("/api/appointments/a1").status_code == 401
    assert api.get("/api/appointments/a1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/appointments/a1", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}).status_code == 401
    assert api.get("/api/appointments/a1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_unknown_appointment_is_404(redis_client: redis.Redis) -> None:
    response = client().get("/api/appointments/nope", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 404
    assert response.get_json()["error"]


def test_the_view_never_holds_the_start_url(redis_client: redis.Redis) -> None:
    start_url = "https://zoom.us/s/123?zak=eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.sig"
    redis_client.hset(KEYS.appointment("a1"), mapping={
        "status": "synced", "zoom_meeting_id": "123", "zoom_join_url": "https://zoom.us/j/123",
        "zoom_start_url": start_url, "zoom_start_url_expires_at": "1900000000", "zoom_host": "john@example.com",
        "ends_at": "2030-03-17T18:00:00+00:00"})
    view = client().get("/api/appointments/a1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()
    assert set(view) == {"appointment_id", "status", "zoom", "neetocal", "host_link", "error", "warning", "waiting",
                         "history"}
    assert view["zoom"] == {"meeting_id": 123, "join_url": "https://zoom.us/j/123",
                            "start_url_expires_at": "2030-03-17T17:46:40Z", "none_because": None,
                            "made_by": "meetbridge"}
    assert "zak=" not in json.dumps(view)
    assert view["host_link"].endswith("/h/a1/" + view["host_link"].rsplit("/", 1)[1])
