"""The state layer: key names, the move from earlier key names, and writes under an appointment's lock."""

from __future__ import annotations

import contextlib
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
import redis

from schemas.events import AppointmentEvent
from workers.state import KEYS, REDIS_RETRY, REDIS_RETRY_ON, AppointmentBusy, Store
from workers.state.caches import only_one


def test_each_kind_of_key_has_its_own_namespace() -> None:
    ids = ["X", "X:events", "X:lock", "X:history", "appt:X"]
    names = [kind(appointment_id) for appointment_id in ids
             for kind in (KEYS.appointment, KEYS.events, KEYS.history, KEYS.lock)]
    assert len(set(names)) == len(names)


def test_earlier_key_names_are_moved_once(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    redis_client.zadd(KEYS.appointments, {"a1": 1})
    redis_client.hset("mb:appt:a1", "status", "synced")
    redis_client.hset("mb:appt:a1:events", "f1", "{}")
    redis_client.lpush("mb:appt:a1:history", "{}")
    assert store.migrate_keys() == 2
    assert redis_client.hgetall(KEYS.events("a1")) == {"f1": "{}"}
    assert redis_client.llen(KEYS.history("a1")) == 1
    assert redis_client.hgetall(KEYS.appointment("a1")) == {"status": "synced"}
    assert store.migrate_keys() == 0


def test_stale_pending_finds_syncs_whose_task_was_lost_once_per_interval(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    redis_client.zadd(KEYS.pending, {"lost": 100, "running": 100, "parked": 100, "fresh": 990})
    redis_client.set(KEYS.lock("running"), "token")
    store.deferred.put("parked", 2000)
    assert store.stale_pending(older_than=500, now=1000) == ["lost"]
    assert redis_client.zscore(KEYS.pending, "lost") == 1000  # not again until another interval has passed
    assert store.stale_pending(older_than=500, now=1000) == []


def test_the_intake_numbers_each_appointments_events_in_the_order_it_records_them(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    for hour in (11, 14, 11):  # the third is a repeated delivery of the first: not recorded again
        start = at.replace(hour=hour)
        event = AppointmentEvent(kind="booking_rescheduled", appointment_id="a1", occurred_at=at, start=start,
                                 end=start + timedelta(minutes=30))
        store.record_delivery(event, "{}", "queue", history="moved")
    store.add_event(AppointmentEvent(kind="readback", appointment_id="a1", occurred_at=at))
    seqs = {event.start.hour if event.start else None: event.seq for event in store.events("a1")}
    assert seqs == {11: 1, 14: 2, None: 3}


def test_a_record_is_written_only_by_the_holder_of_its_lock(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    with store.lock("a1", 30) as lease:
        store.update_held("a1", lease, status="synced", error=None)
        assert redis_client.hget(KEYS.appointment("a1"), "status") == "synced"
        redis_client.set(KEYS.lock("a1"), "another worker's token")
        with pytest.raises(AppointmentBusy):
            store.update_held("a1", lease, status="failed")
        assert redis_client.hget(KEYS.appointment("a1"), "status") == "synced"


def test_a_held_write_carries_its_notes_and_schedule_changes_and_nothing_under_a_lost_lock(
        redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    redis_client.zadd(KEYS.neetocal_refused, {"a1": 1})
    with store.lock("a1", 30) as lease:
        store.update_held("a1", lease, notes=[("zoom_meeting_created", "meeting 7"), ("neetocal_link_created", "l")],
                          sets={KEYS.refresh_schedule: 1234.5, KEYS.neetocal_refused: None}, zoom_meeting_id=7)
        assert redis_client.hget(KEYS.appointment("a1"), "zoom_meeting_id") == "7"
        assert [(e["event"], e["detail"]) for e in store.history("a1")] == [  # in the order given
            ("zoom_meeting_created", "meeting 7"), ("neetocal_link_created", "l")]
        assert redis_client.zscore(KEYS.refresh_schedule, "a1") == 1234.5
        assert redis_client.zscore(KEYS.neetocal_refused, "a1") is None
        redis_client.set(KEYS.lock("a1"), "another worker's token")
        with pytest.raises(AppointmentBusy):
            store.update_held("a1", lease, notes=[("zoom_meeting_updated", "meeting 7")],
                              sets={KEYS.refresh_schedule: 99.0}, zoom_start="2030-01-01T10:00:00Z")
    assert redis_client.hget(KEYS.appointment("a1"), "zoom_start") is None
    assert len(store.history("a1")) == 2
    assert redis_client.zscore(KEYS.refresh_schedule, "a1") == 1234.5
    assert redis_client.get(KEYS.lock("a1")) == "another worker's token"  # not ours to release


def test_a_syncs_last_write_settles_retains_and_lets_the_lock_go(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    redis_client.zadd(KEYS.pending, {"a1": 1})
    redis_client.zadd(KEYS.dead_letter, {"a1": 1})
    redis_client.hset(KEYS.appointment("a1"), mapping={"status": "pending", "sync_attempts": 2, "error": "x"})
    redis_client.hset(KEYS.events("a1"), "f", "{}")
    until = int(datetime.now(UTC).timestamp()) + 3600
    with store.lock("a1", 30) as lease:
        store.finish_sync("a1", lease, "synced", ends_at=until - 60, keep_until=until,
                          sets={KEYS.neetocal_join_url_dropped: 5.0}, error=None)
        assert redis_client.get(KEYS.lock("a1")) is None  # let go with the write, not after it
        redis_client.set(KEYS.lock("a1"), "the next worker's token")
    assert redis_client.get(KEYS.lock("a1")) == "the next worker's token"  # left alone on leaving
    record = redis_client.hgetall(KEYS.appointment("a1"))
    assert record["status"] == "synced" and "sync_attempts" not in record and "error" not in record
    assert [e["event"] for e in store.history("a1")] == ["synced"]
    assert redis_client.zscore(KEYS.pending, "a1") is None and redis_client.zscore(KEYS.dead_letter, "a1") is None
    assert redis_client.zscore(KEYS.forget_schedule, "a1") == until
    assert redis_client.zscore(KEYS.ended_schedule, "a1") == until - 60
    assert redis_client.zscore(KEYS.neetocal_join_url_dropped, "a1") == 5.0
    for key in (KEYS.appointment("a1"), KEYS.events("a1"), KEYS.history("a1")):
        assert redis_client.expiretime(key) == until, key


def test_a_syncs_last_write_under_a_lost_lock_writes_nothing(redis_client: redis.Redis) -> None:
    store = Store(redis_client)
    redis_client.zadd(KEYS.pending, {"a1": 1})
    redis_client.hset(KEYS.appointment("a1"), mapping={"status": "pending", "sync_attempts": 2})
    with store.lock("a1", 30) as lease:
        redis_client.set(KEYS.lock("a1"), "another worker's token")
        with pytest.raises(AppointmentBusy):
            store.finish_sync("a1", lease, "synced", ends_at=None, keep_until=2_000_000_000, sets={})
    assert redis_client.hgetall(KEYS.appointment("a1")) == {"status": "pending", "sync_attempts": "2"}
    assert store.history("a1") == [] and redis_client.zscore(KEYS.pending, "a1") == 1
    assert redis_client.zscore(KEYS.forget_schedule, "a1") is None and redis_client.ttl(KEYS.appointment("a1")) == -1
    assert redis_client.get(KEYS.lock("a1")) == "another worker's token"


def _redis_process(client: redis.Redis, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `client` see a Redis process with `run_id` (a restart changes it)."""
    info = client.info
    monkeypatch.setattr(client, "info", lambda *args, **kwargs: {**info(*args, **kwargs), "run_id": run_id})


def test_a_restart_is_seen_even_when_redis_lost_the_run_id_it_was_told(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored run id is written a moment before a crash can take it: the process that wrote it remembers."""
    from workers.state import RedisEpoch

    epoch = RedisEpoch(redis_client, KEYS)
    _redis_process(redis_client, "a" * 40, monkeypatch)
    assert not epoch.recently_restarted()  # the first Redis this process sees: nothing to compare with

    redis_client.flushdb()  # the crash took the stored run id with the last second of writes
    _redis_process(redis_client, "b" * 40, monkeypatch)
    epoch.check_again()
    assert epoch.recently_restarted()
    assert redis_client.get(KEYS.redis_restarted_at)

    fresh = RedisEpoch(redis_client, KEYS)  # another process learns of it from Redis
    assert fresh.recently_restarted()


def test_a_lock_a_lost_connection_kept_is_let_go_by_the_next_sync(private_redis) -> None:
    """Redis went away mid-sync: the lock could not be released, and Redis's restart brings it back from its
    append-only file, held by nobody. The process's next sync releases it in its first round trip, rather than
    leaving the appointment busy until the lock lapses."""
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store = Store(client)
    start = store.start_sync("a1", 60)
    with pytest.raises(redis.ConnectionError), store.held("a1", start.lease):
        private_redis.stop()
    private_redis.start()
    assert client.get(KEYS.lock("a1")) == start.lease.token  # the restart really brought it back

    again = store.start_sync("a1", 60)  # the retry of the same appointment, in the same round trip

    assert again.lease is not None
    assert client.get(KEYS.lock("a1")) == again.lease.token


class AnswerDropper:
    """A TCP proxy in front of Redis that lets through everything but the answer to the first request carrying
    `marker`: Redis applies it, then the client's connection is closed, as when a network drops mid-answer."""

    def __init__(self, redis_port: int, marker: bytes) -> None:
        self.redis_port, self.marker = redis_port, marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = self.dropped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if requests and not self.dropped and self.marker in chunk:
                    self.armed = True
                elif not requests and self.armed and not self.dropped:
                    self.dropped = True
                    break
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_a_lock_whose_answer_was_lost_is_still_ours_when_the_client_sends_its_pipeline_again(
        private_redis) -> None:
    """Redis takes the lock, and its answer is lost; redis-py sends the pipeline again (REDIS_RETRY), and that
    SET NX finds the lock the first one took. The lock is this sync's all the same, not another holder's: the
    appointment is not left busy until it lapses."""
    dropper = AnswerDropper(private_redis.port, marker=b"$3\r\nSET\r\n")
    try:
        client = redis.Redis(port=dropper.port, decode_responses=True, retry=REDIS_RETRY,
                             retry_on_error=REDIS_RETRY_ON)
        store = Store(client)
        start = store.start_sync("a1", 60)
    finally:
        dropper.close()

    assert dropper.dropped, "no answer was lost"
    assert start.lease is not None
    assert redis.Redis(port=private_redis.port, decode_responses=True).get(KEYS.lock("a1")) == start.lease.token


def test_a_restart_is_seen_at_the_first_question_after_reconnecting(private_redis) -> None:
    """The epoch is asked at most every few seconds, but a new connection asks afresh: a restart is seen by the
    next sync even when no task met the outage (the worker was between tasks)."""
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    store, other = Store(client), Store(client)  # two on one client: each is told
    assert not store.epoch.recently_restarted() and not other.epoch.recently_restarted()  # the Redis it knows
    private_redis.stop()
    private_redis.start()
    client.ping()  # the sync's first round trip: a new connection

    assert store.epoch.recently_restarted() and other.epoch.recently_restarted()


def test_a_call_that_might_outlast_what_is_left_of_the_lock_extends_it_first(redis_client: redis.Redis) -> None:
    """The lock lasts one step's worst case plus a margin: a call made once the margin is spent extends it first,
    or a slow step (a rate wait, then attempts timing out) could outlive it while results are kept unwritten."""
    from meetbridge.config import Settings
    from tests.support import REDIS_URL
    from workers.limits import LOCK_MARGIN_SECONDS, lock_seconds
    from workers.sync import AppointmentSync
    from workers.wiring import build_services

    settings = Settings(redis_url=REDIS_URL)
    services = build_services(settings)
    start = services.store.start_sync("a1", lock_seconds(settings))
    assert start.lease is not None
    lease = start.lease
    sync = AppointmentSync(services, "a1", lease, None, [])
    taken_at = lease.extended_at

    sync.before_remote_call("GET")  # just taken: a whole step fits in what is left
    assert lease.extended_at == taken_at

    spent_ms = int((LOCK_MARGIN_SECONDS + 1) * 1000)  # as if the sync had run that long since
    lease.extended_at -= spent_ms / 1000
    redis_client.pexpire(KEYS.lock("a1"), lease.ttl_ms - spent_ms)
    sync.before_remote_call("GET")

    assert lease.extended_at >= taken_at
    assert redis_client.pttl(KEYS.lock("a1")) > lease.ttl_ms - 1000


def test_a_job_that_outlasts_its_claim_leaves_the_next_holders_claim_alone(redis_client: redis.Redis) -> None:
    """A reconciliation that runs past its claim's lifetime must not, when it ends, free the claim another beat
    took since: a third would start beside the second."""
    with only_one(redis_client, KEYS.reconcile_lock, 60) as mine:
        assert mine
        redis_client.set(KEYS.reconcile_lock, "another-beat", ex=60)  # ours lapsed; another beat took it
    assert redis_client.get(KEYS.reconcile_lock) == "another-beat"
    redis_client.delete(KEYS.reconcile_lock)
    with only_one(redis_client, KEYS.reconcile_lock, 60) as mine:
        assert mine
    assert redis_client.get(KEYS.reconcile_lock) is None, "a claim is let go when its job ends"


def test_an_appointment_delivered_again_as_its_records_expire_stays_listed(redis_client: redis.Redis) -> None:
    """The forget sweep takes an appointment whose records expired out of every set; one delivered again just then
    (its record made anew) stays in them, or it would be missing from the listing and the pending set for good."""
    store = Store(redis_client)
    for appointment_id in ("back", "gone"):
        redis_client.zadd(KEYS.appointments, {appointment_id: 1})
        redis_client.zadd(KEYS.pending, {appointment_id: 1})
    redis_client.hset(KEYS.appointment("back"), "status", "received")
    assert store.forget_everywhere(["back", "gone"]) == ["gone"]
    assert redis_client.zrange(KEYS.appointments, 0, -1) == ["back"]
    assert redis_client.zrange(KEYS.pending, 0, -1) == ["back"]
