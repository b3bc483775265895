"""Everything meetbridge keeps in Redis: key names, appointment records, schedules, locks.

Keys are namespaced under `mb:`. An appointment's keys expire RETENTION_DAYS after it ended or was cancelled
(set at the end of each sync); caches and de-duplication markers have TTLs of their own. Multi-step changes
that must not interleave run as Lua scripts, so that every process (web, workers, beat) sees each change whole.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from meetbridge.config import Settings
from schemas.events import AppointmentEvent
from schemas.times import now_utc_millis

# A command that meets a dead connection or a primary turned replica (READONLY, after a failover behind one DNS
# name or through Sentinel) reconnects and is sent again, for a few seconds: every command and script here is
# safe to repeat (the intake's script deduplicates itself).
REDIS_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8)
REDIS_RETRY_ON = [redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError]


def connect(settings: Settings, *, decode_responses: bool = True, socket_timeout: float = 5) -> redis.Redis:
    """The process's Redis client: REDIS_URL, or the primary that REDIS_SENTINELS name (REDIS_URL then gives only
    the database and the password)."""
    options: dict[str, Any] = {
        "decode_responses": decode_responses, "socket_timeout": socket_timeout, "socket_connect_timeout": 3,
        "health_check_interval": 30, "retry": REDIS_RETRY, "retry_on_error": REDIS_RETRY_ON,
    }
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    url = urlsplit(settings.redis_url)
    sentinel = Sentinel(list(settings.redis_sentinels), socket_timeout=1, socket_connect_timeout=1,
                        sentinel_kwargs={"password": settings.redis_sentinel_password, "socket_timeout": 1,
                                         "socket_connect_timeout": 1})
    return sentinel.master_for(settings.redis_sentinel_master, db=int(url.path.lstrip("/") or 0),
                               username=unquote(url.username) if url.username else None,
                               password=unquote(url.password) if url.password else None, **options)


HISTORY_LENGTH = 50
# A history entry: what happened, and its detail.
Note = tuple[str, str]
DELIVERY_DEDUPE_SECONDS = 7 * 24 * 3600


class Keys:
    """Key names. Each kind of per-appointment key has its own namespace, with the id last, so that no id can
    name another appointment's key (an id `X:events` is `mb:appt:X:events`, never `X`'s events)."""

    prefix = "mb"

    def appointment(self, appointment_id: str) -> str:
        return f"{self.prefix}:appt:{appointment_id}"

    def events(self, appointment_id: str) -> str:
        return f"{self.prefix}:events:{appointment_id}"

    def history(self, appointment_id: str) -> str:
        return f"{self.prefix}:history:{appointment_id}"

    def lock(self, appointment_id: str) -> str:
        return f"{self.prefix}:lock:{appointment_id}"

    def delivery(self, fingerprint: str) -> str:
        return f"{self.prefix}:delivery:{fingerprint}"

    appointments = f"{prefix}:appointments"  # zset: id -> first seen (epoch s), for listing
    pending = f"{prefix}:pending"  # zset: id -> acknowledged and not yet settled since (epoch s)
    redis_run_id = f"{prefix}:redis:run_id"  # the run_id of the Redis process that last checked in
    redis_restarted_at = f"{prefix}:redis:restarted_at"  # when a process first saw another run_id (epoch s)
    dead_letter = f"{prefix}:dead"  # zset: id -> failed at (epoch s)
    refresh_schedule = f"{prefix}:schedule:refresh"  # zset: id -> start_url refresh due (epoch s)
    ended_schedule = f"{prefix}:schedule:ended"  # zset: id -> meeting end: drop the start_url, compact events
    forget_schedule = f"{prefix}:schedule:forget"  # zset: id -> its keys expire: take it out of every set
    deferred_schedule = f"{prefix}:schedule:deferred"  # zset: id -> sync resumes at (epoch s)
    metrics = f"{prefix}:metrics"
    zoom_token = f"{prefix}:zoom:token"
    zoom_token_lock = f"{prefix}:zoom:token:lock"
    meetergo_users = f"{prefix}:meetergo:users"
    reconcile_lock = f"{prefix}:reconcile:lock"  # one reconciliation at a time, however many beats run
    # zset: id -> when NeetoCal was seen dropping its join URL (the booking form lacks the question); `doctor`
    # counts it. Bounded like the other sets: an appointment leaves it when fixed, cancelled or forgotten.
    neetocal_join_url_dropped = f"{prefix}:neetocal:join_url_dropped"
    # zset: id -> when NeetoCal refused one of its bookings (a warning, not a retry); `doctor` counts it too.
    neetocal_refused = f"{prefix}:neetocal:refused"

    def rate(self, name: str) -> str:
        return f"{self.prefix}:rate:{name}"

    def host_daily(self, host: str, day: str) -> str:
        return f"{self.prefix}:zoom:daily:{host.lower()}:{day}"

    def neetocal_link(self, key: str) -> str:
        return f"{self.prefix}:neetocal:link:{key}"

    def neetocal_own_schedule(self, sid: str) -> str:
        """Present while the link `sid` is known to have a schedule of its own (v1 mirror links)."""
        return f"{self.prefix}:neetocal:own-schedule:{sid}"

    def host_meetings(self, email: str) -> str:
        """zset: appointment id -> when it may leave the host's page and feed (epoch s); see workers/host_pages."""
        return f"{self.prefix}:hostidx:{email.strip().lower()}"

    def host_page_version(self, email: str) -> str:
        """The host's page link version: bumped to revoke every link handed out before."""
        return f"{self.prefix}:hostpage:{email.strip().lower()}"


