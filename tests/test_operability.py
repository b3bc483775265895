"""Issue 6: secrets never reach a log line; structured logs, metrics, and the operator's CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    SECRET_KEY,
    WEBHOOK_TOKEN,
    Sims,
    Stack,
    appointment,
    cancelled_payload,
    future_start,
    moved,
    service_env,
    wait_until,
)
from workers.state import KEYS


def full_lifecycle(stack: Stack, sims: Sims) -> tuple[dict, dict]:
    """Book, open the host link, reschedule and cancel: every path that handles a credential."""
    appt = appointment()
    assert stack.deliver(meetergo_sim.booking_created(appt)).status_code == 202
    view = stack.wait_for_status(appt["id"], "synced")
    opened = stack.http.post(stack.web_url + urlsplit(view["host_link"]).path, follow_redirects=False)
    assert opened.status_code == 302
    later = moved(appt, future_start(days=6, hour=12))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: sims.zoom_meetings()[0]["start_time"].startswith(future_start(days=6).date().isoformat()))
    stack.deliver(cancelled_payload(later))
    stack.wait_for_status(appt["id"], "cancelled")
    return appt, view


def test_no_secret_reaches_any_log_line(make_stack, sims: Sims, redis_client: redis.Redis) -> None:
    stack = make_stack(workers=0, beat=False)
    stack.start_web_process()  # gunicorn, so its access log is captured too
    stack.start_worker()
    stack.start_beat()
    appt, view = full_lifecycle(stack, sims)

    secrets = {
        "webhook token": WEBHOOK_TOKEN,
        "admin token": ADMIN_TOKEN,
        "secret key": SECRET_KEY,
        "zoom client secret": stack.env["ZOOM_CLIENT_SECRET"],
        "neetocal api key": stack.env["NEETOCAL_API_KEY"],
        "zoom access token": json.loads(redis_client.get(KEYS.zoom_token))["access_token"],
        "host link token": view["host_link"].rsplit("/", 1)[1],
        "host link signature": view["host_link"].rsplit(".", 1)[1],
        "meetergo appointment secret": appt["secret"],
    }
    for n, issued in enumerate(sims.get("zoom", "start_urls")["start_urls"]):
        secrets[f"start_url {n}"] = issued["start_url"]
        secrets[f"zak {n}"] = issued["start_url"].split("zak=", 1)[1]
    logs = stack.logs()
    # The logs did see the places where secrets could leak.
    assert "/webhooks/meetergo?token=<redacted>" in logs
    assert "/h/" + appt["id"] + "/<redacted>" in logs
    assert "zoom_meeting_created" in logs and "neetocal_booking_cancelled" in logs
    leaked = {name: line for name, value in secrets.items() for line in logs.splitlines() if value in line}
    assert leaked == {}


def test_worker_logs_are_json_with_the_appointment_on_every_line_of_its_sync(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    records = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
    sync_lines = [r for r in records if r["name"].startswith("workers.") or r["name"] == "celery.app.trace"]
    assert len(sync_lines) >= 4
    assert all(r.get("appointment_id") == appt["id"] and r.get("task_id") for r in sync_lines), sync_lines
    # At INFO, one Celery line per task: "succeeded in" (outcome and time), not also "received" (#11).
    assert not [r for r in records if r["name"] == "celery.worker.strategy"]


def test_metrics_after_a_sync(stack: Stack, sims: Sims) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.deliver({"webhookType": "booking_created"})
    stack.wait_for_status(appt["id"], "synced")

    def scrape() -> dict[str, float]:
        text = stack.http.get(f"{stack.web_url}/metrics").text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    # A worker sends its counts when it goes idle, and at least every second.
    samples = wait_until(lambda: (found := scrape()).get('meetbridge_syncs_total{outcome="synced"}') and found,
                         timeout=5, message="the sync's counts")
    assert samples['meetbridge_deliveries_total{status="accepted"}'] == 1
    assert samples['meetbridge_deliveries_total{status="duplicate"}'] == 1
    assert samples['meetbridge_deliveries_total{status="invalid"}'] == 1
    assert samples['meetbridge_syncs_total{outcome="synced"}'] == 1
    assert samples['meetbridge_api_requests_total{operation="create_meeting",service="zoom",status="201"}'] == 1
    assert samples['meetbridge_api_requests_total{operation="create_booking",service="neetocal",status="200"}'] == 1
    assert samples['meetbridge_api_request_seconds_count{service="zoom"}'] >= 1
    assert samples["meetbridge_refresh_scheduled"] == 1
    assert samples["meetbridge_dead_letter_size"] == 0
    assert "meetbridge_queue_depth" in samples


# --- the CLI ----------------------------------------------------------------------------------------------

def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meetbridge.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def test_cli_status_list_replay_and_refresh(make_stack, sims: Sims) -> None:
    sims.configure("zoom", known_users=["john@example.com"])
    stack = make_stack()
    good, bad = appointment(), appointment(host=meetergo_sim.MARIA)
    stack.deliver(meetergo_sim.booking_created(good))
    stack.deliver(meetergo_sim.booking_created(bad))
    stack.wait_for_status(good["id"], "synced")
    failed = stack.wait_for_status(bad["id"], "failed")
    assert "1001" in failed["error"] and "maria@example.com" in failed["error"]

    status = cli(stack.env, "status", good["id"])
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "synced"
    assert cli(stack.env, "status", "nope").returncode != 0
    listed = cli(stack.env, "list", "--status", "failed")
    assert listed.stdout.split("\t")[0] == bad["id"] and "1001" in listed.stdout

    refreshed = cli(stack.env, "refresh", good["id"])
    assert refreshed.stdout.strip() == "refreshed"
    assert sims.zoom_meetings()[0]["gets"] == 1

    sims.configure("zoom", known_users=None)  # the operator fixed the account
    replayed = cli(stack.env, "replay", "--failed")
    assert replayed.returncode == 0 and "queued 1 sync(s)" in replayed.stdout
    stack.wait_for_status(bad["id"], "synced")
    assert cli(stack.env, "list", "--status", "failed").stdout == ""
    assert cli(stack.env, "replay", bad["id"], good["id"]).returncode == 0  # again: safe, changes nothing
    wait_until(lambda: all(stack.appointment(i)["status"] == "synced" for i in (good["id"], bad["id"])))
    assert len(sims.zoom_meetings()) == 2 and len(sims.neetocal_bookings()) == 2


@pytest.fixture
def healthy_env(sandbox, redis_client) -> dict[str, str]:
    from tests.support import REDIS_URL

    return service_env(sandbox, REDIS_URL, MEETERGO_API_KEY="sandbox-meetergo-key")


def test_doctor_healthy(healthy_env: dict[str, str], sims: Sims) -> None:
    result = cli(healthy_env, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok  ] Zoom: token issued and accepted" in result.stdout
    assert "[ok  ] NeetoCal: API key accepted" in result.stdout
    assert "[ok  ] meetergo: API key accepted" in result.stdout


BROKEN = {
    "redis": ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "[FAIL] Redis"),
    "zoom credentials": ({"ZOOM_CLIENT_SECRET": "wrong"}, "[FAIL] Zoom: credentials refused"),
    "zoom unreachable": ({"ZOOM_OAUTH_URL": "http://127.0.0.1:1/oauth/token"}, "[FAIL] Zoom"),
    "neetocal key": ({"NEETOCAL_API_KEY": "wrong"}, "[FAIL] NeetoCal: credentials refused"),
    "neetocal unreachable": ({"NEETOCAL_API_URL": "http://127.0.0.1:1/api/external/v1"}, "[FAIL] NeetoCal"),
    "meetergo key": ({"MEETERGO_API_KEY": "wrong"}, "[FAIL] meetergo: credentials refused"),
    "missing secret key": ({"SECRET_KEY": ""}, "[FAIL] SECRET_KEY: not set"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_doctor_names_each_broken_dependency(healthy_env: dict[str, str], sims: Sims, case: str) -> None:
    change, expected = BROKEN[case]
    result = cli({**healthy_env, **change}, "doctor")
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout


def test_refuses_to_start_on_an_evicting_redis(tmp_path: Path, sandbox) -> None:
    from tests.support import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        redis.Redis(port=server.port).config_set("maxmemory-policy", "allkeys-lru")
        env = service_env(sandbox, server.url)
        worker = subprocess.run([sys.executable, "-m", "celery", "--app", "workers.celery_app", "worker",
                                 "--pool", "threads"], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                                text=True, timeout=60)
        assert worker.returncode != 0
        assert "refuses to start" in worker.stderr + worker.stdout and "allkeys-lru" in worker.stderr + worker.stdout
        from meetbridge.config import Settings
        from webhooks import create_app
        from workers.state.server import UnsafeRedis

        with pytest.raises(UnsafeRedis, match="noeviction"):
            create_app(Settings.from_env(env))
    finally:
        server.stop()
