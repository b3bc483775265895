"""Issue 14: `meetbridge connect` registers one webhook of ours in meetergo and checks Zoom, NeetoCal, meetergo.

Through the real CLI, as a process, against the simulators. PUBLIC_URL is https://meetbridge.test: the
simulator never has to reach it, since no booking is made here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from sandbox import meetergo as meetergo_sim
from sandbox.server import Sandbox
from tests.support import REDIS_URL, ROOT, WEBHOOK_TOKEN, Sims, service_env
from workers.clients.zoom import missing_scopes

OURS = f"https://meetbridge.test/webhooks/meetergo?token={WEBHOOK_TOKEN}"
EVENTS = {"booking_created", "booking_rescheduled", "booking_cancelled"}
API_KEY = meetergo_sim.DEFAULT_API_KEY
# Every scope a granular app needs, but the delete one.
GRANULAR_WITHOUT_DELETE = ("meeting:write:meeting:admin meeting:update:meeting:admin meeting:read:meeting:admin "
                           "meeting:read:list_meetings:admin")


@pytest.fixture
def env(sandbox: Sandbox, redis_client: Any) -> dict[str, str]:
    return service_env(sandbox, REDIS_URL, MEETERGO_API_KEY=API_KEY)


@pytest.fixture
def meetergo(sims: Sims) -> httpx.Client:
    return httpx.Client(base_url=sims.url("meetergo"), timeout=10, headers={"Authorization": f"Bearer {API_KEY}"})


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetbridge.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def webhooks(meetergo: httpx.Client) -> list[dict[str, Any]]:
    return meetergo.get("/webhooks").json()


def register(meetergo: httpx.Client, endpoint: str, event_types: list[str]) -> dict[str, Any]:
    response = meetergo.post("/webhooks", json={"endpoint": endpoint, "eventTypes": event_types})
    assert response.status_code == 201, response.text
    return response.json()


def changes_sent(sims: Sims) -> list[dict[str, Any]]:
    return [r for r in sims.requests("meetergo") if r["method"] in ("POST", "PATCH", "DELETE")]


def test_connect_registers_one_webhook_and_running_it_again_changes_nothing(
        env: dict[str, str], sims: Sims, meetergo: httpx.Client) -> None:
    first = cli(env, "connect")
    assert first.returncode == 0, first.stdout + first.stderr
    [webhook] = webhooks(meetergo)
    assert webhook["endpoint"] == OURS and set(webhook["eventTypes"]) == EVENTS
    for line in ("[ok  ] meetergo webhook: registered as", "[ok  ] Zoom: token issued and accepted",
                 "[ok  ] Zoom scopes:", "[ok  ] NeetoCal: API key accepted", "[ok  ] meetergo: API key accepted"):
        assert line in first.stdout, first.stdout
    assert "token=<redacted>" in first.stdout
    assert WEBHOOK_TOKEN not in first.stdout + first.stderr and API_KEY not in first.stdout + first.stderr

    second = cli(env, "connect")
    assert second.returncode == 0, second.stdout + second.stderr
    assert webhooks(meetergo) == [webhook]
    assert len(changes_sent(sims)) == 1  # the one POST of the first run
    # Each run read the scopes from a token issued for the purpose; the shared one was made once.
    assert sims.get("zoom", "tokens")["issued"] == 3


@pytest.mark.parametrize("stale", [
    "https://meetbridge.test/webhooks/meetergo?token=an-older-token-0123456789",  # before a token rotation
    f"https://old-host.example/webhooks/meetergo?token={WEBHOOK_TOKEN}",  # before PUBLIC_URL moved
])
def test_a_stale_webhook_of_ours_is_patched_not_duplicated(
        env: dict[str, str], sims: Sims, meetergo: httpx.Client, stale: str) -> None:
    other = register(meetergo, "https://crm.example.com/hooks/meetergo?key=theirs-0123456789", sorted(EVENTS))
    ours = register(meetergo, stale, ["booking_created"])

    result = cli(env, "connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[ok  ] meetergo webhook: updated {ours['id']}" in result.stdout
    by_id = {webhook["id"]: webhook for webhook in webhooks(meetergo)}
    assert set(by_id) == {other["id"], ours["id"]}
    assert by_id[other["id"]] == other  # another company's integration is left as it was
    assert by_id[ours["id"]]["endpoint"] == OURS and set(by_id[ours["id"]]["eventTypes"]) == EVENTS
    assert [r["method"] for r in changes_sent(sims)] == ["POST", "POST", "PATCH"]  # the setup's two, one patch


def test_at_meetergos_limit_connect_fails_naming_it_and_creates_nothing(
        env: dict[str, str], sims: Sims, meetergo: httpx.Client) -> None:
    secret_path = "hook/Ab3dEf6hIj9kLm2nOp5q"
    endpoints = [f"https://crm{n}.example.com/in?token=their-secret-{n}" for n in range(5)]
    endpoints.append(f"https://automation.example.com/{secret_path}")
    for endpoint in endpoints:
        register(meetergo, endpoint, ["booking_created"])
    before = webhooks(meetergo)

    result = cli(env, "connect")
    assert result.returncode != 0
    assert "[FAIL] meetergo webhook: meetergo's limit of 6 webhooks per company is reached" in result.stdout
    assert '406 "Limit reached"' in result.stdout
    assert "https://crm0.example.com/in?token=<redacted>" in result.stdout
    assert "https://automation.example.com/hook/<redacted>" in result.stdout
    assert "their-secret" not in result.stdout and secret_path not in result.stdout
    assert webhooks(meetergo) == before
    assert len(changes_sent(sims)) == len(endpoints)  # the setup's, nothing of connect's


def test_a_zoom_token_without_a_needed_scope_is_named_by_connect_and_doctor(
        env: dict[str, str], sims: Sims, meetergo: httpx.Client) -> None:
    sims.configure("zoom", scope=GRANULAR_WITHOUT_DELETE)
    result = cli(env, "connect")
    assert result.returncode != 0
    assert "[FAIL] Zoom scopes: the token lacks meeting:delete:meeting:admin:" in result.stdout, result.stdout
    assert "[ok  ] meetergo webhook: registered as" in result.stdout  # the rest still went ahead

    doctor = cli(env, "doctor")
    assert doctor.returncode != 0
    assert "[FAIL] Zoom scopes: the token lacks meeting:delete:meeting:admin:" in doctor.stdout, doctor.stdout

    sims.configure("zoom", scope=GRANULAR_WITHOUT_DELETE + " meeting:delete:meeting:admin")
    assert cli(env, "connect").returncode == 0


def test_dry_run_changes_nothing(env: dict[str, str], sims: Sims, meetergo: httpx.Client) -> None:
    fresh = cli(env, "connect", "--dry-run")
    assert fresh.returncode != 0  # not connected yet
    assert ("[FAIL] meetergo webhook: would register https://meetbridge.test/webhooks/meetergo?token=<redacted>"
            in fresh.stdout), fresh.stdout
    assert webhooks(meetergo) == [] and changes_sent(sims) == []

    stale = register(meetergo, "https://meetbridge.test/webhooks/meetergo?token=an-older-token-0123456789",
                     ["booking_created"])
    dry = cli(env, "connect", "--dry-run")
    assert dry.returncode != 0
    assert f"would update {stale['id']}" in dry.stdout and "an-older-token" not in dry.stdout
    assert webhooks(meetergo) == [stale] and len(changes_sent(sims)) == 1


def test_an_http_public_url_is_refused_without_allow_http(
        env: dict[str, str], sims: Sims, meetergo: httpx.Client) -> None:
    local = {**env, "PUBLIC_URL": "http://127.0.0.1:8000"}
    refused = cli(local, "connect")
    assert refused.returncode != 0
    assert "[FAIL] meetergo webhook: PUBLIC_URL http://127.0.0.1:8000 is not https://" in refused.stdout
    assert "--allow-http" in refused.stdout
    assert webhooks(meetergo) == [] and changes_sent(sims) == []

    allowed = cli(local, "connect", "--allow-http")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert [w["endpoint"] for w in webhooks(meetergo)] == [
        f"http://127.0.0.1:8000/webhooks/meetergo?token={WEBHOOK_TOKEN}"]


@pytest.mark.parametrize(("scope", "missing"), [
    ("meeting:write:admin meeting:read:admin user:read:admin", []),
    ("meeting:write:meeting:admin meeting:update:meeting:admin meeting:delete:meeting:admin "
     "meeting:read:meeting:admin meeting:read:list_meetings:admin", []),
    ("meeting:write:admin meeting:read:admin", ["user:read:admin"]),  # a classic app is told classic names
    (GRANULAR_WITHOUT_DELETE, ["meeting:delete:meeting:admin"]),
    ("", ["meeting:write:meeting:admin", "meeting:update:meeting:admin", "meeting:delete:meeting:admin",
          "meeting:read:meeting:admin", "meeting:read:list_meetings:admin"]),
])
def test_missing_scopes(scope: str, missing: list[str]) -> None:
    assert missing_scopes(scope) == missing