KEYS = Keys()


@dataclass
class AppointmentRecord:
    """One appointment as stored: the last applied state on each side, plus status and error."""

    appointment_id: str
    status: str = "pending"
    created_at: str | None = None
    updated_at: str | None = None
    error: str | None = None
    waiting_reason: str | None = None
    resume_at: str | None = None
    ends_at: str | None = None
    zoom_meeting_id: int | None = None
    zoom_host: str | None = None
    zoom_start: str | None = None
    zoom_duration: int | None = None
    zoom_alt_hosts: str | None = None
    zoom_topic: str | None = None
    zoom_timezone: str | None = None
    zoom_join_url: str | None = None
    zoom_start_url: str | None = None
    zoom_start_url_expires_at: float | None = None
    zoom_create_pending: str | None = None
    zoom_update_pending: str | None = None
    zoom_drift: str | None = None  # "gone" or "changed": found so in Zoom by the refresh; the sync heals it
    # "meetergo" when meetergo's own Zoom integration made the meeting (meetingInfo.meetingLink): meetbridge keeps
    # its start_url fresh but leaves moving and deleting it to meetergo.
    zoom_owner: str | None = None
    zoom_external: int = 0  # 1 when that meeting is outside this Zoom account: its link is all there is
    zoom_kept: str | None = None  # the update Zoom refused (the meeting had started): not sent again
    zoom_warning: str | None = None  # what Zoom would not take of the meeting (alternative hosts it refused)
    # Each attendee's NeetoCal booking: JSON {attendee email: {sid, slug, slot, join_url, ...}} (workers/sync.py).
    neetocal_bookings: str | None = None
    neetocal_grouped: int = 0  # 1 once the appointment had several attendees: its bookings stay on a grouped link
    neetocal_warning: str | None = None  # what the service noticed on the bookings but cannot fix itself
    # Earlier versions kept one booking in these; the next sync moves it into neetocal_bookings.
    neetocal_booking_sid: str | None = None
    neetocal_meeting_slug: str | None = None
    neetocal_slot: str | None = None
    neetocal_join_url: str | None = None
    host_link_version: int = 0  # bumped to revoke the appointment's host link
    refresh_error: str | None = None
    zoom_skipped: str | None = None  # why the appointment has no Zoom meeting (its channel)
    skipped_reason: str | None = None  # why the appointment was skipped (it was over before it was synced)
    sync_attempts: int = 0  # failed attempts in a row; the retry policy's count, kept across workers
    # What the host's page and calendar feed show (workers/host_pages.py), written at the end of each sync.
    page_host: str | None = None
    page_start: str | None = None
    page_end: str | None = None
    page_status: str | None = None
    page_sequence: int = 0
    page_attendee: str | None = None
    page_meeting_type: str | None = None
    page_updated: str | None = None  # when any of these last changed (the feed's DTSTAMP)

    @classmethod
    def from_hash(cls, appointment_id: str, raw: dict[str, str]) -> AppointmentRecord:
        values: dict[str, Any] = {"appointment_id": appointment_id}
        for name in _FIELD_NAMES & raw.keys():
            values[name] = _NUMERIC_FIELDS.get(name, str)(raw[name])
        return cls(**values)


_FIELD_NAMES = {f.name for f in fields(AppointmentRecord)} - {"appointment_id"}
_NUMERIC_FIELDS: dict[str, type] = {"zoom_meeting_id": int, "zoom_duration": int, "zoom_start_url_expires_at": float,
                                    "host_link_version": int, "page_sequence": int, "sync_attempts": int,
                                    "neetocal_grouped": int, "zoom_external": int}


# Records one accepted delivery and queues its sync in one round trip: a delivery is either a duplicate
# (nothing changes) or it is recorded *and* queued; never recorded-but-not-queued.
_RECORD_DELIVERY = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HINCRBY', KEYS[7], ARGV[9], 1)
  return 0
