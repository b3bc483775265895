"""Caches and locks of the service as a whole (not of one appointment), each under a key named in `Keys`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from workers.state import KEYS, Keys

# A v1 mirror link's "has a schedule of its own" is remembered this long after it was last looked at.
OWN_SCHEDULE_KEPT_SECONDS = 180 * 24 * 3600
# Ends a claim only if it is still the one this process made.
_DELETE_IF_HELD = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class LinkCache:
    """NeetoCal scheduling links already set up, by slug: found or made once, then read from here."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, keys: Keys = KEYS) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.keys = keys

    def get(self, slug: str) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.neetocal_link(slug))
        return json.loads(raw) if raw else None

    def forget(self, slug: str) -> None:
        self.client.delete(self.keys.neetocal_link(slug))

    def put(self, slug: str, link: dict[str, Any]) -> None:
        # Expires, so that a link deleted in NeetoCal meanwhile is found (or made) again.
        self.client.set(self.keys.neetocal_link(slug), json.dumps(link), ex=self.ttl_seconds)

    def has_own_schedule(self, sid: str) -> bool:
        """Whether the link was given a schedule of its own; if so, remembered for longer from now."""
        return bool(self.client.expire(self.keys.neetocal_own_schedule(sid), OWN_SCHEDULE_KEPT_SECONDS))

    def note_own_schedule(self, sid: str) -> None:
        """Kept far past the cache's expiry (NeetoCal makes a new schedule for each request, never replacing
        one), and renewed at each look: a link unused for that long may get a second one, nothing worse."""
        self.client.set(self.keys.neetocal_own_schedule(sid), "1", ex=OWN_SCHEDULE_KEPT_SECONDS)


class UsersCache:
    """meetergo's users (id -> host), replaced whole on each reload."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, keys: Keys = KEYS) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.keys = keys

    def read(self) -> dict[str, dict[str, Any]]:
        return {user_id: json.loads(value) for user_id, value in self.client.hgetall(self.keys.meetergo_users).items()}

    def replace(self, users: dict[str, dict[str, Any]]) -> None:
        with self.client.pipeline() as pipe:
            pipe.delete(self.keys.meetergo_users)
            pipe.hset(self.keys.meetergo_users, mapping={k: json.dumps(v) for k, v in users.items()})
            pipe.expire(self.keys.meetergo_users, self.ttl_seconds)
            pipe.execute()


@contextmanager
def only_one(client: redis.Redis, key: str, ttl_seconds: int) -> Iterator[bool]:
    """Whether this process may run the job `key` names (no other holds it); released when done. A crashed
    holder's claim lapses after `ttl_seconds`."""
    token = secrets.token_hex(8)
    mine = bool(client.set(key, token, nx=True, ex=max(1, ttl_seconds)))
    try:
        yield mine
    finally:
        if mine:  # unless it lapsed and another process holds it now: that claim is not this one's to end
            client.eval(_DELETE_IF_HELD, 1, key, token)
