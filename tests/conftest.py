from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from sandbox.server import Sandbox, start_all
from tests.support import REDIS_URL, RedisServer, Sims, Stack, service_env


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    running = start_all()
    yield running
    running.stop()


@pytest.fixture
def sims(sandbox: Sandbox) -> Sims:
    simulators = Sims(sandbox)
    simulators.reset()
    return simulators


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_stack(sandbox: Sandbox, sims: Sims, redis_client: redis.Redis, tmp_path: Any
               ) -> Iterator[Callable[..., Stack]]:
    """Start a deployment: `make_stack(workers=1, beat=False, **env)`; stopped (processes killed) after the test."""
    stacks: list[Stack] = []

    def start(workers: int = 1, beat: bool = False, concurrency: int = 8, **env: Any) -> Stack:
        stack = Stack(env=service_env(sandbox, REDIS_URL, **env), log_dir=tmp_path)
        stacks.append(stack)
        stack.start_web()
        for _ in range(workers):
            stack.start_worker(concurrency=concurrency)
        if beat:
            stack.start_beat()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