end
-- The event's place in the appointment's intake order, appended to its JSON object (ARGV[4] ends in '}').
local seq = redis.call('HINCRBY', KEYS[2], 'event_seq', 1)
redis.call('HSET', KEYS[3], ARGV[3], string.sub(ARGV[4], 1, -2) .. ',"seq":' .. seq .. '}')
redis.call('HSETNX', KEYS[2], 'created_at', ARGV[6])
redis.call('HSET', KEYS[2], 'status', 'pending', 'updated_at', ARGV[6])
redis.call('ZADD', KEYS[6], 'NX', ARGV[7], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[10]) - 1)
redis.call('LPUSH', KEYS[5], ARGV[8])
redis.call('HINCRBY', KEYS[7], ARGV[11], 1)
redis.call('ZADD', KEYS[8], 'NX', ARGV[7], ARGV[1])
return 1
"""

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Writes one change of an appointment, only while the writer holds its lock: the record's fields, the history
# note that tells of the change, and the sets and schedules that follow it (the sync's last write also sets the
# keys' expiry and lets the lock go). One round trip for what was a lock check, a MULTI/HSET/HDEL/EXEC, an
# LPUSH/LTRIM and a ZADD or ZREM each; and a note or a schedule entry is never written without its record change,
# nor anything under a lost lock.
# KEYS: record, lock, history, events, then each set the appointment enters or leaves.
# ARGV: token, lock ms (0: let the lock go), appointment id, how many notes, history length, keys expire at
# (epoch s, '' to leave them), how many pairs to set, the pairs, how many fields to delete, the fields, the notes
# (oldest first), then one score per set of KEYS ('' takes the appointment out of it).
_WRITE_HELD = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local at = 7
local pairs = tonumber(ARGV[at])
if pairs > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, at + 1, at + 2 * pairs)) end
at = at + 2 * pairs + 1
local deletes = tonumber(ARGV[at])
if deletes > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, at + 1, at + deletes)) end
at = at + deletes
local notes = tonumber(ARGV[4])
if notes > 0 then
  redis.call('LPUSH', KEYS[3], unpack(ARGV, at + 1, at + notes))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
end
at = at + notes
for i = 5, #KEYS do
  local score = ARGV[at + i - 4]
  if score == '' then redis.call('ZREM', KEYS[i], ARGV[3]) else redis.call('ZADD', KEYS[i], score, ARGV[3]) end
end
-- After the writes: each of these keys may have just been made, and must carry the expiry too.
if ARGV[6] ~= '' then
  for i = 1, 4 do
    if i ~= 2 then redis.call('EXPIREAT', KEYS[i], ARGV[6]) end
  end
end
if ARGV[2] == '0' then redis.call('DEL', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# Takes what is due and pushes each item's score one lease ahead, so that a concurrent sweep does not take
# it too. Cost grows with the number of due items, not with the size of the schedule.
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
end
return due
"""

# Takes what is due off a schedule and marks it pending, in one step: a sweep that dies before queueing leaves it
# to the stale-pending sweep, never parked under a claim. KEYS: the schedule, the pending set. ARGV: due by,
# limit, pending since (epoch s).
_TAKE_DUE_PENDING = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  -- Pending from now: a retry that waited here was pending all along, and its old score would have the
  -- stale-pending sweep queue it a second time as soon as it leaves this schedule.
  redis.call('ZADD', KEYS[2], ARGV[3], member)
end
return due
"""


# Takes appointments out of every set (KEYS) unless their record exists again. ARGV: the record keys' prefix,
# then the ids.
_FORGET_GONE = """
local gone = {}
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    for _, set in ipairs(KEYS) do redis.call('ZREM', set, ARGV[i]) end
    table.insert(gone, ARGV[i])
  end
end
return gone
"""


# Notes which Redis process (run_id) the service last saw; when it changed, Redis restarted or failed over.
# ARGV: this Redis's run id, now, and the run id the asking process saw last ('' if none). The stored run id can
# be lost with the crash's last second (it was written just before): the asking process still remembers it.
_CHECK_IN = """
local known = redis.call('GET', KEYS[1])
if known ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  if known or (ARGV[3] ~= '' and ARGV[3] ~= ARGV[1]) then redis.call('SET', KEYS[2], ARGV[2]) end
end
return redis.call('GET', KEYS[2])
"""

RESTART_CAREFUL_SECONDS = 900
_EPOCH_CHECK_SECONDS = 5.0


class RedisEpoch:
    """Whether Redis restarted (or failed over) recently.

    With `appendfsync everysec` a crash can lose the last second of writes, among them a sync's note that a
    create was under way. For RESTART_CAREFUL_SECONDS after a new Redis process shows up, the sync therefore
    looks for an earlier attempt's effect before every write the remote API cannot deduplicate, note or not.
    Checked at most every few seconds per process: an INFO and one small script."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._check_in = client.register_script(_CHECK_IN)
        self._checked = float("-inf")
        self._restarted_at: float | None = None
        self._run_id = ""  # the Redis process this one saw last
        # Every new connection may reach a new Redis process (a restart, a failover): the next question then
        # asks afresh, however recently it was asked. A sync's first round trip comes before its question.
        _watch_new_connections(client.connection_pool, self)

    def check_again(self) -> None:
        """Redis was out of reach: the next question asks it afresh (it may be a new process by then)."""
        self._checked = float("-inf")

    def recently_restarted(self) -> bool:
        if time.monotonic() - self._checked >= _EPOCH_CHECK_SECONDS:
            run_id = self.client.info("server")["run_id"]
            found = self._check_in(keys=[self.keys.redis_run_id, self.keys.redis_restarted_at],
                                   args=[run_id, time.time(), self._run_id])
            self._run_id = run_id
            self._restarted_at = float(found) if found else None
            self._checked = time.monotonic()
        return self._restarted_at is not None and time.time() - self._restarted_at < RESTART_CAREFUL_SECONDS


