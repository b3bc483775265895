"""The Celery app (`celery -A workers.celery_app worker|beat`).

Configured lazily from `Settings` on first use, so importing this module reads no environment. Tasks are
acknowledged only after they finish and are given back to the queue if their worker dies (at-least-once);
every task is idempotent, so a second delivery is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery, signals

from meetbridge import logs
from meetbridge.config import ConfigError, Settings, get_settings
from workers.queue import QUEUE

log = logging.getLogger(__name__)

app = Celery("meetbridge", include=["workers.tasks"])


def broker_url(settings: Settings) -> str:
    """REDIS_URL, or kombu's `sentinel://` form (one per sentinel, each with REDIS_URL's password and database)."""
    if not settings.redis_sentinels:
        return settings.redis_url
    url = urlsplit(settings.redis_url)
    userinfo = url.netloc.rpartition("@")[0]
    database = url.path.lstrip("/") or "0"
    return ";".join(f"sentinel://{userinfo + '@' if userinfo else ''}{_host(host)}:{port}/{database}"
                    for host, port in settings.redis_sentinels)


def sentinel_options(settings: Settings) -> dict[str, Any]:
    if not settings.redis_sentinels:
        return {}
    _sentinel_channel_fails_as_a_connection_error()
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password:
        options["sentinel_kwargs"] = {"password": settings.redis_sentinel_password}
    return options


def _sentinel_channel_fails_as_a_connection_error() -> None:
    """kombu's Sentinel channel, once a failover broke its connection, builds a new pool from the released
    connection when a late ack or the at-close restore of unacknowledged messages needs one, and fails with an
    AttributeError (`conninfo.hostname` of None). That is not a connection error, so Celery stops the worker for
    good. Raised as the connection error it is, the ack is logged as failed and the message comes back from
    Redis's unacked set after BROKER_VISIBILITY_TIMEOUT_SECONDS; the consumer reconnects to the new primary."""
    from kombu.transport.redis import SentinelChannel

    if getattr(SentinelChannel, "_meetbridge_patched", False):
        return
    connparams = SentinelChannel._connparams

    def checked(self, asynchronous=False):  # type: ignore[no-untyped-def]
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection was closed by a Redis failover")
        return connparams(self, asynchronous=asynchronous)

    SentinelChannel._connparams = checked
    SentinelChannel._meetbridge_patched = True


_held_messages: list[tuple[dict[str, Any], str, str]] = []
_held_lock = threading.Lock()


def _popped_messages_survive_a_broken_connection() -> None:
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


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def celery_config(settings: Settings) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "sweep-schedules": {"task": "meetbridge.sweep", "schedule": settings.refresh_sweep_seconds},
        # Retries wait in Redis, not in worker memory: picked up within a couple of seconds of being due.
        "sweep-deferred": {"task": "meetbridge.sweep_deferred", "schedule": 2.0},
    }
    if settings.meetergo_readback:
        schedule["reconcile-meetergo"] = {"task": "meetbridge.reconcile", "schedule": settings.reconcile_seconds}
    _popped_messages_survive_a_broken_connection()
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": {
            **sentinel_options(settings),
            # A task not acknowledged this long after delivery (its worker died) goes back to the queue. This
            # bounds the recovery after a crash, so it is short: no worker holds a message for long (retries
            # longer than a third of it wait in Redis's deferred schedule); a task that does run longer is
            # delivered again and finds its appointment's lock held, which is harmless.
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            # Look for such tasks often enough that one is redelivered soon after its timeout, not up to
            # 100 s later (kombu's default: a scan on every 10th check, every 10 s).
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_seconds // 10)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        # Task events, so that Flower (or `celery events`) shows the syncs as they run; a few small pub/sub
        # messages per task, not stored.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "beat_schedule": schedule,
        # Beat keeps its schedule in memory: every entry is a short interval, nothing to remember across restarts.
        "beat_scheduler": "celery.beat:Scheduler",
        "timezone": "UTC",
    }


class RefusesToStart(SystemExit):
    """A configuration this process cannot run with: it exits non-zero with the reason (naming the variable),
    not a traceback. A SystemExit, so that celery's signal dispatch, which logs and swallows Exceptions, lets
    it through."""


def _settings(check: Callable[[Settings], None] | None = None) -> Settings:
    """This process's settings. Weak secrets and stale variables are refused whichever command this is
    (Settings.from_env); `check` is what this process needs beyond that (Settings.require_worker)."""
    try:
        settings = get_settings()
        if check:
            check(settings)
    except ConfigError as error:
        raise RefusesToStart(f"meetbridge refuses to start: {error}") from None
    return settings


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(_settings()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = _settings()
    logs.configure(settings.log_level, settings.log_format, settings.secrets())


@signals.worker_init.connect
def _check_worker(**_: Any) -> None:
    _check_redis(_settings(Settings.require_worker))  # the worker signs host links: it needs SECRET_KEY


@signals.beat_init.connect
def _check_beat(**_: Any) -> None:
    _check_redis(_settings(Settings.validate))  # beat signs nothing: it needs no SECRET_KEY, refuses a weak one


def _check_redis(settings: Settings) -> None:
    from workers.durability import require_safe_redis

    require_safe_redis(settings)


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, args: Any = None, **_: Any) -> None:
    appointment_id = args[0] if args and isinstance(args[0], str) else None
    logs.appointment_context.set(appointment_id)
    logs.task_context.set(task_id)


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    logs.appointment_context.set(None)
    logs.task_context.set(None)
