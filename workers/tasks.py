"""Celery tasks: thin shims over plain functions that take the process's services.

Retries are explicit: a failed attempt queues the next one with a backoff countdown (at most
RETRY_MAX_DELAY_SECONDS, well inside the broker's visibility timeout). Anything that must wait longer (a
spent daily quota, a far Retry-After) is parked in Redis's deferred schedule and picked up by beat's sweep,
never held in worker memory as a Celery ETA.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import redis
from celery.exceptions import Reject

from meetbridge.config import Settings
from schemas.events import AppointmentEvent
from schemas.times import epoch_utc_seconds
from workers.celery_app import QUEUE, RECONCILE, REFRESH, SWEEP, SWEEP_DEFERRED, SYNC, app
from workers.clients.base import backoff_delay
from workers.clients.errors import MeetbridgeError, WaitsUntil
from workers.desired import fold, snapshot
from workers.limits import lock_seconds
from workers.queue import enqueue_many, queue_syncs
from workers.reconciliation import reconcile as reconcile_with_meetergo
from workers.start_urls import StartUrls, claim_lease, ends_at
from workers.state import KEYS, AppointmentBusy, AppointmentRecord
from workers.state.caches import only_one
from workers.sync import AppointmentSync, retain
from workers.wiring import Services, get_services

log = logging.getLogger(__name__)

DEFERRED_SWEEP_SECONDS = 2.0
SWEEP_BATCH = 1000
DEFERRED_CLAIM_LEASE_SECONDS = 300
# Fewer waiting messages than this are taken well within the stale-pending interval (2 × the broker's visibility
# timeout) at any rate a worker keeps up: a pending sync older than that has no message waiting.
STALE_REQUEUE_MAX_BACKLOG = 100


@dataclass(frozen=True)
class Outcome:
    status: str  # synced | cancelled | waiting | retry | busy | failed
    retry_in: float | None = None


SETTLED = frozenset({"synced", "cancelled", "skipped", "waiting", "failed"})


def run_sync(services: Services, appointment_id: str) -> Outcome:
    """One attempt at converging the appointment; says whether and when to try again.

    The count of failed attempts lives in the record, not in the task message: a retry may run from the
    deferred schedule or on another worker, and still counts towards SYNC_MAX_RETRIES."""
    store, settings = services.store, services.settings
    lock_ttl = lock_seconds(settings)
    start = store.start_sync(appointment_id, lock_ttl)
    record = start.record
    attempt = record.sync_attempts if record else 0
    try:
        with store.held(appointment_id, start.lease) as lease:
            status = AppointmentSync(services, appointment_id, lease, record, start.events).run()
    except AppointmentBusy:
        # Another worker is on it; look again once it is likely done (a crashed holder's lock expires).
        return Outcome("busy", retry_in=min(lock_ttl, 0.5 * 2 ** min(attempt, 6)) + random.uniform(0, 0.5))
    except WaitsUntil as error:
        park(services, appointment_id, error.resume_at.timestamp(), str(error))
        return _counted(services, appointment_id, Outcome("waiting"), meeting_end(record, start.events))
    except MeetbridgeError as error:
        if error.transient and attempt < settings.sync_max_retries:
            delay = backoff_delay(attempt, base=2.0, cap=settings.retry_max_delay_seconds,
                                  retry_after=error.retry_after)
            if delay > settings.retry_max_delay_seconds:
                park(services, appointment_id, time.time() + delay, f"{error} (asked to wait {delay:.0f}s)")
                return _counted(services, appointment_id, Outcome("waiting"), meeting_end(record, start.events))
            store.update(appointment_id, sync_attempts=attempt + 1,
                         error=f"{error}; retry {attempt + 1} of {settings.sync_max_retries} in {delay:.0f}s")
            store.note(appointment_id, "retry", str(error))
            services.metrics.count("meetbridge_retries_total", reason=type(error).__name__)
            return Outcome("retry", retry_in=delay)
        store.mark_failed(appointment_id, str(error))
        return _counted(services, appointment_id, Outcome("failed"), meeting_end(record, start.events))
    except redis.RedisError:
        raise  # our own state is out of reach: nothing can be recorded, the task goes back to the queue
    except Exception as error:
        # A bug, not the outside world: fail visibly rather than retry it forever.
        log.exception("sync crashed")
        store.mark_failed(appointment_id, f"internal error: {type(error).__name__}: {error}")
        return _counted(services, appointment_id, Outcome("failed"), meeting_end(record, start.events))
    # The sync's last write settled and retained the appointment: only the count is left.
    services.metrics.count("meetbridge_syncs_total", outcome=status)
    return Outcome(status)


def park(services: Services, appointment_id: str, resume_at: float, reason: str) -> None:
    services.store.update(appointment_id, status="waiting", waiting_reason=reason,
                          resume_at=epoch_utc_seconds(resume_at), error=None)
    # Spread the wake-up so a quota reset does not release every parked sync in the same second.
    services.store.deferred.put(appointment_id, resume_at + random.uniform(0, 60))
    services.store.note(appointment_id, "waiting", reason)


def meeting_end(record: AppointmentRecord | None, events: list[AppointmentEvent]) -> float | None:
    """When the appointment ends, by the later of its record and its newest events: a first sync that fails has
    recorded no end yet, and a reschedule that fails recorded the old one. Its records are kept past that."""
    desired = fold(events)
    known = (ends_at(record) if record else None, desired.end.timestamp() if desired and desired.end else None)
    return max((end for end in known if end is not None), default=None)


def _counted(services: Services, appointment_id: str, outcome: Outcome, meeting_ends_at: float | None = None
             ) -> Outcome:
    if outcome.status in SETTLED:
        services.store.settled(appointment_id)
    if outcome.status in ("failed", "waiting"):  # a sync that ends well retains the records itself
        retain(services, appointment_id, meeting_ends_at)
    services.metrics.count("meetbridge_syncs_total", outcome=outcome.status)
    return outcome


def in_memory_wait_limit(settings: Settings) -> float:
    """The longest retry a worker may hold as a countdown. A held message counts as unacknowledged, and the
    broker hands it to another worker after the visibility timeout: anything longer waits in Redis instead."""
    return settings.broker_visibility_timeout_seconds / 3


@app.task(name=SYNC)
def sync_appointment(appointment_id: str, attempt: int = 0) -> str:
    # `attempt` is accepted for messages queued by an earlier version; the count now lives in the record.
    services = get_services()
    try:
        outcome = run_sync(services, appointment_id)
    except redis.RedisError as error:
        # Never acknowledge work that was not done: hand the message back (it is restored from the unacked
        # set after the visibility timeout if Redis cannot even take it back now).
        log.warning("Redis is unreachable mid-sync; requeueing: %s", error)
        services.store.epoch.check_again()
        raise Reject(error, requeue=True) from error
    if outcome.retry_in is not None:
        if outcome.retry_in <= in_memory_wait_limit(services.settings):
            # Queued before this message is acknowledged: a crash in between repeats work, never loses it.
            sync_appointment.apply_async((appointment_id,), countdown=outcome.retry_in)
        else:
            services.store.deferred.put(appointment_id, time.time() + outcome.retry_in)
    return outcome.status


def refresh_one(services: Services, appointment_id: str, force: bool = False) -> str:
    try:
        result = StartUrls(services).refresh(appointment_id, force=force)
    except MeetbridgeError as error:
        # The claim's lease puts it back in the sweep's way, well before the start_url expires.
        log.warning("start_url refresh failed: %s", error)
        result = "error"
    if result == "drifted":
        queue_syncs(services, [appointment_id])  # the meeting was deleted or changed in Zoom: put it back
    services.metrics.count("meetbridge_start_url_refreshes_total", outcome=result)
    return result


@app.task(name=REFRESH)
def refresh_start_url(appointment_id: str, force: bool = False) -> str:
    return refresh_one(get_services(), appointment_id, force)


def sweep_schedules(services: Services, now: float | None = None, batch: int = SWEEP_BATCH,
                    refreshes_too: bool = True) -> tuple[int, int]:
    """Queue the start_url refreshes and parked syncs that are due; returns how many of each."""
    now = time.time() if now is None else now
    store = services.store
    refreshes = syncs = 0
    while refreshes_too:
        due = store.refresh.claim_due(now, batch, claim_lease(services.settings))
        refreshes += enqueue_many(services.store, app, REFRESH, [(member,) for member in due])
        if len(due) < batch:
            break
    while refreshes_too:
        over = store.ended.claim_due(now, batch, DEFERRED_CLAIM_LEASE_SECONDS)
        for appointment_id in over:
            store.close_ended(appointment_id, snapshot)
        gone = store.forget.claim_due(now, batch, DEFERRED_CLAIM_LEASE_SECONDS)
        store.forget_everywhere(gone)
        if len(over) < batch and len(gone) < batch:
            break
    # A sync whose task was lost outright (not merely unacknowledged: the broker restores those) is queued again;
    # only while the queue is short, since one whose message still waits behind a backlog looks lost too, and
    # queueing it again each interval would feed the very backlog it waits in.
    lost: list[str] = []
    if store.waiting_tasks(QUEUE) < STALE_REQUEUE_MAX_BACKLOG:
        lost = store.stale_pending(now - 2 * services.settings.broker_visibility_timeout_seconds, now)
    if lost:
        log.warning("queueing %d pending appointment(s) again: no task of theirs ran for a while", len(lost))
        syncs += enqueue_many(services.store, app, SYNC, [(member,) for member in lost])
    while True:
        # Taken off the schedule and pending again (parking settled it), in one step: if they cannot be queued
        # now (this beat dies, the broker fails over), or a sync's retry cannot be published later, the
        # stale-pending sweep is what still knows of them, within two visibility timeouts.
        parked = store.take_parked(now, batch)
        syncs += enqueue_many(services.store, app, SYNC, [(member,) for member in parked])
        if len(parked) < batch:
            break
    return refreshes, syncs


@app.task(name=SWEEP)
def sweep() -> tuple[int, int]:
    return sweep_schedules(get_services())


@app.task(name=SWEEP_DEFERRED)
def sweep_deferred() -> tuple[int, int]:
    """Parked syncs only, every few seconds: retries wait here rather than in a worker's memory."""
    return sweep_schedules(get_services(), refreshes_too=False)


@app.task(name=RECONCILE)
def reconcile() -> int:
    services = get_services()
    # One reconciliation at a time, however many beats run: meetergo allows 100 requests a minute.
    with only_one(services.redis, KEYS.reconcile_lock, int(services.settings.reconcile_seconds)) as mine:
        return reconcile_with_meetergo(services, lambda ids: queue_syncs(services, ids)) if mine else 0