def _watch_new_connections(pool: redis.ConnectionPool, epoch: RedisEpoch) -> None:
    """Tell `epoch` of each new connection of `pool` (redis-py's connect hook, one per pool, shared by every epoch
    on it)."""
    epochs: weakref.WeakSet[RedisEpoch] | None = getattr(pool, "_meetbridge_epochs", None)
    if epochs is None:
        epochs = weakref.WeakSet()
        pool._meetbridge_epochs = epochs  # type: ignore[attr-defined]

        def connected(connection: redis.connection.AbstractConnection) -> None:
            connection.on_connect()  # what redis-py does when no function is given
            for watching in list(epochs):
                watching.check_again()

        pool.connection_kwargs["redis_connect_func"] = connected
    epochs.add(epoch)


# Pending appointments whose sync seems lost (pending since before ARGV[1], no lock held, no retry parked):
# each is given a fresh pending time, so that it is queued again once per interval, and returned.
_STALE_PENDING = """
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))) do
  if redis.call('EXISTS', ARGV[4] .. id) == 0 and not redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    table.insert(found, id)
  end
end
return found
"""

# Changes fields of a record only while the fields named first still hold what the writer read (a missing field
# reads as ''). KEYS: the record. ARGV: how many fields to check, those name/value pairs, how many fields to set,
# those name/value pairs, then the fields to delete.
_UPDATE_IF = """
local checks = tonumber(ARGV[1])
for i = 2, 2 * checks, 2 do
  if (redis.call('HGET', KEYS[1], ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
end
local at = 2 * checks + 2
local sets = tonumber(ARGV[at])
redis.call('HSET', KEYS[1], unpack(ARGV, at + 1, at + 2 * sets))
if #ARGV > at + 2 * sets then redis.call('HDEL', KEYS[1], unpack(ARGV, at + 2 * sets + 1)) end
return 1
"""

REPLICA_ACK_TIMEOUT_MS = 1000


class NotReplicated(redis.RedisError):
    """Written to the primary, but fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed it in time."""


class AppointmentBusy(Exception):
    """Another worker is syncing this appointment right now."""


