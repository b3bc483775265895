"""The broker connection breaking: a message kombu took off the queue goes back to it, and the worker carries on."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from tests.support import REDIS_URL
from workers.state import broker

QUEUE = "mb-gap-test"


def test_a_message_taken_off_the_queue_as_the_connection_breaks_is_given_back(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.popped_messages_survive_a_broken_connection()
    queue = Queue(QUEUE, routing_key=QUEUE)
    with Connection(REDIS_URL) as first:
        Producer(first.default_channel).publish({"n": 1}, routing_key=QUEUE, declare=[queue])
        received: list[Any] = []
        consumer = Consumer(first.channel(), [queue], callbacks=[lambda body, message: received.append(body)])
        consumer.consume()

        # The BRPOP's answer arrives, and the connection breaks before kombu records the message as unacknowledged.
        execute = redis.client.Pipeline.execute

        def broken(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
            if "unacked" in repr(self.command_stack):
                raise redis.ConnectionError("the primary went away")
            return execute(self, *args, **kwargs)

        monkeypatch.setattr(redis.client.Pipeline, "execute", broken)
        with pytest.raises(redis.ConnectionError):
            first.drain_events(timeout=5)
        monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
        assert received == []
        # Without the fix the message is now nowhere: neither on the queue nor among the unacknowledged.
        assert redis_client.llen(QUEUE) == 0 and not redis_client.hlen("unacked")

    with Connection(REDIS_URL) as second:  # the consumer reconnects: the message is back, and delivered
        got: list[Any] = []
        consumer = Consumer(second.channel(), [queue], callbacks=[lambda body, message: (got.append(body),
                                                                                          message.ack())])
        consumer.consume()
        for _ in range(10):
            if got:
                break
            with contextlib.suppress(TimeoutError):
                second.drain_events(timeout=1)
        assert got == [{"n": 1}]
        assert redis_client.llen(QUEUE) == 0 and not redis_client.hlen("unacked")
    assert not broker._held_messages


def test_a_channel_keeps_one_client_until_its_pool_is_replaced(redis_client: redis.Redis) -> None:
    """Acks and publishes share the channel's client (kombu made one per call); a new pool gets a new one."""
    broker.channels_reuse_their_client()
    queue = Queue(QUEUE, routing_key=QUEUE)
    with Connection(REDIS_URL) as connection:
        channel = connection.channel()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        Producer(channel).publish({"n": 2}, routing_key=QUEUE, declare=[queue])
        assert redis_client.llen(QUEUE) == 1  # the shared client still talks to Redis

        channel._disconnect_pools()  # what kombu does when it reconnects
        with channel.conn_or_acquire() as after_reconnect:
            assert after_reconnect is not first
            assert after_reconnect.connection_pool is channel.pool
            assert after_reconnect.llen(QUEUE) == 1


def test_a_channel_whose_connection_was_lost_fails_with_a_connection_error() -> None:
    """After a lost connection kombu may build a pool from the released connection (an ack, the at-close restore of
    unacknowledged messages): a connection error, which Celery recovers from, not an AttributeError, which stops
    the worker for good (seen on a Redis restart: tests/flow/test_resilience.py)."""
    broker.closed_channel_fails_as_a_connection_error()
    with Connection(REDIS_URL) as connection:
        channel = connection.channel()
        channel._disconnect_pools()
        channel.connection.client = None  # what the connection's release leaves behind
        with pytest.raises(redis.ConnectionError), channel.conn_or_acquire():
            pass
