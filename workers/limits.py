"""Budgets shared by every worker through Redis: per-second API rates and Zoom's per-host daily quota."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis

from meetbridge.config import Settings
from workers.clients.base import IN_CALL_MAX_WAIT_SECONDS, IN_CALL_RETRIES
from workers.clients.errors import BudgetTaken, DailyCapReached, QuotaParked
from workers.state import KEYS

# Generic cell rate algorithm, reserving: the key holds the theoretical arrival time of the next request;
# each caller takes the next free slot and is told how long to wait for it (first come, first served, one
# Redis call per request), or -1 when that is beyond the longest acceptable wait. Redis's own clock is used so
# that workers on different hosts agree.
_RESERVE_FUNCTION = """
local function reserve(key, interval, tolerance, longest)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local wait = math.max(0, tat - tolerance - now)
  if wait > longest then return -1 end
  local next_tat = tat + interval
  redis.call('SET', key, next_tat, 'PX', math.ceil(next_tat - now + 1000))
  return wait
end
"""
# KEYS[2] (KEYS[3] below) is present while the API's daily limit for the account is spent: -3, nothing taken.
_RESERVE = _RESERVE_FUNCTION + """
if redis.call('EXISTS', KEYS[2]) == 1 then return -3 end
return reserve(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
# A Zoom create or update spends a unit of the host's daily quota (KEYS[2]) and a slot of the rate budget
# (KEYS[1]) together, in one round trip: -2 when the quota is spent (no slot is taken), -1 when the slot is too
# far ahead (no unit is spent: the call is not sent), else the wait in ms.
_RESERVE_AND_SPEND = _RESERVE_FUNCTION + """
if redis.call('EXISTS', KEYS[3]) == 1 then return -3 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then return -2 end
local wait = reserve(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait >= 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return wait
"""

# Zoom's limits are per account and shared with every other app on it, and network jitter bunches requests
# that left evenly spaced: stay a little under the configured rate.
HEADROOM = 0.9
DAY_SPENT = -3  # what the reserving scripts answer while the API's daily limit is spent
# Beyond this wait the budget is clearly saturated: give the call up and let the sync retry later.
RATE_LIMIT_MAX_WAIT_SECONDS = 10.0


class RateLimiter:
    """At most `per_second` acquisitions per second across all processes, evenly spaced."""

    def __init__(self, client: redis.Redis, name: str, per_second: float, *, burst: int = 1,
                 max_wait_seconds: float = RATE_LIMIT_MAX_WAIT_SECONDS) -> None:
        self.key = KEYS.rate(name)
        self.closed_key = f"{self.key}:closed"
        self.client = client
        self.name = name
        self.interval_ms = 1000.0 / (per_second * HEADROOM)
        self.tolerance_ms = self.interval_ms * (burst - 1)
        self.max_wait_seconds = max_wait_seconds
        self._reserve = client.register_script(_RESERVE)
        self._reserve_and_spend = client.register_script(_RESERVE_AND_SPEND)

    def acquire(self) -> None:
        """Wait for this process's turn in the shared budget (DailyCapReached while the API's day is spent)."""
        self._wait(int(self._reserve(keys=[self.key, self.closed_key], args=self._budget())))

    def close_until(self, resume_at: datetime) -> None:
        """The API's daily limit for the account is spent (its answer said so): no process sends a call on this
        budget before `resume_at`, each is told to wait instead of asking the API again."""
        until_ms = max(int(resume_at.timestamp() * 1000), int(time.time() * 1000) + 1)
        self.client.set(self.closed_key, str(until_ms), pxat=until_ms)

    def acquire_spending(self, quota: HostDailyQuota, host: str) -> None:
        """`acquire`, and spend one unit of the host's daily quota with it (HostDailyQuota.spend), in one round
        trip; neither is spent when the other is not to be had."""
        key, day = quota.key(host)
        found = int(self._reserve_and_spend(keys=[self.key, key, self.closed_key],
                                            args=[*self._budget(), quota.limit, QUOTA_TTL]))
        if found == -2:
            raise quota.exhausted(host, day, "spent by meetbridge")
        self._wait(found)

    def _budget(self) -> list[float]:
        return [self.interval_ms, self.tolerance_ms, self.max_wait_seconds * 1000]

    def _wait(self, wait_ms: int) -> None:
        if wait_ms == DAY_SPENT:
            until = self.client.get(self.closed_key)  # gone already: the day turned, try again in a second
            resume_at = datetime.fromtimestamp(int(until) / 1000, UTC) if until else datetime.now(UTC)
            resume_at = max(resume_at, datetime.now(UTC) + timedelta(seconds=1))
            raise DailyCapReached(f"the {self.name} daily limit of the account is spent",
                                  service=self.name.split(":")[0], resume_at=resume_at,
                                  retry_after=(resume_at - datetime.now(UTC)).total_seconds())
        if wait_ms < 0:
            raise BudgetTaken(f"the {self.name} budget is taken for more than {self.max_wait_seconds:.0f}s ahead",
                              retry_after=self.max_wait_seconds)
        if wait_ms:
            time.sleep(wait_ms / 1000)


# What an appointment's lock has to spare beyond its longest step: a step that starts with less left than that
# step could take extends the lock first (AppointmentSync.before_remote_call).
LOCK_MARGIN_SECONDS = 5.0


def lock_seconds(settings: Settings) -> float:
    """How long an appointment's lock lasts unless extended. Syncs extend it before each attempt of a call once
    its margin is spent (AppointmentSync.before_remote_call), so it has to outlast one attempt: a wait for the rate
    budget, the call's timeout and a pause. It covers a whole call's attempts, which leaves room to spare."""
    attempts = IN_CALL_RETRIES + 1
    return (RATE_LIMIT_MAX_WAIT_SECONDS + attempts * (settings.http_timeout_seconds + IN_CALL_MAX_WAIT_SECONDS)
            + LOCK_MARGIN_SECONDS)


def next_utc_midnight(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


QUOTA_TTL = 2 * 24 * 3600  # a day's count outlives its day: kept until well past midnight everywhere
_SPEND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return -1 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return used + 1
"""


class HostDailyQuota:
    """Zoom allows 100 meeting create/update requests per host per UTC day; count them before spending."""

    def __init__(self, client: redis.Redis, limit: int) -> None:
        self.client = client
        self.limit = limit
        self._spend = client.register_script(_SPEND)

    def key(self, host: str) -> tuple[str, datetime]:
        """The key counting the host's requests today, and the moment that `today` was read."""
        now = datetime.now(UTC)
        return KEYS.host_daily(host, now.strftime("%Y%m%d")), now

    def spend(self, host: str) -> None:
        """Count one request (RateLimiter.acquire_spending counts it with its rate slot)."""
        key, now = self.key(host)
        if int(self._spend(keys=[key], args=[self.limit, QUOTA_TTL])) < 0:
            raise self.exhausted(host, now, "spent by meetbridge")

    def exhaust(self, host: str, zoom_status: int | None) -> QuotaParked:
        """Zoom said the host's budget is gone (another app spent it): stop asking until it resets."""
        key, now = self.key(host)
        self.client.set(key, self.limit, ex=QUOTA_TTL)
        return self.exhausted(host, now, f"Zoom answered {zoom_status}")

    def used(self, host: str) -> int:
        return int(self.client.get(self.key(host)[0]) or 0)

    def exhausted(self, host: str, now: datetime, why: str) -> QuotaParked:
        resume_at = next_utc_midnight(now)
        return QuotaParked(
            f"Zoom's daily limit of {self.limit} meeting create/update requests for {host} is reached ({why}); "
            f"waiting until {resume_at:%Y-%m-%d %H:%M} UTC",
            resume_at=resume_at,
        )
