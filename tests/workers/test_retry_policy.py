"""The retry policy of one sync attempt (`run_sync`): what each kind of error becomes, on real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from kombu.exceptions import OperationalError

from meetbridge.config import Settings
from sandbox import meetergo as meetergo_sim
from schemas.meetergo import parse_delivery
from tests.support import REDIS_URL, appointment, service_env
from workers import tasks
from workers.clients.errors import (
    APIConnectionError,
    BudgetTaken,
    CannotSync,
    DailyCapReached,
    MeetbridgeError,
    QuotaParked,
    RateLimited,
    ValidationFailed,
)
from workers.queue import QUEUE, sync_message
from workers.state import KEYS
from workers.wiring import Services, build_services

ID = "appt-policy"


@pytest.fixture
def services(sandbox, redis_client: redis.Redis) -> Iterator[Services]:
    built = build_services(Settings.from_env(service_env(sandbox, REDIS_URL, SYNC_MAX_RETRIES="2",
                                                         RETRY_MAX_DELAY_SECONDS="300")))
    built.store.update(ID, status="pending")
    yield built
    built.close()


def failing_with(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    class Failing:
        def __init__(self, *_: object) -> None:
            pass

        def run(self) -> str:
            raise error

    monkeypatch.setattr(tasks, "AppointmentSync", Failing)


@pytest.mark.parametrize("error", [
    APIConnectionError("reset", service="zoom"),
    RateLimited("too fast", service="zoom", status=429),
    BudgetTaken("the zoom:medium budget is taken for more than 10s ahead", retry_after=10),
])
def test_a_transient_error_is_retried_with_backoff_and_counted(services: Services, monkeypatch, error) -> None:
    failing_with(monkeypatch, error)
    outcome = tasks.run_sync(services, ID)
    assert outcome.status == "retry" and outcome.retry_in is not None
    assert outcome.retry_in >= (error.retry_after or 0)
    record = services.store.load(ID)
    assert record is not None and record.sync_attempts == 1 and "retry 1 of 2" in (record.error or "")


@pytest.mark.parametrize("error", [
    ValidationFailed("bad", service="zoom", status=400, code=300),
    CannotSync("no event for this appointment says when it is and who hosts it"),
])
def test_a_permanent_error_fails_the_appointment_into_the_dead_letter_set(services: Services, monkeypatch,
                                                                          redis_client: redis.Redis, error) -> None:
    failing_with(monkeypatch, error)
    assert tasks.run_sync(services, ID).status == "failed"
    assert redis_client.zscore(KEYS.dead_letter, ID) is not None
    assert services.store.load(ID).error == str(error)


def test_a_sync_that_finds_the_lock_held_backs_off_by_the_recorded_attempts(services: Services,
                                                                           redis_client: redis.Redis) -> None:
    services.store.update(ID, sync_attempts=3)
    redis_client.zadd(KEYS.deferred_schedule, {ID: 1})
    redis_client.set(KEYS.lock(ID), "another worker's token")
    outcome = tasks.run_sync(services, ID)
    assert outcome.status == "busy" and outcome.retry_in is not None
    assert 4.0 <= outcome.retry_in <= 4.5  # 0.5 s doubled per failed attempt, and some jitter
    assert redis_client.zscore(KEYS.deferred_schedule, ID) is None  # this is its sync, lock or not
    assert redis_client.get(KEYS.lock(ID)) == "another worker's token"
    assert services.store.load(ID).status == "pending"


def test_retries_run_out_into_failed(services: Services, monkeypatch) -> None:
    failing_with(monkeypatch, APIConnectionError("reset", service="neetocal"))
    assert [tasks.run_sync(services, ID).status for _ in range(3)] == ["retry", "retry", "failed"]


@pytest.mark.parametrize("error", [
    QuotaParked("Zoom's daily limit of 100 ... is reached", resume_at=datetime.now(UTC) + timedelta(hours=3)),
    DailyCapReached("the daily limit of this API", service="zoom", status=429,
                    resume_at=datetime.now(UTC) + timedelta(hours=3)),
])
def test_a_spent_daily_budget_parks_the_sync_until_it_resets(services: Services, monkeypatch,
                                                             redis_client: redis.Redis, error) -> None:
    failing_with(monkeypatch, error)
    assert tasks.run_sync(services, ID).status == "waiting"
    record = services.store.load(ID)
    assert record is not None and record.status == "waiting" and record.error is None
    due = redis_client.zscore(KEYS.deferred_schedule, ID)
    assert due is not None and abs(due - error.resume_at.timestamp()) <= 60
    assert redis_client.zscore(KEYS.dead_letter, ID) is None


def test_a_retry_after_beyond_the_longest_backoff_is_parked_in_redis(services: Services, monkeypatch,
                                                                     redis_client: redis.Redis) -> None:
    failing_with(monkeypatch, RateLimited("wait an hour", service="neetocal", status=429, retry_after=3600))
    assert tasks.run_sync(services, ID).status == "waiting"
    assert redis_client.zscore(KEYS.deferred_schedule, ID) is not None


def test_a_parked_sync_whose_retry_cannot_be_published_is_still_found_by_the_stale_pending_sweep(
        services: Services, monkeypatch, redis_client: redis.Redis) -> None:
    """Parking settles the appointment (out of the pending set) and the sync it is swept for takes it out of the
    deferred schedule: if that sync's retry then cannot be published (a broker failover), the pending set the
    sweep put it back in is what still knows of it."""
    failing_with(monkeypatch, QuotaParked("spent", resume_at=datetime.now(UTC) + timedelta(seconds=1)))
    assert tasks.run_sync(services, ID).status == "waiting"
    assert redis_client.zscore(KEYS.pending, ID) is None
    due = redis_client.zscore(KEYS.deferred_schedule, ID)
    assert tasks.sweep_schedules(services, now=due + 1, refreshes_too=False) == (0, 1)

    failing_with(monkeypatch, APIConnectionError("reset", service="zoom"))
    monkeypatch.setattr(tasks, "get_services", lambda: services)

    def broker_gone(*_: object, **__: object) -> None:
        raise OperationalError("the broker connection was lost")

    monkeypatch.setattr(tasks.sync_appointment, "apply_async", broker_gone)
    with pytest.raises(OperationalError):
        tasks.sync_appointment(ID)  # failed, and acknowledged as such: its message is gone
    assert redis_client.zscore(KEYS.deferred_schedule, ID) is None
    later = time.time() + 2 * services.settings.broker_visibility_timeout_seconds + 1
    assert tasks.sweep_schedules(services, now=later, refreshes_too=False) == (0, 1)


def test_a_parked_sync_swept_by_a_beat_that_dies_before_queueing_it_is_found_within_a_minute(
        services: Services, monkeypatch, redis_client: redis.Redis) -> None:
    """The sweep takes the parked sync off the schedule, then queues it in a round trip of its own: a beat that
    dies (or loses the broker) in between must not leave it parked under a claim for minutes."""
    failing_with(monkeypatch, QuotaParked("spent", resume_at=datetime.now(UTC) + timedelta(seconds=1)))
    assert tasks.run_sync(services, ID).status == "waiting"
    due = redis_client.zscore(KEYS.deferred_schedule, ID)

    def broker_gone(*_: object, **__: object) -> int:
        raise OperationalError("the broker connection was lost")

    with monkeypatch.context() as during:
        during.setattr(tasks, "enqueue_many", broker_gone)
        with pytest.raises(OperationalError):
            tasks.sweep_schedules(services, now=due + 1, refreshes_too=False)
    assert redis_client.llen(QUEUE) == 0, "nothing was queued"
    later = due + 1 + 2 * services.settings.broker_visibility_timeout_seconds + 1
    assert tasks.sweep_schedules(services, now=later, refreshes_too=False) == (0, 1)
    assert redis_client.llen(QUEUE) == 1


def test_a_retry_that_waited_in_redis_is_queued_once_when_due(services: Services, redis_client: redis.Redis) -> None:
    """A retry longer than a worker may hold waits in the deferred schedule while the appointment stays pending
    (since its first attempt, minutes ago): once swept, the stale-pending sweep must not take that old pending
    time for a lost task and queue it a second time, which would skip its backoff."""
    now = time.time()
    redis_client.zadd(KEYS.pending, {ID: now - 300})
    services.store.deferred.put(ID, now - 1)
    assert tasks.sweep_schedules(services, now=now, refreshes_too=False) == (0, 1)
    assert tasks.sweep_schedules(services, now=now + 2, refreshes_too=False) == (0, 0)
    assert redis_client.llen(QUEUE) == 1


def test_syncs_waiting_behind_a_backlog_are_not_queued_again_until_it_drains(services: Services,
                                                                              redis_client: redis.Redis) -> None:
    """A pending sync with no lock and nothing parked looks lost after 2 × the visibility timeout, but its message
    may only be waiting behind a backlog (a bulk import, catching up after an outage): queueing it again every
    interval would grow the backlog it waits in. Once the queue is short, the ones still pending are lost."""
    for _ in range(tasks.STALE_REQUEUE_MAX_BACKLOG + 20):
        appt = appointment()
        event = parse_delivery(meetergo_sim.booking_created(appt), received_at=datetime.now(UTC)).event
        assert services.store.record_delivery(event, sync_message(appt["id"]), QUEUE, history="booked")
    waiting = redis_client.llen(QUEUE)
    later = time.time() + 2 * services.settings.broker_visibility_timeout_seconds + 1
    assert tasks.sweep_schedules(services, now=later, refreshes_too=False) == (0, 0)
    assert redis_client.llen(QUEUE) == waiting
    redis_client.delete(QUEUE)  # their messages are gone (a failover lost them), and they are still pending
    assert tasks.sweep_schedules(services, now=later, refreshes_too=False) == (0, waiting)


@pytest.mark.parametrize("error", [ValidationFailed("refused", service="zoom"),
                                   QuotaParked("spent", resume_at=datetime.now(UTC) + timedelta(hours=3))])
def test_an_appointment_whose_first_sync_fails_or_waits_is_kept_past_its_meeting(
        services: Services, monkeypatch, redis_client: redis.Redis, error: MeetbridgeError) -> None:
    """Its record holds no end yet (a sync records it): its events say when the meeting ends, and an operator
    must still find it, dead letter and all, until RETENTION_DAYS after that."""
    appt = appointment(days=60)
    event = parse_delivery(meetergo_sim.booking_created(appt), received_at=datetime.now(UTC)).event
    assert services.store.record_delivery(event, sync_message(appt["id"]), QUEUE, history="booked")
    failing_with(monkeypatch, error)
    tasks.run_sync(services, appt["id"])
    kept_until = time.time() + redis_client.ttl(KEYS.appointment(appt["id"]))
    assert kept_until >= event.end.timestamp() + services.settings.retention_days * 86400 - 60
    assert redis_client.zscore(KEYS.forget_schedule, appt["id"]) >= kept_until - 60


def test_a_bug_fails_visibly_instead_of_retrying_forever(services: Services, monkeypatch) -> None:
    failing_with(monkeypatch, KeyError("oops"))
    assert tasks.run_sync(services, ID).status == "failed"
    assert "internal error: KeyError" in services.store.load(ID).error


def test_every_error_the_sync_raises_on_purpose_is_a_meetbridge_error() -> None:
    for cls in (APIConnectionError, RateLimited, ValidationFailed, DailyCapReached, CannotSync, QuotaParked,
                BudgetTaken):
        assert issubclass(cls, MeetbridgeError)
