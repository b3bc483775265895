"""Zoom simulator over HTTP: OAuth, validation, the five operations, start_url expiry and rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox import zoom
from sandbox.openapi import validate_instance, zoom_contract
from tests.sandbox.sandbox_helpers import ZOOM_CREDENTIALS, configure, logged_requests

HOST = "host@example.com"
FUTURE = "2031-03-04T10:00:00Z"
ISO_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def create(client: httpx.Client, user: str = HOST, **body: Any) -> httpx.Response:
    return client.post(
        f"/v2/users/{user}/meetings", json={"topic": "Intro call", "start_time": FUTURE, **body}
    )


def created(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = create(client, **body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_documented(response: httpx.Response, method: str, template: str) -> None:
    schema = zoom_contract().operation(method, template).response_schema(response.status_code)
    assert schema is not None, f"{response.status_code} has no documented JSON body"
    assert validate_instance(response.json(), schema) == []


def zak_claims(start_url: str) -> dict[str, Any]:
    zak = start_url.split("zak=", 1)[1]
    header, payload, signature = zak.split(".")
    expected = hmac.new(zoom.ZAK_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def sandbox_meeting(client: httpx.Client, meeting_id: int) -> dict[str, Any]:
    return next(m for m in client.get("/_sandbox/meetings").json()["meetings"] if m["id"] == meeting_id)


# ------------------------------------------------------------------------------------------ OAuth


def test_token_endpoint_issues_bearer_tokens(zoom_api: httpx.Client) -> None:
    response = zoom_api.post(
        "/oauth/token",
        data={"grant_type": "account_credentials", "account_id": zoom.DEFAULT_ACCOUNT_ID},
        auth=ZOOM_CREDENTIALS,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "meeting:write:admin meeting:read:admin user:read:admin"
    assert body["api_url"] == str(zoom_api.base_url).rstrip("/")
    # The fixture's token and this one are both live.
    assert zoom_api.get(f"/v2/users/{HOST}/meetings").status_code == 200
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert zoom_api.get(f"/v2/users/{HOST}/meetings", headers=auth).status_code == 200
    assert zoom_api.get("/_sandbox/tokens").json() == {"issued": 2}


@pytest.mark.parametrize(
    ("params", "credentials", "status", "error"),
    [
        (
            {"grant_type": "account_credentials", "account_id": "sandbox-account"},
            ("x", "y"),
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "account_id": "sandbox-account"},
            ZOOM_CREDENTIALS,
            400,
            "invalid_request",
        ),
        (
            {"grant_type": "account_credentials", "account_id": "other"},
            ZOOM_CREDENTIALS,
            400,
            "invalid_request",
        ),
    ],
)
def test_token_endpoint_rejects_bad_requests(
    zoom_api: httpx.Client, params: dict[str, str], credentials: tuple[str, str], status: int, error: str
) -> None:
    response = zoom_api.post("/oauth/token", params=params, auth=credentials)
    assert response.status_code == status
    assert response.json()["error"] == error
    if status == 401:
        assert response.json()["reason"] == "Invalid client_id or client_secret"


def test_api_needs_a_live_token(zoom_api: httpx.Client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-token"}):
        response = zoom_api.get(f"/v2/users/{HOST}/meetings", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"code": 124, "message": "Invalid access token."}


def test_tokens_expire_after_their_ttl(zoom_api: httpx.Client) -> None:
    configure(zoom_api, token_ttl_seconds=0)
    expired = zoom_api.post(
        "/oauth/token",
        params={"grant_type": "account_credentials", "account_id": "sandbox-account"},
        auth=ZOOM_CREDENTIALS,
    ).json()
    assert expired["expires_in"] == 0
    response = zoom_api.get(
        f"/v2/users/{HOST}/meetings", headers={"Authorization": f"Bearer {expired['access_token']}"}
    )
    assert response.json()["code"] == 124


# ----------------------------------------------------------------------------------------- create


def test_create_returns_the_documented_201(zoom_api: httpx.Client) -> None:
    response = create(zoom_api, topic="x" * 250, agenda="Agenda", settings={"join_before_host": True})
    assert response.status_code == 201
    assert_documented(response, "POST", "/users/{userId}/meetings")
    body = response.json()
    assert 10**10 <= body["id"] < 10**11
    assert "uuid" not in body
    assert len(body["topic"]) == 200
    assert body["host_email"] == HOST
    assert body["status"] == "waiting"
    assert body["start_time"] == FUTURE
    assert body["pre_schedule"] is False
    assert body["join_url"].startswith(f"https://zoom.sandbox/j/{body['id']}?pwd=")
    assert body["start_url"].startswith(f"https://zoom.sandbox/s/{body['id']}?zak=")
    assert body["password"] and body["h323_password"].isdigit()
    assert body["settings"]["join_before_host"] is True
    assert body["settings"]["approval_type"] == 2  # a default the request left out
    assert ISO_SECONDS.match(body["created_at"])


def test_meeting_ids_are_unique(zoom_api: httpx.Client) -> None:
    ids = {created(zoom_api)["id"] for _ in range(5)}
    assert len(ids) == 5


def test_local_start_time_with_timezone_is_stored_as_utc(zoom_api: httpx.Client) -> None:
    body = created(zoom_api, start_time="2031-07-01T10:00:00", timezone="Europe/Berlin")
    assert body["start_time"] == "2031-07-01T08:00:00Z"
    assert body["timezone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    "extra",
    [
        {"start_time": "2031-07-01T10:00:00+02:00"},
        {"start_time": "2031-07-01T10:00:00+02:00", "timezone": "Europe/Berlin"},
        {"start_time": "2031-07-01T10:00:00"},
        {"start_time": "2031-07-01 10:00:00Z"},
        {"start_time": "2031-13-01T10:00:00Z"},
    ],
)
def test_start_time_must_be_utc_z_or_local_with_timezone(
    zoom_api: httpx.Client, extra: dict[str, str]
) -> None:
    response = create(zoom_api, **extra)
    assert response.status_code == 300
    assert response.json() == {
        "code": 300,
        "message": "Validation Failed.",
        "errors": [{"field": "start_time", "message": "Invalid field."}],
    }
    recorded = zoom_api.get("/_sandbox/validation_errors").json()["errors"]
    assert recorded[-1]["field"] == "start_time"
    assert recorded[-1]["method"] == "POST"
    assert recorded[-1]["seq"] == logged_requests(zoom_api)[-1]["seq"]
    assert zoom_api.get("/_sandbox/meetings").json()["meetings"] == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"agenda": "a" * 2001}, "agenda"),
        ({"type": 4}, "type"),
        ({"duration": "60"}, "duration"),
        ({"password": "12345678901"}, "password"),
        ({"settings": {"approval_type": 7}}, "settings.approval_type"),
        ({"tracking_fields": [{"value": "x"}]}, "tracking_fields[0].field"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_body_is_validated_against_the_openapi_subset(
    zoom_api: httpx.Client, extra: dict, field: str
) -> None:
    response = create(zoom_api, **extra)
    assert response.status_code == 300
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_malformed_json_is_rejected(zoom_api: httpx.Client) -> None:
    response = zoom_api.post(
        f"/v2/users/{HOST}/meetings", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 300
    assert response.json() == {"code": 300, "message": "Request Body should be a valid JSON object."}


def test_unknown_user_is_404_1001_when_users_are_listed(zoom_api: httpx.Client) -> None:
    configure(zoom_api, known_users=["Known@Example.com"])
    response = create(zoom_api, user="stranger@example.com")
    assert response.status_code == 404
    assert response.json() == {
        "code": 1001,
        "message": "User stranger@example.com not exist or not belong to this account.",
    }
    assert create(zoom_api, user="known@example.com").status_code == 201
    # A user id works as well as the email.
    assert create(zoom_api, user=zoom.user_id_for("known@example.com")).status_code == 201


# --------------------------------------------------------------------------------- get / list


def test_get_returns_documented_body_with_a_fresh_start_url(zoom_api: httpx.Client) -> None:
    meeting = created(zoom_api)
    first = zoom_api.get(f"/v2/meetings/{meeting['id']}")
    second = zoom_api.get(f"/v2/meetings/{meeting['id']}")
    assert first.status_code == 200
    assert_documented(first, "GET", "/meetings/{meetingId}")
    assert first.json()["uuid"]
    assert first.json()["start_url"] != second.json()["start_url"] != meeting["start_url"]
    assert sandbox_meeting(zoom_api, meeting["id"])["gets"] == 2
    issued = zoom_api.get("/_sandbox/start_urls").json()["start_urls"]
    assert [item["start_url"] for item in issued] == [
        meeting["start_url"],
        first.json()["start_url"],
        second.json()["start_url"],
    ]


def test_start_url_expiry_is_readable_from_the_zak(zoom_api: httpx.Client) -> None:
    configure(zoom_api, custcreate_users=["vip@example.com"])
    regular = created(zoom_api)
    claims = zak_claims(regular["start_url"])
    assert claims["exp"] - claims["iat"] == 7200
    assert claims["sub"] == HOST
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 5

    vip = create(zoom_api, user="vip@example.com").json()
    vip_claims = zak_claims(vip["start_url"])
    assert vip_claims["exp"] - vip_claims["iat"] == 90 * 24 * 3600

    issued = zoom_api.get("/_sandbox/start_urls").json()["start_urls"][0]
    assert issued["meeting_id"] == regular["id"]
    expires = datetime.fromisoformat(issued["expires_at"].replace("Z", "+00:00"))
    assert expires.timestamp() == claims["exp"]


def test_opaque_zak_when_expiry_is_not_readable(zoom_api: httpx.Client) -> None:
    configure(zoom_api, start_url_expiry_readable=False, start_url_ttl_seconds=60)
    meeting = created(zoom_api)
    assert meeting["start_url"].split("zak=")[1].count(".") == 0
    issued = zoom_api.get("/_sandbox/start_urls").json()["start_urls"][0]
    assert datetime.fromisoformat(issued["expires_at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        issued["issued_at"].replace("Z", "+00:00")
    ) == timedelta(seconds=60)


def test_list_is_paginated_and_skips_deleted_meetings(zoom_api: httpx.Client) -> None:
    ids = [created(zoom_api, start_time=f"2031-03-0{day}T10:00:00Z")["id"] for day in range(1, 6)]
    zoom_api.delete(f"/v2/meetings/{ids[0]}")
    created_elsewhere = create(zoom_api, user="other@example.com")
    assert created_elsewhere.status_code == 201

    first = zoom_api.get(f"/v2/users/{HOST}/meetings", params={"type": "scheduled", "page_size": 3})
    assert first.status_code == 200
    assert_documented(first, "GET", "/users/{userId}/meetings")
    body = first.json()
    assert body["total_records"] == 4
    assert body["next_page_token"]
    second = zoom_api.get(
        f"/v2/users/{HOST}/meetings", params={"page_size": 3, "next_page_token": body["next_page_token"]}
    ).json()
    assert second["next_page_token"] == ""
    listed = [item["id"] for item in body["meetings"] + second["meetings"]]
    assert listed == ids[1:]
    item = body["meetings"][0]
    assert set(item) >= {
        "agenda",
        "topic",
        "id",
        "uuid",
        "start_time",
        "duration",
        "timezone",
        "join_url",
        "host_id",
        "created_at",
        "type",
    }


@pytest.mark.parametrize("params", [{"page_size": 301}, {"type": "everything"}, {"page_size": "many"}])
def test_list_query_is_validated(zoom_api: httpx.Client, params: dict[str, Any]) -> None:
    response = zoom_api.get(f"/v2/users/{HOST}/meetings", params=params)
    assert response.status_code == 300
    assert response.json()["errors"][0]["field"] in params


def test_unknown_meeting_is_404_3001(zoom_api: httpx.Client) -> None:
    response = zoom_api.get("/v2/meetings/12345678901")
    assert response.status_code == 404
    assert response.json() == {"code": 3001, "message": "Meeting 12345678901 is not found or has expired."}
    assert zoom_api.get("/v2/meetings/not-a-number").status_code == 300


# ---------------------------------------------------------------------------------- patch / delete


def test_patch_applies_fields_and_answers_204(zoom_api: httpx.Client) -> None:
    meeting = created(zoom_api, settings={"mute_upon_entry": True})
    response = zoom_api.patch(
        f"/v2/meetings/{meeting['id']}",
        json={
            "start_time": "2031-05-05T09:30:00",
            "timezone": "America/New_York",
            "duration": 45,
            "topic": "Moved",
            "agenda": "New agenda",
            "settings": {"waiting_room": True},
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    after = zoom_api.get(f"/v2/meetings/{meeting['id']}").json()
    assert after["start_time"] == "2031-05-05T13:30:00Z"
    assert (after["duration"], after["topic"], after["agenda"]) == (45, "Moved", "New agenda")
    assert after["timezone"] == "America/New_York"
    assert after["settings"]["mute_upon_entry"] is True and after["settings"]["waiting_room"] is True
    assert sandbox_meeting(zoom_api, meeting["id"])["patches"] == 1


def test_patch_ignores_a_past_start_time(zoom_api: httpx.Client) -> None:
    meeting = created(zoom_api)
    assert (
        zoom_api.patch(
            f"/v2/meetings/{meeting['id']}", json={"start_time": "2020-01-01T10:00:00Z"}
        ).status_code
        == 204
    )
    assert zoom_api.get(f"/v2/meetings/{meeting['id']}").json()["start_time"] == FUTURE


def test_delete_records_query_and_hides_the_meeting(zoom_api: httpx.Client) -> None:
    meeting = created(zoom_api)
    query = {"schedule_for_reminder": "false", "cancel_meeting_reminder": "true"}
    response = zoom_api.delete(f"/v2/meetings/{meeting['id']}", params=query)
    assert response.status_code == 204
    again = zoom_api.delete(f"/v2/meetings/{meeting['id']}")
    assert (again.status_code, again.json()["code"]) == (404, 3001)
    assert zoom_api.get(f"/v2/meetings/{meeting['id']}").status_code == 404
    assert zoom_api.patch(f"/v2/meetings/{meeting['id']}", json={"topic": "x"}).status_code == 404
    recorded = sandbox_meeting(zoom_api, meeting["id"])
    assert recorded["deleted"] is True
    assert recorded["deleted_query"] == query
    assert (
        zoom_api.delete(
            f"/v2/meetings/{meeting['id']}", params={"cancel_meeting_reminder": "yes"}
        ).status_code
        == 300
    )


# ------------------------------------------------------------------------------------ rate limits


def test_per_host_daily_limit_counts_creates_and_patches(zoom_api: httpx.Client) -> None:
    configure(zoom_api, host_daily_limit=3)
    meeting = created(zoom_api)
    assert zoom_api.patch(f"/v2/meetings/{meeting['id']}", json={"topic": "1"}).status_code == 204
    assert create(zoom_api).status_code == 201
    refused = zoom_api.patch(f"/v2/meetings/{meeting['id']}", json={"topic": "2"})
    assert refused.status_code == 429
    assert refused.json() == {
        "code": 429,
        "message": "You have exceeded the daily rate limit (3) of Meeting Create/Update API requests "
        "permitted for this particular user. You may resume these requests at GMT 00:00:00.",
    }
    assert refused.headers["X-RateLimit-Type"] == "Daily-limit"
    assert refused.headers["X-RateLimit-Category"] == "Medium"
    assert "Retry-After" not in refused.headers
    # Other hosts and reads are not affected.
    assert create(zoom_api, user="other@example.com").status_code == 201
    assert zoom_api.get(f"/v2/meetings/{meeting['id']}").status_code == 200


def test_quota_set_from_outside_is_honoured(zoom_api: httpx.Client) -> None:
    assert zoom_api.post("/_sandbox/quota", json={"user": HOST, "used": 99}).status_code == 200
    assert create(zoom_api).status_code == 201
    refused = create(zoom_api)
    assert refused.status_code == 429
    assert "(100)" in refused.json()["message"]
    assert len(zoom_api.get("/_sandbox/meetings").json()["meetings"]) == 1


def test_per_second_limits_by_category(zoom_api: httpx.Client) -> None:
    configure(zoom_api, rate_limits_per_second={"medium": 2})
    statuses = [create(zoom_api).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    limited = [entry for entry in logged_requests(zoom_api) if entry["status"] == 429]
    assert len(limited) == 1 and limited[0]["fault"] is None
    # Light calls have their own (unlimited) budget.
    assert zoom_api.get(f"/v2/meetings/{created_id(zoom_api)}").status_code == 200


def created_id(client: httpx.Client) -> int:
    return int(client.get("/_sandbox/meetings").json()["meetings"][0]["id"])


def test_per_second_429_body_and_headers(zoom_api: httpx.Client) -> None:
    configure(zoom_api, rate_limits_per_second={"light": 1})
    meeting = created(zoom_api)
    zoom_api.get(f"/v2/meetings/{meeting['id']}")
    refused = zoom_api.get(f"/v2/meetings/{meeting['id']}")
    assert refused.status_code == 429
    assert refused.json() == {
        "code": 429,
        "message": "You have reached the maximum per-second rate limit for this API. Try again later.",
    }
    assert refused.headers["X-RateLimit-Type"] == "QPS"
    retry_at = datetime.fromisoformat(refused.headers["Retry-After"].replace("Z", "+00:00"))
    assert timedelta(0) < retry_at - datetime.now(UTC) <= timedelta(seconds=2)


def test_concurrent_creates_get_distinct_meetings_and_exact_quota(zoom_api: httpx.Client) -> None:
    configure(zoom_api, host_daily_limit=5)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: create(zoom_api).status_code, range(8)))
    assert sorted(statuses) == [201] * 5 + [429] * 3
    meetings = zoom_api.get("/_sandbox/meetings").json()["meetings"]
    assert len({meeting["id"] for meeting in meetings}) == 5


def test_a_started_meeting_refuses_updates_with_3000(zoom_api: httpx.Client) -> None:
    meeting = created(zoom_api)
    assert zoom_api.post(f"/_sandbox/meetings/{meeting['id']}/start").status_code == 200
    refused = zoom_api.patch(f"/v2/meetings/{meeting['id']}", json={"duration": 45})
    assert (refused.status_code, refused.json()["code"]) == (400, 3000)
    assert zoom_api.get(f"/v2/meetings/{meeting['id']}").json()["duration"] != 45
