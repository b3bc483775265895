"""A host link's start_url against a sync that hands the appointment to another host at the same moment.

The web answers a host link without the appointment's lock. Each test runs the other host's sync (as far as the
record shows it: the meeting, the host, the start_url and the revoked link version) at the worst moment of the
POST, on real Redis, and checks that no host is sent to the other's start_url.
"""

from __future__ import annotations

import base64
import json
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask.testing import FlaskClient

import webhooks.host_links as host_links_view
from meetbridge.config import Settings
from schemas.zoom import ZoomMeeting
from tests.support import ADMIN_TOKEN, REDIS_URL, SECRET_KEY, WEBHOOK_TOKEN
from webhooks import create_app
from workers.host_link_tokens import host_link
from workers.state import Store
from workers.wiring import Services, build_services

ALICE, BOB = "alice@example.com", "bob@example.com"
ID = "a1"


def start_url(meeting_id: int, host: str, ttl: int = 7200) -> str:
    def part(claims: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    return f"https://zoom.us/s/{meeting_id}?zak={part({'alg': 'HS256'})}." \
           f"{part({'sub': host, 'exp': int(time.time()) + ttl})}.signature"


ALICE_URL, BOB_URL = start_url(111, ALICE), start_url(222, BOB)


@pytest.fixture
def deployment(redis_client: redis.Redis) -> Iterator[tuple[Settings, Services, FlaskClient]]:
    settings = Settings(redis_url=REDIS_URL, webhook_tokens=(WEBHOOK_TOKEN,), secret_key=SECRET_KEY,
                        admin_token=ADMIN_TOKEN)
    services = build_services(settings)
    yield settings, services, create_app(settings, services=services).test_client()
    services._api = None  # a test's stand-in for Zoom has nothing to close
    services.close()


def hosted_by_alice(store: Store, **start_url_fields: object) -> None:
    store.update(ID, status="synced", zoom_meeting_id=111, zoom_host=ALICE,
                 ends_at=(datetime.now(UTC) + timedelta(days=2)).isoformat(), **start_url_fields)


def handed_to_bob(store: Store) -> None:
    """What the sync's host change leaves in the record: Bob's meeting and start_url, the old links revoked."""
    store.revoke_host_link(ID)
    store.update(ID, zoom_meeting_id=222, zoom_host=BOB, zoom_start_url=BOB_URL,
                 zoom_start_url_expires_at=time.time() + 7200)


def path_of(link: str | None) -> str:
    assert link is not None
    return "/" + link.split("/", 3)[3]


def test_a_start_url_fetched_while_the_host_changes_is_not_kept_for_the_new_host(deployment) -> None:
    settings, services, web = deployment
    store = services.store
    hosted_by_alice(store, zoom_start_url=start_url(111, ALICE, ttl=-10), zoom_start_url_expires_at=time.time() - 10)
    alices_link = host_link(settings, store.load(ID))

    class ZoomAnsweringWhileTheSyncRuns:
        def get_meeting(self, meeting_id: int) -> ZoomMeeting:
            handed_to_bob(store)  # Zoom is slow to answer (rate wait, retries): the sync gets there first
            return ZoomMeeting(id=meeting_id, host_email=ALICE, start_url=ALICE_URL)

    services._api = types.SimpleNamespace(zoom=ZoomAnsweringWhileTheSyncRuns())
    answer = web.post(path_of(alices_link))
    assert answer.status_code != 302
    record = store.load(ID)
    assert record is not None and record.zoom_start_url == BOB_URL, "Alice's credential stood in Bob's record"
    bobs = web.post(path_of(host_link(settings, record)))
    assert bobs.status_code == 302 and bobs.headers["Location"] == BOB_URL


def test_a_start_url_read_after_the_link_was_checked_must_still_be_the_links_host(deployment, monkeypatch) -> None:
    settings, services, web = deployment
    store = services.store
    hosted_by_alice(store, zoom_start_url=ALICE_URL, zoom_start_url_expires_at=time.time() + 7200)
    alices_link = host_link(settings, store.load(ID))
    checked = host_links_view.check_still_open

    def then_the_sync_runs(*args, **kwargs) -> None:
        checked(*args, **kwargs)
        if store.load(ID).zoom_host == ALICE:
            handed_to_bob(store)

    monkeypatch.setattr(host_links_view, "check_still_open", then_the_sync_runs)
    answer = web.post(path_of(alices_link))
    assert answer.status_code == 410 and BOB_URL not in answer.get_data(as_text=True)
