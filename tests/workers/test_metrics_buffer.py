"""A worker's in-memory counts (issue 11): late when Redis is away, never lost or doubled by that."""

from __future__ import annotations

import threading

import redis
from celery import signals

from tests.support import free_port
from workers.metrics import Metrics
from workers.state import metric_field


def test_counts_from_many_threads_arrive_once_each(redis_client: redis.Redis) -> None:
    metrics = Metrics(redis_client, flush_seconds=60, buffered=True)  # only the explicit flush sends

    def work() -> None:
        for _ in range(500):
            metrics.count("meetbridge_syncs_total", outcome="synced")
            metrics.observe("meetbridge_api_request_seconds", 0.03, service="zoom")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics.flush()
    metrics.flush()  # nothing left: sends nothing
    fields = redis_client.hgetall("mb:metrics")
    assert fields[metric_field("meetbridge_syncs_total", outcome="synced")] == "4000"
    assert fields[metric_field("meetbridge_api_request_seconds_hits", le="0.05", service="zoom")] == "4000"
    assert abs(float(fields[metric_field("meetbridge_api_request_seconds_sum", service="zoom")]) - 120) < 1e-6


def test_counts_are_kept_while_redis_is_away(redis_client: redis.Redis) -> None:
    away = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    metrics = Metrics(away, flush_seconds=60, buffered=True)
    metrics.count("meetbridge_lookups_total", 3, step="a")
    metrics.flush()  # refused: kept
    metrics.count("meetbridge_lookups_total", 2, step="a")
    metrics.client = redis_client  # Redis is back (a failover's new primary)
    metrics.flush()
    assert redis_client.hget("mb:metrics", metric_field("meetbridge_lookups_total", step="a")) == "5"


def test_outside_a_worker_each_count_goes_straight_to_redis(redis_client: redis.Redis) -> None:
    metrics = Metrics(redis_client)  # the web, beat, commands: not buffered
    metrics.count("meetbridge_deliveries_total", status="invalid")
    assert redis_client.hget("mb:metrics", metric_field("meetbridge_deliveries_total", status="invalid")) == "1"


def test_a_task_ending_beside_others_leaves_its_counts_to_the_timer_and_the_last_one_sends(
        redis_client: redis.Redis) -> None:
    metrics = Metrics(redis_client, flush_seconds=60, buffered=True)
    field = metric_field("meetbridge_syncs_total", outcome="synced")
    signals.task_prerun.send(sender=None)
    signals.task_prerun.send(sender=None)
    metrics.count("meetbridge_syncs_total", outcome="synced")
    signals.task_postrun.send(sender=None)  # the other task still runs: no round trip for this one
    assert redis_client.hget("mb:metrics", field) is None

    metrics.count("meetbridge_syncs_total", outcome="synced")
    signals.task_postrun.send(sender=None)  # the worker is idle: a scrape now sees both

    assert redis_client.hget("mb:metrics", field) == "2"
