"""The Celery app (`celery -A workers.celery_app worker|beat`), its queue and its task names.

Configured lazily from `Settings` on first use, so importing this module reads no environment. Tasks are
acknowledged only after they finish and are given back to the queue if their worker dies (at-least-once);
every task is idempotent, so a second delivery is harmless.

Light on purpose: the web process imports it (through `workers.queue`) to build the messages it queues, by task
name. The tasks themselves, and with them the sync and every API client, live in `workers.tasks`, which only a
worker loads (`include`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, signals

from meetbridge import logs
from meetbridge.config import ConfigError, Settings, get_settings
from workers.state.broker import (
    channels_reuse_their_client,
    closed_channel_fails_as_a_connection_error,
    popped_messages_survive_a_broken_connection,
)
from workers.task_events import BatchedTaskEvents

log = logging.getLogger(__name__)

QUEUE = "meetbridge"

# Every task by name: `workers.tasks` binds these names to functions; the web, the sweeps and beat queue by name.
SYNC = "meetbridge.sync_appointment"
REFRESH = "meetbridge.refresh_start_url"
SWEEP = "meetbridge.sweep"
SWEEP_DEFERRED = "meetbridge.sweep_deferred"
RECONCILE = "meetbridge.reconcile"

app = Celery("meetbridge", include=["workers.tasks"])
app.steps["consumer"].add(BatchedTaskEvents)


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
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password:
        options["sentinel_kwargs"] = {"password": settings.redis_sentinel_password}
    return options


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def celery_config(settings: Settings) -> dict[str, Any]:
    # A sweep expires a while after it is sent: workers coming back after an outage drop the old ones rather than
    # run thirty a minute of them. Not sooner, or a queue a few seconds behind (or a beat whose clock runs ahead
    # of the workers') would drop every sweep before it ran.
    def every(seconds: float, task: str) -> dict[str, Any]:
        expires = max(5 * seconds, 2 * settings.broker_visibility_timeout_seconds)
        return {"task": task, "schedule": seconds, "options": {"expires": expires}}

    schedule: dict[str, Any] = {
        "sweep-schedules": every(settings.refresh_sweep_seconds, SWEEP),
        # Retries wait in Redis, not in worker memory: picked up within a couple of seconds of being due.
        "sweep-deferred": every(2.0, SWEEP_DEFERRED),
    }
    if settings.meetergo_readback:
        schedule["reconcile-meetergo"] = every(settings.reconcile_seconds, RECONCILE)
    popped_messages_survive_a_broken_connection()
    closed_channel_fails_as_a_connection_error()
    channels_reuse_their_client()
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
            # A worker that dies during a restore scan holds kombu's restore mutex until it expires: 5 minutes by
            # default, in which no crashed worker's task comes back. A scan takes milliseconds.
            "unacked_mutex_expire": max(5, settings.broker_visibility_timeout_seconds // 3),
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
        # Task events, so that Flower (or `celery events`) shows the syncs as they run: published in batches
        # (workers/task_events.py), not stored.
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
    from workers.state.server import require_safe_redis

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
