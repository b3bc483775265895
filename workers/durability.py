"""Refuse to run on a Redis that may silently drop what it was given.

Redis holds the queue, every acknowledged delivery and every appointment's state. Under memory pressure an
evicting `maxmemory-policy` deletes keys, which would lose acknowledged work without a trace. The README's
"Redis in production" section lists the settings production needs.
"""

from __future__ import annotations

import logging

import redis

from meetbridge.config import Settings
from workers.state import connect

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
