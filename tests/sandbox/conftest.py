"""Fixtures for the simulator tests: each test module gets its own servers; every test starts from reset."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from flask import Flask, Response, jsonify, request

from sandbox import meetergo, neetocal, zoom
from sandbox.server import RunningServer, serve
from tests.sandbox.sandbox_helpers import WebhookReceiver, zoom_token


def _server(app: Flask) -> Iterator[RunningServer]:
    server = serve(app)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zoom_server() -> Iterator[RunningServer]:
    yield from _server(zoom.create_app())


@pytest.fixture(scope="module")
def neetocal_server() -> Iterator[RunningServer]:
    yield from _server(neetocal.create_app())


@pytest.fixture(scope="module")
def meetergo_server() -> Iterator[RunningServer]:
    yield from _server(meetergo.create_app())


@pytest.fixture(scope="module")
def zoom_http(zoom_server: RunningServer) -> Iterator[httpx.Client]:
    yield from _module_client(zoom_server)


@pytest.fixture(scope="module")
def neetocal_http(neetocal_server: RunningServer) -> Iterator[httpx.Client]:
    yield from _module_client(neetocal_server)


@pytest.fixture(scope="module")
def meetergo_http(meetergo_server: RunningServer) -> Iterator[httpx.Client]:
    yield from _module_client(meetergo_server)


def _module_client(server: RunningServer) -> Iterator[httpx.Client]:
    # One client per module: building an httpx.Client costs ~50 ms (its SSL context).
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        yield client


def _fresh(client: httpx.Client, headers: dict[str, str]) -> Iterator[httpx.Client]:
    """The client with `headers`, against a simulator just reset; reset again afterwards."""
    client.headers = headers  # replaces earlier auth headers (httpx keeps its defaults)
    client.timeout = httpx.Timeout(5.0)
    assert client.post("/_sandbox/reset").status_code == 200
    yield client
    # Leave no fault config behind for the next test, even when this one failed half-way.
    client.timeout = httpx.Timeout(5.0)
    client.post("/_sandbox/reset")


@pytest.fixture
def zoom_api(zoom_http: httpx.Client) -> Iterator[httpx.Client]:
    """A client for the Zoom simulator whose headers carry a live bearer token."""
    for client in _fresh(zoom_http, {}):
        client.headers["Authorization"] = f"Bearer {zoom_token(client)}"
        yield client


@pytest.fixture
def neetocal_api(neetocal_http: httpx.Client) -> Iterator[httpx.Client]:
    yield from _fresh(neetocal_http, {"X-Api-Key": neetocal.DEFAULT_API_KEY})


@pytest.fixture
def meetergo_api(meetergo_http: httpx.Client) -> Iterator[httpx.Client]:
    yield from _fresh(meetergo_http, {"Authorization": f"Bearer {meetergo.DEFAULT_API_KEY}"})


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[RunningServer, WebhookReceiver]]:
    receiver = WebhookReceiver()
    app = Flask("webhook-receiver")

    @app.post("/hook")
    def hook() -> Response:
        with receiver.lock:
            receiver.received.append({"json": request.get_json(silent=True), "query": request.args.to_dict()})
        response = jsonify({"ok": True})
        response.status_code = receiver.status
        return response

    server = serve(app)
    receiver.url = f"{server.url}/hook"
    yield server, receiver
    server.stop()


@pytest.fixture
def receiver(receiver_server: tuple[RunningServer, WebhookReceiver]) -> WebhookReceiver:
    _, hook = receiver_server
    with hook.lock:
        hook.received.clear()
    hook.status = 200
    return hook
