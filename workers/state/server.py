"""The Redis server itself: whether it answers, whether its settings keep what it is given, its memory, replicas
and queue.

Redis holds the queue, every acknowledged delivery and every appointment's state. Under memory pressure an
evicting `maxmemory-policy` deletes keys, which would lose acknowledged work without a trace, so the processes
refuse to start on one. The README's "Redis in production" section lists the settings production needs.
"""

from __future__ import annotations

import logging

import redis

from meetbridge.config import Settings
from workers.state import KEYS, connect

log = logging.getLogger(__name__)


class UnsafeRedis(SystemExit):
    pass


def check_redis(client: redis.Redis) -> list[str]:
    """Problems with this Redis, worst first: an evicting policy is fatal, no persistence is a warning."""
    problems: list[str] = []
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        persistence = client.config_get("appendonly").get("appendonly")
    except redis.ResponseError:
        return ["cannot read Redis's CONFIG (disabled on this server?): make sure maxmemory-policy is noeviction"]
    if policy and policy != "noeviction":
        problems.append(f"Redis maxmemory-policy is {policy!r}: it may evict queued work and appointment state; "
                        "set maxmemory-policy noeviction")
    if persistence != "yes":
        problems.append("Redis runs without AOF (appendonly no): a Redis restart loses queued work; "
                        "set appendonly yes in production")
    return problems


def require_safe_redis(settings: Settings) -> None:
    client = connect(settings, decode_responses=False)
    try:
        problems = check_redis(client)
    except redis.ConnectionError:
        log.warning("Redis is not reachable yet; its settings will not be checked")
        return
    finally:
        client.close()
    for problem in problems:
        if "maxmemory-policy is" in problem:
            raise UnsafeRedis(f"meetbridge refuses to start: {problem}")
        log.warning(problem)


class ServerView:
    """What `doctor`, the CLI and /readyz ask of the Redis server."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def ping(self) -> None:
        """Raises redis.RedisError when Redis does not answer."""
        self.client.ping()

    def replicas(self) -> int:
        return int(self.client.info("replication").get("connected_slaves", 0))

    def memory(self) -> tuple[int, int] | None:
        """(maxmemory, used_memory) in bytes; None when CONFIG is disabled on this server."""
        try:
            limit = int(self.client.config_get("maxmemory").get("maxmemory") or 0)
        except redis.ResponseError:
            return None
        return limit, int(self.client.info("memory").get("used_memory", 0))

    def queued(self, queue: str) -> int:
        """Tasks waiting in a Celery queue (a Redis list)."""
        return int(self.client.llen(queue))

    def retained(self) -> int:
        return int(self.client.zcard(KEYS.appointments))

    def dead(self) -> int:
        return int(self.client.zcard(KEYS.dead_letter))

    def settings_problems(self) -> list[str]:
        return check_redis(self.client)

