"""The shared budgets, against a real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from workers.clients.errors import BudgetTaken, QuotaParked
from workers.limits import HostDailyQuota, RateLimiter


def test_the_rate_is_kept_across_threads_and_served_in_turn(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, "test", per_second=20)  # 18/s with the headroom
    granted: list[float] = []
    lock = threading.Lock()

    def take(count: int) -> None:
        for _ in range(count):
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=take, args=(5,)) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted.sort()
    assert len(granted) == 40
    # 40 slots at 18/s: the last comes after ~2.2 s, and no second ever holds more than the rate.
    assert granted[-1] - started >= 39 / 18 - 0.05
    assert max(sum(1 for t in granted if start <= t < start + 1) for start in granted) <= 19


def test_a_wait_beyond_the_limit_is_refused_at_once(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, "test", per_second=1, max_wait_seconds=2)
    refused: list[BudgetTaken] = []

    def take() -> None:
        try:
            limiter.acquire()
        except BudgetTaken as error:
            refused.append(error)

    # Three at once: slots now, in 1.1 s and in 2.2 s; the last is further off than anyone should wait.
    threads = [threading.Thread(target=take) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    assert wait_for_refusal(refused, started)
    for thread in threads:
        thread.join()
    assert len(refused) == 1


def wait_for_refusal(refused: list, started: float) -> bool:
    while not refused and time.monotonic() - started < 1:
        time.sleep(0.01)
    return bool(refused)  # refused at once, not after waiting


def test_daily_quota_counts_before_spending(redis_client: redis.Redis) -> None:
    quota = HostDailyQuota(redis_client, limit=2)
    quota.spend("a@b.co")
    quota.spend("A@b.co")  # the same host, whatever the case
    with pytest.raises(QuotaParked) as raised:
        quota.spend("a@b.co")
    assert raised.value.resume_at.hour == 0 and raised.value.resume_at.minute == 0
    quota.spend("other@b.co")  # other hosts keep flowing
    assert quota.used("a@b.co") == 2


def test_a_rate_slot_and_a_quota_unit_are_spent_together_or_not_at_all(redis_client: redis.Redis) -> None:
    quota = HostDailyQuota(redis_client, limit=2)
    limiter = RateLimiter(redis_client, "test", per_second=1000, max_wait_seconds=0)
    slot_key = limiter.key
    limiter.acquire_spending(quota, "a@b.co")
    assert quota.used("a@b.co") == 1
    # The next slot is further off than this limiter waits: refused, and the host's unit is kept.
    slow = RateLimiter(redis_client, "test", per_second=0.01, max_wait_seconds=0)
    redis_client.delete(slot_key)
    slow.acquire()  # the next slot is 111 s away
    with pytest.raises(BudgetTaken):
        slow.acquire_spending(quota, "a@b.co")
    assert quota.used("a@b.co") == 1
    redis_client.delete(slot_key)
    limiter.acquire_spending(quota, "A@b.co")  # the same host, whatever the case
    assert quota.used("a@b.co") == 2
    # The quota spent: refused, and no slot is taken from the others.
    before = redis_client.get(slot_key)
    with pytest.raises(QuotaParked):
        limiter.acquire_spending(quota, "a@b.co")
    assert redis_client.get(slot_key) == before and quota.used("a@b.co") == 2