class Schedule:
    """A set of items each due at a time, swept by beat. Long delays live here, not in Celery ETAs."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self._claim = client.register_script(_CLAIM_DUE)

    def put(self, member: str, due: float) -> None:
        self.client.zadd(self.key, {member: due})

    def put_no_earlier(self, member: str, due: float) -> None:
        """`put`, unless the member is due later already."""
        self.client.zadd(self.key, {member: due}, gt=True)

    def remove(self, member: str) -> None:
        self.client.zrem(self.key, member)

    def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[str]:
        return list(self._claim(keys=[self.key], args=[now, limit, now + lease_seconds]))

    def earliest(self) -> float | None:
        first = self.client.zrange(self.key, 0, 0, withscores=True)
        return first[0][1] if first else None

    def __len__(self) -> int:
        return self.client.zcard(self.key)


class SharedToken:
    """The Zoom access token every process shares, and the lock of the one process renewing it."""

    RENEW_LOCK_MS = 15_000

    def __init__(self, client: redis.Redis, keys: Keys = KEYS) -> None:
        self.client = client
        self.keys = keys

    def read(self, margin_seconds: float) -> tuple[str, float] | None:
        """The shared token and its expiry, unless it expires within `margin_seconds`."""
        raw = self.client.get(self.keys.zoom_token)
        if not raw:
            return None
        data = json.loads(raw)
        if data["expires_at"] - margin_seconds <= time.time():
            return None
        return data["access_token"], data["expires_at"]

    def write(self, token: str, expires_at: float) -> None:
        ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        self.client.set(self.keys.zoom_token, json.dumps({"access_token": token, "expires_at": expires_at}),
                        px=ttl_ms)

    def drop(self, token: str) -> None:
        """Forget `token` if it is still the shared one (Zoom refused it)."""
        shared = self.read(0)
        if shared and shared[0] == token:
            self.client.delete(self.keys.zoom_token)

    @contextmanager
    def renewing(self) -> Iterator[bool]:
        """Whether this process holds the renewal lock (then it renews); released on leaving."""
        mine = bool(self.client.set(self.keys.zoom_token_lock, "1", nx=True, px=self.RENEW_LOCK_MS))
        try:
            yield mine
        finally:
            if mine:
                self.client.delete(self.keys.zoom_token_lock)


class Store:
    """Appointment records, their events and history, locks and dead letters."""

    def __init__(self, client: redis.Redis, keys: Keys = KEYS, min_replicas_ack: int = 0) -> None:
        self.client = client
        self.keys = keys
        self.min_replicas_ack = min_replicas_ack
        self.refresh = Schedule(client, keys.refresh_schedule)
        self.deferred = Schedule(client, keys.deferred_schedule)
        self.epoch = RedisEpoch(client, keys)
        self.ended = Schedule(client, keys.ended_schedule)
        self.forget = Schedule(client, keys.forget_schedule)
        self._record_delivery = client.register_script(_RECORD_DELIVERY)
        self._stale_pending = client.register_script(_STALE_PENDING)
        self._take_due_pending = client.register_script(_TAKE_DUE_PENDING)
        self._forget_gone = client.register_script(_FORGET_GONE)
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._extend_lock = client.register_script(_EXTEND_LOCK)
        self._write_held = client.register_script(_WRITE_HELD)
        self._update_if = client.register_script(_UPDATE_IF)
        # Locks this process could not let go of because Redis was out of reach: (key, token). A restarted Redis
        # brings them back from its append-only file, held by nobody until they lapse (a sync's lock lasts about
        # a minute); the next sync's first round trip releases them.
        self._unreleased_locks: list[tuple[str, str]] = []
        self._unreleased_guard = threading.Lock()

    # --- the webhook's one write -------------------------------------------------------------------------
    def record_delivery(self, event: AppointmentEvent, task_message: str, queue: str, history: str) -> bool:
        """Record `event` and queue `task_message` unless this exact event was seen before; True if recorded."""
        appointment_id = event.appointment_id
        stored = event.to_json()
        fingerprint = event.fingerprint()
        now = time.time()
        stamp = now_utc_millis()
        keys = [
            self.keys.delivery(fingerprint),
            self.keys.appointment(appointment_id),
            self.keys.events(appointment_id),
            self.keys.history(appointment_id),
            queue,
            self.keys.appointments,
            self.keys.metrics,
            self.keys.pending,
        ]
        args = [
            appointment_id,
            DELIVERY_DEDUPE_SECONDS,
            fingerprint,
            stored,
            _history_entry(event.kind, history, at=stamp),
            stamp,
            int(now),
            task_message,
            metric_field("meetbridge_deliveries_total", status="duplicate"),
            HISTORY_LENGTH,
            metric_field("meetbridge_deliveries_total", status="accepted"),
        ]
        if not self.min_replicas_ack:
            return bool(self._record_delivery(keys=keys, args=args))
        return self._record_and_wait(keys, args)

    def _record_and_wait(self, keys: list[str], args: list[Any]) -> bool:
        """The script and `WAIT` in one round trip: recorded only counts once enough replicas hold it."""
        for _ in range(2):
            with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(self._record_delivery.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.min_replicas_ack, REPLICA_ACK_TIMEOUT_MS)
                recorded, replicas = pipe.execute(raise_on_error=False)
            if isinstance(recorded, redis.exceptions.NoScriptError):
                self.client.script_load(_RECORD_DELIVERY)  # a fresh primary (a failover, a restart)
                continue
            if isinstance(recorded, Exception):
                raise recorded
            if isinstance(replicas, Exception) or int(replicas) < self.min_replicas_ack:
                # It may exist on the primary: the sender's retry then lands as a duplicate, never as a loss.
                raise NotReplicated(f"{replicas} of {self.min_replicas_ack} replica(s) acknowledged the delivery")
            return bool(recorded)
        raise redis.RedisError("the intake script could not be loaded")

    # --- reading -----------------------------------------------------------------------------------------
    def load(self, appointment_id: str) -> AppointmentRecord | None:
        raw = self.client.hgetall(self.keys.appointment(appointment_id))
        return AppointmentRecord.from_hash(appointment_id, raw) if raw else None

    def events(self, appointment_id: str) -> list[AppointmentEvent]:
        raw = self.client.hvals(self.keys.events(appointment_id))
        return [AppointmentEvent.from_dict(json.loads(item)) for item in raw]

    def history(self, appointment_id: str) -> list[dict[str, str]]:
        raw = self.client.lrange(self.keys.history(appointment_id), 0, -1)
        return [json.loads(item) for item in reversed(raw)]

    def push_tasks(self, queue: str, messages: list[str]) -> None:
        """Put Celery task messages on the broker's list for `queue` (the transport's own layout)."""
        if messages:
            self.client.lpush(queue, *messages)

    def waiting_tasks(self, queue: str) -> int:
        """How many task messages wait on the broker's list for `queue` (not those a worker has taken)."""
        return int(self.client.llen(queue))

    def statuses(self, appointment_ids: list[str]) -> list[str | None]:
        """Each appointment's status, in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for appointment_id in appointment_ids:
                pipe.hget(self.keys.appointment(appointment_id), "status")
            return list(pipe.execute())

    def exists(self, appointment_id: str) -> bool:
        return bool(self.client.exists(self.keys.appointment(appointment_id)))

    # --- writing -----------------------------------------------------------------------------------------
    def add_event(self, event: AppointmentEvent) -> None:
        """Record knowledge that did not come through the webhook (read-back, reconciliation)."""
        seq = int(self.client.hincrby(self.keys.appointment(event.appointment_id), "event_seq", 1))
        with self.client.pipeline() as pipe:
            stored = dataclasses.replace(event, seq=seq).to_json()
            pipe.hset(self.keys.events(event.appointment_id), event.fingerprint(), stored)
            pipe.hsetnx(self.keys.appointment(event.appointment_id), "created_at", now_utc_millis())
            pipe.zadd(self.keys.appointments, {event.appointment_id: int(time.time())}, nx=True)
            pipe.execute()

    def update(self, appointment_id: str, **values: Any) -> None:
        """Set fields of the record; a value of None removes the field."""
        to_set, to_delete = _changes(values)
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.appointment(appointment_id), mapping=to_set)
            if to_delete:
                pipe.hdel(self.keys.appointment(appointment_id), *to_delete)
            pipe.execute()

    def update_if(self, appointment_id: str, expected: Mapping[str, Any], **values: Any) -> bool:
        """`update` (a value of None removes the field), only if each `expected` field still holds that value (None:
        absent); whether it did. For a writer without the appointment's lock, or whose lock may have lapsed (the web, a
        start_url fetched from Zoom)."""
        checks = [item for name, value in expected.items() for item in (name, "" if value is None else str(value))]
        to_set, to_delete = _changes(values)
        return bool(self._update_if(keys=[self.keys.appointment(appointment_id)],
                                    args=[len(expected), *checks, len(to_set),
                                          *(item for pair in to_set.items() for item in pair), *to_delete]))

    def update_held(self, appointment_id: str, lease: Lease, *, notes: Sequence[Note] = (),
                    sets: Mapping[str, float | None] | None = None, **values: Any) -> None:
        """`update`, by the holder of the appointment's lock only (and extending it), in one round trip, with the
        history `notes` that tell of it (oldest first) and the `sets` that follow it (set key -> the appointment's
        score there, None to take it out); raises AppointmentBusy if the lock was lost, writing nothing."""
        self._write(appointment_id, lease, values, notes=notes, sets=sets or {})

    def finish_sync(self, appointment_id: str, lease: Lease, outcome: str, *, ends_at: float | None,
                    keep_until: float, sets: Mapping[str, float | None], notes: Sequence[Note] = (),
                    **values: Any) -> None:
        """A sync's last write, by the holder of the lock, in one round trip: its outcome, its `notes` then the
        outcome's, and `sets`; the appointment is settled (out of the pending set and the dead letters, its retry
        count started again) and retained (`retain`); then the lock is let go. Raises AppointmentBusy if the lock
        was lost, writing nothing."""
        settled = {self.keys.pending: None, self.keys.dead_letter: None}
        self._write(appointment_id, lease, {**values, "status": outcome, "sync_attempts": None},
                    notes=[*notes, (outcome, "")],
                    sets={**sets, **settled, **self._retention_sets(ends_at, keep_until)}, expire_at=keep_until,
                    release=True)

    def _write(self, appointment_id: str, lease: Lease, values: Mapping[str, Any], *, notes: Sequence[Note],
               sets: Mapping[str, float | None], expire_at: float | None = None, release: bool = False) -> None:
        stamp = now_utc_millis()
        to_set = {k: str(v) for k, v in values.items() if v is not None}
        to_set["updated_at"] = stamp
        to_delete = [k for k, v in values.items() if v is None]
        keys = [self.keys.appointment(appointment_id), lease.key, self.keys.history(appointment_id),
                self.keys.events(appointment_id), *sets]
        args = [lease.token, 0 if release else lease.ttl_ms, appointment_id, len(notes), HISTORY_LENGTH,
                "" if expire_at is None else max(1, int(expire_at)),
                len(to_set), *(x for pair in to_set.items() for x in pair), len(to_delete), *to_delete,
                *(_history_entry(event, detail, at=stamp) for event, detail in notes),
                *("" if score is None else score for score in sets.values())]
        if not self._write_held(keys=keys, args=args):
            raise AppointmentBusy(f"lost the lock {lease.key}")
        lease.extended_at = time.monotonic()
        lease.released = release

    def note(self, appointment_id: str, event: str, detail: str = "") -> None:
        entry = _history_entry(event, detail)
        # No transaction: each push is trimmed by its own LTRIM or the next one's, whatever interleaves.
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.history(appointment_id), entry)
            pipe.ltrim(self.keys.history(appointment_id), 0, HISTORY_LENGTH - 1)
            pipe.execute()

    # --- retention --------------------------------------------------------------------------------------
    def retain(self, appointment_id: str, ends_at: float | None, until: float) -> None:
        """Keep the appointment's keys until `until` (epoch s), then let Redis drop them; beat's sweep then takes
        it out of the sets, and at `ends_at` drops its start_url and compacts its events."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in (self.keys.appointment(appointment_id), self.keys.events(appointment_id),
                        self.keys.history(appointment_id)):
                pipe.expireat(key, max(1, int(until)))
            for schedule, due in self._retention_sets(ends_at, until).items():
                pipe.zadd(schedule, {appointment_id: due})
            pipe.execute()

    def _retention_sets(self, ends_at: float | None, until: float) -> dict[str, float]:
        """The schedule entries of a retained appointment (`retain`, or a held write that carries them)."""
        due: dict[str, float] = {self.keys.forget_schedule: until}
        if ends_at is not None and ends_at < until:
            due[self.keys.ended_schedule] = ends_at
        return due

    def forget_everywhere(self, appointment_ids: list[str]) -> list[str]:
        """Take appointments whose record is gone out of every set that lists them; returns those taken out. One
        whose record is back (a delivery came as it expired) stays listed: its sync retains it again."""
        if not appointment_ids:
            return []
        sets = [self.keys.appointments, self.keys.dead_letter, self.keys.pending, self.keys.refresh_schedule,
                self.keys.deferred_schedule, self.keys.ended_schedule, self.keys.forget_schedule,
                self.keys.neetocal_join_url_dropped, self.keys.neetocal_refused]
        return list(self._forget_gone(keys=sets, args=[self.keys.appointment(""), *appointment_ids]))

    def neetocal_problem_sets(self, *, join_url_dropped: bool, refused: bool) -> dict[str, float | None]:
        """Where the appointment stands in the sets of appointments whose NeetoCal bookings lack their join URL,
        or that NeetoCal refused (read by `doctor`): changes for a held write to carry."""
        now = time.time()
        return {self.keys.neetocal_join_url_dropped: now if join_url_dropped else None,
                self.keys.neetocal_refused: now if refused else None}

    def join_url_dropped(self, limit: int = 5) -> tuple[int, list[str]]:
        """How many appointments have that warning, and the most recent few of them."""
        return self._latest(self.keys.neetocal_join_url_dropped, limit)

    def neetocal_refused(self, limit: int = 5) -> tuple[int, list[str]]:
        """How many appointments have a booking NeetoCal refused, and the most recent few of them."""
        return self._latest(self.keys.neetocal_refused, limit)

    def _latest(self, key: str, limit: int) -> tuple[int, list[str]]:
        return self.client.zcard(key), list(self.client.zrevrange(key, 0, limit - 1))

    def close_ended(self, appointment_id: str, compact: Callable[[list[AppointmentEvent]], AppointmentEvent | None]
                    ) -> None:
        """The meeting is over: its start_url is no longer needed anywhere, and its events are folded into one
        (`compact` makes that event), since no late event can change what is done. Optimistic: a delivery
        arriving meanwhile makes it give up (its sync will retain the appointment again)."""
        events_key = self.keys.events(appointment_id)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(events_key)
                events = [AppointmentEvent.from_dict(json.loads(raw)) for raw in pipe.hvals(events_key)]
                folded = compact(events) if len(events) > 1 else None
                ttl = pipe.pttl(events_key)
                pipe.multi()
                pipe.hdel(self.keys.appointment(appointment_id), "zoom_start_url", "zoom_start_url_expires_at")
                if folded is not None:
                    pipe.delete(events_key)
                    pipe.hset(events_key, folded.fingerprint(), folded.to_json())
                    if ttl > 0:
                        pipe.pexpire(events_key, ttl)
                pipe.zrem(self.keys.ended_schedule, appointment_id)
                pipe.execute()
            except redis.WatchError:
                pass

    def migrate_keys(self) -> int:
        """Move events and history from the keys of earlier versions (`mb:appt:<id>:events`, `…:history`) to
        their own namespaces; returns how many keys moved. Run once, with the workers stopped."""
        moved = 0
        for appointment_id in list(self.appointment_ids()):
            for old, new in ((f"{self.keys.appointment(appointment_id)}:events", self.keys.events(appointment_id)),
                             (f"{self.keys.appointment(appointment_id)}:history", self.keys.history(appointment_id))):
                if self.client.exists(old) and not self.client.exists(new):
                    self.client.rename(old, new)
                    moved += 1
        return moved

    def mark_pending(self, appointment_ids: list[str]) -> None:
        """These appointments have work queued: they count towards the oldest pending age until settled."""
        if appointment_ids:
            now = int(time.time())
            self.client.zadd(self.keys.pending, {appointment_id: now for appointment_id in appointment_ids}, nx=True)

    def settled(self, appointment_id: str) -> None:
        """The appointment reached a state that needs no worker now (synced, cancelled, waiting, failed): it
        leaves the pending set, and its retry count starts again."""
        with self.client.pipeline(transaction=False) as pipe:  # two independent changes: no MULTI needed
            pipe.zrem(self.keys.pending, appointment_id)
            pipe.hdel(self.keys.appointment(appointment_id), "sync_attempts")
            pipe.execute()

    def take_parked(self, now: float, limit: int) -> list[str]:
        """The parked syncs that are due, taken off the deferred schedule and marked pending: to be queued now."""
        return list(self._take_due_pending(keys=[self.keys.deferred_schedule, self.keys.pending],
                                           args=[now, limit, int(time.time())]))

    def stale_pending(self, older_than: float, now: float, limit: int = 1000) -> list[str]:
        """Appointments pending since before `older_than` with no sync running and none parked: their task was
        lost (a broker message dropped in a Redis failover, say). Each is returned once per interval."""
        lock_prefix = self.keys.lock("")
        return list(self._stale_pending(keys=[self.keys.pending, self.keys.deferred_schedule],
                                        args=[older_than, now, limit, lock_prefix]))

    def oldest_pending(self) -> float | None:
        first = self.client.zrange(self.keys.pending, 0, 0, withscores=True)
        return first[0][1] if first else None

    def revoke_host_link(self, appointment_id: str) -> int:
        """Make every host link handed out so far stop working; returns the new link version."""
        return int(self.client.hincrby(self.keys.appointment(appointment_id), "host_link_version", 1))

    def mark_failed(self, appointment_id: str, error: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.appointment(appointment_id),
                      mapping={"status": "failed", "error": error, "updated_at": now_utc_millis()})
            pipe.hdel(self.keys.appointment(appointment_id), "waiting_reason", "resume_at")
            pipe.zadd(self.keys.dead_letter, {appointment_id: time.time()})
            pipe.execute()
        self.note(appointment_id, "failed", error)

    def clear_failure(self, appointment_id: str) -> None:
        self.client.zrem(self.keys.dead_letter, appointment_id)

    def dead_letters(self) -> list[str]:
        return list(self.client.zrange(self.keys.dead_letter, 0, -1))

    def appointment_ids(self, batch: int = 500) -> Iterator[str]:
        for member, _ in self.client.zscan_iter(self.keys.appointments, count=batch):
            yield member

    # --- per-appointment lock ----------------------------------------------------------------------------
    def lock(self, appointment_id: str, ttl_seconds: float) -> AbstractContextManager[Lease]:
        """Syncs of one appointment never run at once; a crashed holder's lock expires after `ttl_seconds`."""
        lease = Lease(self, self.keys.lock(appointment_id), ttl_seconds)
        taken = self.client.set(lease.key, lease.token, nx=True, px=lease.ttl_ms)
        # A SET sent again by the client after a lost answer finds this very lock: it is ours all the same.
        taken = taken or self.client.get(lease.key) == lease.token
        return self.held(appointment_id, lease if taken else None)

    def start_sync(self, appointment_id: str, lock_ttl_seconds: float) -> SyncStart:
        """A sync's first round trip: its lock is tried, the appointment leaves the deferred schedule (this is
        its sync, lock or not), and its record and events are read. The reads come after the lock in the
        pipeline, so when it was taken they are what its holder would read next; when it was not, the record
        still tells the retry policy how many attempts failed."""
        lease = Lease(self, self.keys.lock(appointment_id), lock_ttl_seconds)
        unreleased = self._take_unreleased_locks()
        with self.client.pipeline(transaction=False) as pipe:
            # First, since one of them may be this appointment's own lock.
            for key, token in unreleased:
                self._release_lock(keys=[key], args=[token], client=pipe)
            pipe.set(lease.key, lease.token, nx=True, px=lease.ttl_ms)
            # Whose it is now: ours also when the client sent the pipeline again after losing its first answer.
            pipe.get(lease.key)
            pipe.zrem(self.keys.deferred_schedule, appointment_id)
            pipe.hgetall(self.keys.appointment(appointment_id))
            pipe.hvals(self.keys.events(appointment_id))
            try:
                *releases, set_answer, holder, _, raw, events = pipe.execute(raise_on_error=False)
            except redis.RedisError:
                # Its SET may have been applied, the answer lost: the token's lock is let go first next time.
                self._remember_unreleased([*unreleased, (lease.key, lease.token)])
                raise
        taken = set_answer is True or holder == lease.token
        self._remember_unreleased([lock for lock, released in zip(unreleased, releases, strict=True)
                                   if isinstance(released, Exception)])
        for result in (set_answer, raw, events):
            if isinstance(result, Exception):
                if taken:
                    self._remember_unreleased([(lease.key, lease.token)])
                raise result
        return SyncStart(lease=lease if taken else None,
                         record=AppointmentRecord.from_hash(appointment_id, raw) if raw else None,
                         events=[AppointmentEvent.from_dict(json.loads(item)) for item in events])

    @contextmanager
    def held(self, appointment_id: str, lease: Lease | None) -> Iterator[Lease]:
        """The appointment's lock while `lease` holds it (AppointmentBusy when another holder has it: None), let
        go on leaving."""
        if lease is None:
            raise AppointmentBusy(appointment_id)
        try:
            yield lease
        finally:
            if not lease.released:  # a sync's last write lets it go itself
                try:
                    self._release_lock(keys=[lease.key], args=[lease.token])
                except redis.RedisError:
                    self._remember_unreleased([(lease.key, lease.token)])
                    raise

    def _remember_unreleased(self, locks: list[tuple[str, str]]) -> None:
        with self._unreleased_guard:
            self._unreleased_locks.extend(locks)

    def _take_unreleased_locks(self) -> list[tuple[str, str]]:
        if not self._unreleased_locks:  # nearly always: no lock is ever left behind while Redis answers
            return []
        with self._unreleased_guard:
            taken, self._unreleased_locks = self._unreleased_locks, []
        return taken


