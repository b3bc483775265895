"""The broker's Redis, as kombu's Redis transport uses it: where it breaks on a failover, and the patches that keep
a worker consuming and every message on its queue (workers/celery_app.py applies them when it builds the app)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

log = logging.getLogger(__name__)


def closed_channel_fails_as_a_connection_error() -> None:
    """kombu's Redis channel, once a lost connection (a Redis restart, a failover) closed it, builds a new pool from
    the released connection when a late ack or the at-close restore of unacknowledged messages needs one, and fails
    with an AttributeError (`conninfo.hostname` of None). That is not a connection error, so Celery stops the
    worker for good ("Unrecoverable error"). Raised as the connection error it is, the ack is logged as failed and
    the message comes back from Redis's unacked set after BROKER_VISIBILITY_TIMEOUT_SECONDS; the consumer
    reconnects. Seen first behind Sentinel, then on a plain Redis restart (tests/flow/test_resilience.py)."""
    from kombu.transport.redis import Channel

    if getattr(Channel, "_meetbridge_checks_connection", False):
        return
    connparams = Channel._connparams

    def checked(self, asynchronous=False):  # type: ignore[no-untyped-def]
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection was closed when it was lost")
        return connparams(self, asynchronous=asynchronous)

    Channel._connparams = checked
    Channel._meetbridge_checks_connection = True


def channels_reuse_their_client() -> None:
    """kombu's Redis channel builds a new `redis.Redis` (with its hundreds of response callbacks: ~70 µs here) for
    every ack, every publish and every message it records as unacknowledged: with three task events per task,
    about a millisecond of a worker's CPU per task (bench/profile_worker). A client is safe to share between
    threads (each command takes a connection from the pool), so each channel keeps one for its pool, and makes
    a new one only when kombu replaces the pool (a reconnect, a failover)."""
    from kombu.transport.redis import Channel

    if getattr(Channel, "_meetbridge_reuses_client", False):
        return
    create = Channel._create_client

    def reused(self, asynchronous=False):  # type: ignore[no-untyped-def]
        if asynchronous:  # the consumer's own client: kombu keeps it already
            return create(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_meetbridge_client")
        if client is None or client.connection_pool is not pool:
            client = self.__dict__["_meetbridge_client"] = create(self)
        return client

    Channel._create_client = reused
    Channel._meetbridge_reuses_client = True


_held_messages: list[tuple[dict[str, Any], str, str]] = []
_held_lock = threading.Lock()


def popped_messages_survive_a_broken_connection() -> None:
    """kombu takes a message off the queue (BRPOP) and only then records it as unacknowledged (a second round
    trip). When the connection breaks in between, the message is in neither place: it is lost, and only beat's
    stale-pending sweep queues its appointment again, two visibility timeouts later. A failover makes that
    likely, not rare: the delivery that the primary's last moment answered is the one a worker is taking off
    the queue right then. Such a message is held in this process instead and pushed back onto its queue, as
    the next one out, by the first channel that reaches Redis again (kombu calls restore_visible as soon as it
    connects and every few seconds after). If the first pop was never replicated, the message runs twice:
    every task is idempotent."""
    from kombu.transport.redis import QoS

    if getattr(QoS, "_meetbridge_patched", False):
        return
    append, restore_visible = QoS.append, QoS.restore_visible

    def append_or_hold(self, message, delivery_tag):  # type: ignore[no-untyped-def]
        try:
            append(self, message, delivery_tag)
        except (*self.channel.connection_errors, redis.ReadOnlyError):
            delivery = message.delivery_info
            with _held_lock:
                _held_messages.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("the broker connection broke as a message was taken off the queue: it is held, and "
                        "given back to the queue once Redis answers again")
            raise

    def give_back_then_restore_visible(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _give_back_held_messages(self.channel)
        return restore_visible(self, *args, **kwargs)

    QoS.append = append_or_hold
    QoS.restore_visible = give_back_then_restore_visible
    QoS._meetbridge_patched = True


def _give_back_held_messages(channel: Any) -> None:
    with _held_lock:
        if not _held_messages:
            return
        held = list(_held_messages)
        with channel.conn_or_acquire() as client, client.pipeline() as pipe:
            for payload, exchange, routing_key in held:
                channel._do_restore_message(payload, exchange, routing_key, pipe)
            pipe.execute()
        del _held_messages[:len(held)]
    log.warning("gave %d message(s) taken off the queue as the broker connection broke back to the queue", len(held))
