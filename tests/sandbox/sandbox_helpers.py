"""Helpers for the simulator tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from sandbox import zoom

ZOOM_CREDENTIALS = (zoom.DEFAULT_CLIENT_ID, zoom.DEFAULT_CLIENT_SECRET)


def zoom_token(client: httpx.Client) -> str:
    response = client.post(
        "/oauth/token",
        params={"grant_type": "account_credentials", "account_id": zoom.DEFAULT_ACCOUNT_ID},
        auth=ZOOM_CREDENTIALS,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def configure(client: httpx.Client, **settings: Any) -> dict[str, Any]:
    response = client.patch("/_sandbox/config", json=settings)
    assert response.status_code == 200, response.text
    return dict(response.json())


def logged_requests(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/_sandbox/requests").json()["requests"])


def wait_for(condition: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll until `condition()` is truthy; returns its value (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.02)


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint that records what is POSTed to it and answers with `status`."""

    url: str = ""
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        """The first `count` bodies, waiting for them to arrive."""

        def arrived() -> list[dict[str, Any]] | None:
            with self.lock:
                return [item["json"] for item in self.received] if len(self.received) >= count else None

        return list(wait_for(arrived, timeout))