@dataclass
class SyncStart:
    """What a sync starts from (Store.start_sync)."""

    lease: Lease | None  # None: another worker holds the appointment's lock
    record: AppointmentRecord | None
    events: list[AppointmentEvent]


class Lease:
    """A held appointment lock. Long syncs extend it as they make progress, so it can stay short."""

    def __init__(self, store: Store, key: str, ttl_seconds: float) -> None:
        self.store = store
        self.key = key
        self.token = secrets.token_hex(8)
        self.ttl_ms = int(ttl_seconds * 1000)
        self.extended_at = time.monotonic()  # when the lock was last taken or extended
        self.released = False

    def extend(self) -> None:
        if not self.store._extend_lock(keys=[self.key], args=[self.token, self.ttl_ms]):
            raise AppointmentBusy(f"lost the lock {self.key}")
        self.extended_at = time.monotonic()


def _changes(values: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A record update as the fields to set (stamped `updated_at`) and those to remove (the None values)."""
    to_set = {name: str(value) for name, value in values.items() if value is not None}
    to_set["updated_at"] = now_utc_millis()
    return to_set, [name for name, value in values.items() if value is None]


def _history_entry(event: str, detail: str, at: str | None = None) -> str:
    return json.dumps({"at": at or now_utc_millis(), "event": event, "detail": detail})


@functools.lru_cache(maxsize=4096)
def metric_field(name: str, **labels: str) -> str:
    # Shared with workers.metrics, which reads these fields back; kept here so the Lua script can count.
    # Cached: every count names one, and the label sets are few (statuses, outcomes, APIs).
    return json.dumps([name, sorted(labels.items())], separators=(",", ":"))
