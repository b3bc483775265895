"""Reconciliation with meetergo heals lost webhooks, one appointment at a time, whatever else goes wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import (
    NEETOCAL_VERSIONS,
    Sims,
    Stack,
    appointment,
    assert_neetocal_calls_fit,
    future_start,
    moved,
    neetocal_env,
    wait_until,
)
from workers.reconciliation import reconcile
from workers.tasks import queue_syncs, sweep_schedules
from workers.wiring import build_services

API_KEY = "sandbox-meetergo-key"


def run_reconcile(stack: Stack) -> int:
    services = build_services(stack.settings)
    try:
        return reconcile(services, lambda ids: queue_syncs(services, ids))
    finally:
        services.close()


def metric(stack: Stack, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in stack.http.get(f"{stack.web_url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}}" if wanted else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def synced_by_webhook(stack: Stack, sims: Sims, **kwargs) -> dict:
    appt = appointment(**kwargs)
    sims.post("meetergo", "appointments", appt)
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    return appt


@pytest.fixture
def stack(make_stack) -> Stack:
    return make_stack(MEETERGO_API_KEY=API_KEY)


@pytest.mark.parametrize("page_base", [0, 1])
def test_a_lost_booking_created_is_healed_by_one_run(stack: Stack, sims: Sims, page_base: int) -> None:
    sims.configure("meetergo", page_base=page_base)
    lost = [appointment(days=2 + n) for n in range(3)]
    for appt in lost:
        sims.post("meetergo", "appointments", appt)
    assert run_reconcile(stack) == 3
    for appt in lost:
        stack.wait_for_status(appt["id"], "synced")
    assert len(sims.zoom_meetings()) == 3
    assert run_reconcile(stack) == 0


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_lost_reschedule_is_healed_by_one_run(make_stack, sims: Sims, neetocal: str) -> None:
    stack = make_stack(MEETERGO_API_KEY=API_KEY, **neetocal_env(sims, neetocal))
    appt = synced_by_webhook(stack, sims)
    later = moved(appt, future_start(days=6, hour=14))
    sims.post("meetergo", "appointments", later)  # rescheduled in meetergo; the webhook never arrived
    assert run_reconcile(stack) == 1
    wait_until(lambda: sims.zoom_meetings()[0]["start_time"].startswith(future_start(days=6).date().isoformat()),
               message="the meeting to move")
    # The status was already `synced`: wait for the sync that follows the meeting to reach NeetoCal too.
    wait_until(lambda: sims.neetocal_bookings()[0]["starts_at"].startswith(future_start(days=6).date().isoformat()),
               message="the booking to move")
    wait_until(lambda: "neetocal_booking_rescheduled" in [e["event"] for e in stack.appointment(appt["id"])["history"]],
               message="the sync to record the move")
    stack.wait_for_status(appt["id"], "synced")
    assert len(sims.neetocal_bookings()) == 1
    assert_neetocal_calls_fit(sims, neetocal)


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_lost_cancellation_is_healed_by_one_run(make_stack, sims: Sims, neetocal: str) -> None:
    stack = make_stack(MEETERGO_API_KEY=API_KEY, **neetocal_env(sims, neetocal))
    appt = synced_by_webhook(stack, sims)
    at = (datetime.fromisoformat(appt["updatedAt"].replace("Z", "+00:00")) + timedelta(seconds=5)).astimezone(UTC)
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sims.post("meetergo", "appointments", {**appt, "isCancelled": True, "updatedAt": stamp,
                                           "cancel": {"cancelledAt": stamp, "cancelledBy": "attendee",
                                                      "reason": "no longer needed"}})
    assert run_reconcile(stack) == 1
    stack.wait_for_status(appt["id"], "cancelled")
    assert sims.zoom_meetings() == []
    assert sims.neetocal_bookings() == []
    assert_neetocal_calls_fit(sims, neetocal)


def test_a_failing_user_list_and_a_malformed_appointment_do_not_stop_the_run(stack: Stack, sims: Sims) -> None:
    good = appointment(days=3)
    broken = {**appointment(days=4), "end": "not a time"}
    sims.post("meetergo", "appointments", good)
    sims.post("meetergo", "appointments", broken)
    # Reading the hosts fails: an appointment naming a host the service has never seen cannot be resolved now.
    sims.configure("meetergo", scripted_faults=[{"method": "GET", "path": "/v4/user", "kind": "500", "times": 50}])
    assert run_reconcile(stack) == 0
    assert metric(stack, "meetbridge_reconcile_errors_total", reason="users") >= 1
    assert metric(stack, "meetbridge_reconcile_errors_total", reason="unreadable") >= 1
    # Once users can be read, the good one is healed and the broken one is still only counted.
    sims.configure("meetergo", scripted_faults=[])
    assert run_reconcile(stack) == 1
    stack.wait_for_status(good["id"], "synced")
    assert stack.appointment(broken["id"]) is None


def test_a_run_that_breaks_off_before_queueing_leaves_what_it_recorded_to_the_stale_pending_sweep(
        stack: Stack, sims: Sims) -> None:
    """The run records meetergo's appointments one by one and queues them at its end: one that breaks off in
    between (a Redis failover, a killed worker) has recorded events the next run finds already known, so nothing
    but the pending set can still bring them to a sync."""
    lost = [appointment(days=2), appointment(days=3)]
    for appt in lost:
        sims.post("meetergo", "appointments", appt)
    services = build_services(stack.settings)
    try:
        noted = services.store.note
        calls = []

        def breaks_on_the_second(*args, **kwargs):
            calls.append(args)
            if len(calls) == 2:
                raise redis.ConnectionError("failover")
            return noted(*args, **kwargs)

        services.store.note = breaks_on_the_second
        queued: list[str] = []
        with pytest.raises(redis.ConnectionError):
            reconcile(services, queued.extend)
        services.store.note = noted
        assert queued == [] and len(calls) == 2
        assert run_reconcile(stack) == 0  # both recorded: the next run has nothing to add
        later = time.time() + 2 * stack.settings.broker_visibility_timeout_seconds + 1
        _, syncs = sweep_schedules(services, now=later, refreshes_too=False)
        assert syncs == 2
    finally:
        services.close()
    for appt in lost:
        stack.wait_for_status(appt["id"], "synced")
    assert len(sims.zoom_meetings()) == 2
