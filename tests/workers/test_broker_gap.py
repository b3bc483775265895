"""A message that kombu took off the queue just as the broker connection broke goes back to the queue."""

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
