"""The NeetoCal client against the simulator's v1 and v2: one client, the routes of its version, and the v2
conflicts (reference vs CLI) worked out at run time: the documented form first, the other once, remembered."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandbox.neetocal import DEFAULT_API_KEY, create_app
from sandbox.server import RunningServer, serve
from schemas.neetocal import BookingRequest, LinkSpec
from workers.clients.neetocal import NeetoCalClient

CLI_SIDE = {"v2_booking_update_method": "PUT", "v2_spot_text_field": "custom_text", "v2_slot_time_format": "24h"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = serve(create_app())
    yield running
    running.stop()


@pytest.fixture
def control(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def client_for(server: RunningServer, version: str, **kwargs) -> NeetoCalClient:
    return NeetoCalClient(f"{server.url}/api/external/{version}", api_key=DEFAULT_API_KEY, version=version,
                          timeout=5, **kwargs)


def request_for(start: datetime, email: str = "eve@example.com") -> BookingRequest:
    return BookingRequest("intro-30m", "Eve", email, start, "Europe/Berlin", {"zoom_join_url": "https://j/1"})


def lifecycle(client: NeetoCalClient) -> None:
    link = client.create_link(LinkSpec(slug="intro-30m", name="Intro", host_email="john@example.com", duration=30))
    client.set_mirror_availability(link)
    client.set_custom_spot(link, "Zoom: see your booking")
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    for n in range(2):  # the second round must go straight to what worked
        booking = client.create_booking(request_for(start + timedelta(hours=4 * n), f"eve{n}@example.com"))
        assert booking.answer("zoom_join_url") == "https://j/1"
        moved = client.reschedule_booking(booking.sid, request_for(start + timedelta(hours=4 * n + 1),
                                                                  f"eve{n}@example.com"))
        assert moved.starts_at == (start + timedelta(hours=4 * n + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        client.cancel_booking(booking.sid, "no longer needed")
        assert client.get_booking(booking.sid).status == "cancelled"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_documented_side_needs_no_second_try(server: RunningServer, control: httpx.Client, version: str) -> None:
    lifecycle(client_for(server, version))
    calls = control.get("/_sandbox/requests").json()["requests"]
    assert all(c["path"].startswith(f"/api/external/{version}/") and c["status"] < 300 for c in calls), calls


def test_v2_on_the_cli_side_tries_each_other_form_once(server: RunningServer, control: httpx.Client) -> None:
    control.patch("/_sandbox/config", json=CLI_SIDE).raise_for_status()
    client = client_for(server, "v2")
    lifecycle(client)
    refused = [(c["method"], c["status"]) for c in control.get("/_sandbox/requests").json()["requests"]
               if c["status"] >= 400]
    assert sorted(refused) == [("PATCH", 405), ("POST", 422), ("POST", 422)]  # spot, create; then remembered
    assert client._chosen == {"spot_text_field": 1, "slot_time_format": 1, "booking_update_method": 1}


def test_templates_are_read_on_either_version(server: RunningServer, control: httpx.Client) -> None:
    template = control.post("/_sandbox/templates", json={"name": "T", "questions": [{"field_code": "x"}]}
                            ).json()["template"]
    for version in ("v1", "v2"):
        client = client_for(server, version, template_id=template["id"])
        found = client.get_template(template["id"])
        assert found is not None and found.is_template and found.name == "T"
        assert client.get_template("nope") is None
    link = client_for(server, "v2", template_id=template["id"]).create_link(
        LinkSpec(slug="from-t", name="From T", host_email="john@example.com", duration=30))
    [made] = [m for m in control.get("/_sandbox/meetings").json()["meetings"] if m["sid"] == link.sid]
    assert made["template_id"] == template["id"] and "x" in made["questions"]
