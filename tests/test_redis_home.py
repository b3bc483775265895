"""One home for Redis: no module outside the state layer sends a Redis command (issue #12).

The state layer is `workers/state/` (records, schedules, locks, caches, the host index, the server's own
settings) plus the two Redis-backed components that name their keys there: the rate limiter and quota
(`workers/limits.py`) and the metrics counters (`workers/metrics.py`). Everything else asks them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("meetbridge", "webhooks", "workers", "schemas")
STATE_LAYER = ("workers/state/", "workers/limits.py", "workers/metrics.py")
# Methods only a Redis client has (httpx's get/post/delete are told apart by the receiver's name, below).
REDIS_ONLY = frozenset({
    "hget", "hset", "hgetall", "hdel", "hincrby", "hmget", "hsetnx", "hvals", "zadd", "zrem", "zcard", "zscore",
    "zrange", "zrevrange", "zrangebyscore", "zscan_iter", "lpush", "lrange", "llen", "ltrim", "incr", "expire",
    "expireat", "pexpire", "pipeline", "register_script", "evalsha", "execute_command", "config_get", "info",
    "ping", "scan_iter", "flushdb", "sentinel_get_master_addr_by_name",
})
AMBIGUOUS = frozenset({"get", "set", "delete", "exists", "keys", "type", "ttl"})


def _receiver(node: ast.AST) -> str:
    return ast.unparse(node).lower()


def redis_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, receiver = node.func.attr, _receiver(node.func.value)
        if receiver in ("log", "logger") or receiver.startswith(("server", "serverview(")):
            continue  # the standard logger, and the state layer's own ServerView
        raw = method in REDIS_ONLY and "http" not in receiver and "sentinel" not in receiver
        if raw or (method in AMBIGUOUS and receiver.endswith("redis")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {receiver}.{method}()")
    return found


def test_no_redis_command_is_sent_outside_the_state_layer() -> None:
    offenders = []
    for package in RUNTIME:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(STATE_LAYER):
                offenders.extend(redis_calls(path))
    assert offenders == [], "Redis commands outside the state layer:\n" + "\n".join(offenders)


def test_the_rule_finds_a_raw_command(tmp_path: Path) -> None:
    probe = ROOT / "workers" / "_probe_for_test.py"
    probe.write_text("def f(services):\n    services.redis.get('x')\n    services.redis.zadd('k', {})\n")
    try:
        assert len(redis_calls(probe)) == 2
    finally:
        probe.unlink()
