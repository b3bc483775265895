"""The shared control plane (config, reset, request log, faults, latency), checked on all three simulators."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox import zoom
from sandbox.server import serve, start_all
from tests.sandbox.sandbox_helpers import configure, logged_requests


@dataclass(frozen=True)
class Simulator:
    fixture: str
    read: Callable[[httpx.Client], httpx.Response]  # an authorized call that changes nothing
    write: Callable[[httpx.Client], httpx.Response]  # an authorized call that creates one object
    count: Callable[[httpx.Client], int]  # how many such objects exist
    server_error: dict[str, Any]  # the keys and values the API's own 500 body carries
    retry_after: str  # regex for the Retry-After of an injected 429


def _zoom_write(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/v2/users/host@example.com/meetings", json={"topic": "t", "start_time": "2031-01-01T10:00:00Z"}
    )


def _neetocal_write(client: httpx.Client) -> httpx.Response:
    body = {
        "slug": f"link-{uuid.uuid4().hex[:8]}",
        "name": "Intro",
        "hosts": ["oliver@example.com"],
        "duration": 30,
    }
    return client.post("/api/external/v1/meetings", json=body)


def _meetergo_write(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/webhooks", json={"endpoint": "http://127.0.0.1:9/hook", "eventTypes": ["booking_created"]}
    )


SIMULATORS = {
    "zoom": Simulator(
        fixture="zoom_api",
        read=lambda c: c.get("/v2/users/host@example.com/meetings"),
        write=_zoom_write,
        count=lambda c: len(c.get("/_sandbox/meetings").json()["meetings"]),
        server_error={"code": 500},
        retry_after=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
    ),
    "neetocal": Simulator(
        fixture="neetocal_api",
        read=lambda c: c.get("/api/external/v1/meetings"),
        write=_neetocal_write,
        count=lambda c: len(c.get("/_sandbox/meetings").json()["meetings"]),
        server_error={},
        retry_after=r"^1$",
    ),
    "meetergo": Simulator(
        fixture="meetergo_api",
        read=lambda c: c.get("/v4/user"),
        write=_meetergo_write,
        count=lambda c: len(c.get("/webhooks").json()),
        server_error={"statusCode": 500, "error": "Internal Server Error"},
        retry_after=r"^1$",
    ),
}


@pytest.fixture(params=sorted(SIMULATORS))
def sim(request: pytest.FixtureRequest) -> tuple[Simulator, httpx.Client]:
    simulator = SIMULATORS[request.param]
    return simulator, request.getfixturevalue(simulator.fixture)


def _last_write(client: httpx.Client) -> dict[str, Any]:
    return [e for e in logged_requests(client) if e["method"] == "POST" and e["path"] != "/oauth/token"][-1]


def _set_fault(client: httpx.Client, kind: str, *, after_commit: float = 0.0, **extra: Any) -> None:
    configure(client, fault_rate=1.0, fault_kinds=[kind], fault_after_commit_rate=after_commit, **extra)


# ---------------------------------------------------------------------------------------- config


def test_config_defaults_patch_and_reset(sim: tuple[Simulator, httpx.Client]) -> None:
    _, client = sim
    defaults = client.get("/_sandbox/config").json()
    assert defaults["latency_ms"] == 0
    assert defaults["fault_rate"] == 0.0
    assert defaults["fault_kinds"] == ["500", "429", "timeout", "reset"]
    assert defaults["timeout_seconds"] == 5.0
    assert defaults["fault_after_commit_rate"] == 0.5

    merged = configure(client, latency_ms=5)
    assert merged == {**defaults, "latency_ms": 5}

    assert client.post("/_sandbox/reset").json() == {}
    assert client.get("/_sandbox/config").json() == defaults


@pytest.mark.parametrize(
    "patch",
    [
        {"no_such_key": 1},
        {"fault_rate": 2},
        {"fault_kinds": ["boom"]},
        {"latency_ms": True},
        {"fault_kinds": []},
    ],
)
def test_bad_config_patch_is_400_and_changes_nothing(
    sim: tuple[Simulator, httpx.Client], patch: dict
) -> None:
    _, client = sim
    before = client.get("/_sandbox/config").json()
    response = client.patch("/_sandbox/config", json={"latency_ms": 1, **patch})
    assert response.status_code == 400
    assert client.get("/_sandbox/config").json() == before


def test_nested_config_is_merged(zoom_api: httpx.Client) -> None:
    merged = configure(zoom_api, rate_limits_per_second={"light": 3})
    assert merged["rate_limits_per_second"] == {"light": 3, "medium": None}
    assert (
        zoom_api.patch("/_sandbox/config", json={"rate_limits_per_second": {"heavy": 1}}).status_code == 400
    )


def test_apps_do_not_share_state(zoom_http: httpx.Client) -> None:
    first, second = serve(zoom.create_app()), serve(zoom.create_app())
    try:
        zoom_http.patch(f"{first.url}/_sandbox/config", json={"latency_ms": 7})
        assert zoom_http.get(f"{second.url}/_sandbox/config").json()["latency_ms"] == 0
    finally:
        first.stop()
        second.stop()


def test_start_all_serves_everything_and_prints_env(zoom_http: httpx.Client) -> None:
    sandbox = start_all()
    http = zoom_http  # any client: the URLs below are absolute
    try:
        env = sandbox.env
        assert set(env) == {
            "ZOOM_API_URL",
            "ZOOM_OAUTH_URL",
            "ZOOM_ACCOUNT_ID",
            "ZOOM_CLIENT_ID",
            "ZOOM_CLIENT_SECRET",
            "NEETOCAL_API_URL",
            "NEETOCAL_API_KEY",
            "MEETERGO_API_URL",
            "MEETERGO_API_KEY",
            "ZOOM_START_URL_DOMAINS",
        }
        token = http.post(
            env["ZOOM_OAUTH_URL"],
            data={"grant_type": "account_credentials", "account_id": env["ZOOM_ACCOUNT_ID"]},
            auth=(env["ZOOM_CLIENT_ID"], env["ZOOM_CLIENT_SECRET"]),
        ).json()["access_token"]
        zoom_auth = {"Authorization": f"Bearer {token}"}
        assert (
            http.get(f"{env['ZOOM_API_URL']}/users/a@example.com/meetings", headers=zoom_auth).status_code
            == 200
        )
        neetocal_auth = {"X-Api-Key": env["NEETOCAL_API_KEY"]}
        assert http.get(f"{env['NEETOCAL_API_URL']}/meetings", headers=neetocal_auth).status_code == 200
        meetergo_auth = {"Authorization": f"Bearer {env['MEETERGO_API_KEY']}"}
        assert http.get(f"{env['MEETERGO_API_URL']}/v4/user", headers=meetergo_auth).status_code == 200
    finally:
        sandbox.stop()


# ----------------------------------------------------------------------------------- request log


def test_every_api_call_is_logged_with_secrets_redacted(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    client.get(client.build_request("GET", "/_sandbox/config").url)  # control calls are not logged
    response = simulator.write(client)
    simulator.read(client)

    entries = [entry for entry in logged_requests(client) if entry["path"] != "/oauth/token"]
    assert [entry["method"] for entry in entries] == ["POST", "GET"]
    write, read = entries
    assert write["seq"] < read["seq"]
    assert write["status"] == response.status_code
    assert write["applied"] is True and read["applied"] is False
    assert write["fault"] is None
    assert isinstance(write["json"], dict)
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", write["at"])
    headers = write["headers"]
    assert all(name == name.lower() for name in headers)
    for secret in ("authorization", "x-api-key"):
        if secret in headers:
            assert headers[secret] == "<redacted>"
    assert "authorization" in headers or "x-api-key" in headers


def test_log_records_query_as_strings(zoom_api: httpx.Client) -> None:
    zoom_api.get("/v2/users/host@example.com/meetings", params={"page_size": 5, "type": "scheduled"})
    entry = logged_requests(zoom_api)[-1]
    assert entry["query"] == {"page_size": "5", "type": "scheduled"}
    assert entry["json"] is None


# ---------------------------------------------------------------------------------------- faults


def test_500_fault_uses_the_api_error_body(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "500")
    response = simulator.read(client)
    assert response.status_code == 500
    body = response.json()
    assert body.items() >= simulator.server_error.items()
    assert logged_requests(client)[-1]["fault"] == "500"


def test_429_fault_carries_retry_after(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "429")
    response = simulator.read(client)
    assert response.status_code == 429
    assert re.match(simulator.retry_after, response.headers["Retry-After"])


def test_timeout_fault_holds_then_answers_504(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "timeout", timeout_seconds=0.3)
    started = time.monotonic()
    response = simulator.read(client)
    assert response.status_code == 504
    assert time.monotonic() - started >= 0.3


def test_timeout_fault_makes_an_impatient_client_time_out(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "timeout", timeout_seconds=3.0)
    client.timeout = httpx.Timeout(0.2)
    with pytest.raises(httpx.ReadTimeout):
        simulator.read(client)
    client.timeout = httpx.Timeout(5.0)
    client.post("/_sandbox/reset")  # releases the held request at once


def test_reset_fault_is_a_transport_error_not_a_response(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "reset")
    with pytest.raises(httpx.TransportError):
        simulator.read(client)
    entry = logged_requests(client)[-1]
    assert entry["status"] is None
    assert entry["fault"] == "reset"


def test_reset_fault_after_commit_leaves_state_changed(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "reset", after_commit=1.0)
    with pytest.raises(httpx.TransportError):
        simulator.write(client)
    configure(client, fault_rate=0.0)
    assert simulator.count(client) == 1
    assert _last_write(client)["applied"] is True


def test_after_commit_fault_reports_error_but_state_changed(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "500", after_commit=1.0)
    assert simulator.write(client).status_code == 500
    configure(client, fault_rate=0.0)
    assert simulator.count(client) == 1
    entry = _last_write(client)
    assert (entry["status"], entry["fault"], entry["applied"]) == (500, "500", True)


def test_before_commit_fault_changes_nothing(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    _set_fault(client, "500", after_commit=0.0)
    assert simulator.write(client).status_code == 500
    configure(client, fault_rate=0.0)
    assert simulator.count(client) == 0
    entry = _last_write(client)
    assert (entry["fault"], entry["applied"]) == ("500", False)


def test_control_routes_are_never_faulted_or_delayed(sim: tuple[Simulator, httpx.Client]) -> None:
    _, client = sim
    _set_fault(client, "reset", latency_ms=1000)
    started = time.monotonic()
    assert client.get("/_sandbox/config").status_code == 200
    assert client.get("/_sandbox/requests").status_code == 200
    assert time.monotonic() - started < 0.5


def test_latency_is_added_to_api_calls(sim: tuple[Simulator, httpx.Client]) -> None:
    simulator, client = sim
    configure(client, latency_ms=200)
    started = time.monotonic()
    assert simulator.read(client).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_seeded_faults_repeat_exactly(neetocal_api: httpx.Client) -> None:
    def statuses() -> list[int]:
        neetocal_api.post("/_sandbox/reset")
        configure(neetocal_api, seed=1234, fault_rate=0.5, fault_kinds=["500", "429"])
        return [neetocal_api.get("/api/external/v1/meetings").status_code for _ in range(16)]

    first = statuses()
    assert first == statuses()
    assert {200, 500, 429} <= set(first)
