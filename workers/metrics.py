"""Prometheus metrics kept in Redis, so that one scrape of the web's `/metrics` sees every process.

Web and workers run as many processes on many hosts; counting into one Redis hash lets `/metrics` report
the whole deployment without a push gateway or a shared multiprocess directory.

A Celery worker counts in memory and sends what it counted as one pipeline of HINCRBYs: at the end of a task that
leaves the worker idle (so a scrape right after a lone task sees it), every FLUSH_SECONDS from a background thread
(a busy worker: one round trip a second, not one per task), and when the process exits. Counts of the same series
from every task of that second travel as one HINCRBY. Other processes (the web, beat, commands) count straight
into Redis. A worker that is killed outright (SIGKILL, OOM) loses at most its last FLUSH_SECONDS of counts; the
totals of every other process are unaffected.

A histogram observation is one HINCRBY of the one bucket it falls in (`<name>_hits`, not cumulative) plus the
sum; the collector makes the buckets cumulative at scrape time. (Earlier versions wrote every bucket at or
above the value, `<name>_bucket`: the collector adds those in too, so totals carry over an upgrade.)
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import redis
from celery import signals
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workers.state import KEYS, Store, metric_field

log = logging.getLogger(__name__)

TOP_HOSTS = 10
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = (*map(str, LATENCY_BUCKETS), "+Inf")
# A worker's counts reach Redis when it goes idle, and at least this often.
FLUSH_SECONDS = 1.0

DESCRIPTIONS = {
    "meetbridge_deliveries_total": "Webhook deliveries by how they were answered.",
    "meetbridge_syncs_total": "Appointment syncs by outcome.",
    "meetbridge_retries_total": "Sync attempts scheduled again after a transient failure.",
    "meetbridge_reconcile_errors_total": "Reconciliation steps that failed (users, listing, one appointment).",
    "meetbridge_lookups_total": "Look-ups for a write whose answer an earlier attempt lost, by step.",
    "meetbridge_drift_healed_total": (
        "Mirrors found changed outside meetbridge and put back, by kind (Zoom meeting gone or changed, NeetoCal "
        "booking cancelled or moved)."),
    "meetbridge_neetocal_refused_total": (
        "NeetoCal bookings NeetoCal refused (a warning on the appointment, not a retry or a dead letter)."),
    "meetbridge_neetocal_join_url_dropped_total": (
        "NeetoCal bookings made or moved without the join URL (no booking-form question has its field code)."),
    "meetbridge_api_requests_total": "Calls to Zoom, NeetoCal and meetergo by service, operation and HTTP status.",
    "meetbridge_api_request_seconds": "Latency of calls to Zoom, NeetoCal and meetergo.",
    "meetbridge_start_url_refreshes_total": "start_url refreshes by outcome.",
    "meetbridge_start_url_refresh_lag_seconds": "How late each start_url refresh ran after it fell due.",
}

# Whether this process is a Celery worker (set by the worker's own signals, below): only workers buffer.
_in_worker = False
_live: weakref.WeakSet[Metrics] = weakref.WeakSet()


class Metrics:
    def __init__(self, client: redis.Redis, flush_seconds: float = FLUSH_SECONDS,
                 buffered: bool | None = None) -> None:
        """`buffered`: count in memory and flush (None: only inside a Celery worker process)."""
        self.client = client
        self.flush_seconds = flush_seconds
        self.buffered = buffered
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: a failed one puts its counts back in order
        self._ints: dict[str, int] = defaultdict(int)
        self._floats: dict[str, float] = defaultdict(float)
        self._pid = os.getpid()
        self._flusher: threading.Thread | None = None
        _live.add(self)

    # --- counting ----------------------------------------------------------------------------------------
    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        field = metric_field(name, **labels)
        if self._buffering():
            with self._lock:
                self._ints[field] += amount
            return
        # Losing a count must never fail the work it counts.
        with contextlib.suppress(redis.RedisError):
            self.client.hincrby(KEYS.metrics, field, amount)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds, or +Inf
        hit = metric_field(name + "_hits", le=_BUCKET_LABELS[index], **labels)
        total = metric_field(name + "_sum", **labels)
        if self._buffering():
            with self._lock:
                self._ints[hit] += 1
                self._floats[total] += seconds
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(KEYS.metrics, hit, 1)
                pipe.hincrbyfloat(KEYS.metrics, total, seconds)
                pipe.execute()
        except redis.RedisError:
            pass

    # --- buffering ---------------------------------------------------------------------------------------
    def _buffering(self) -> bool:
        buffered = _in_worker if self.buffered is None else self.buffered
        if not buffered:
            return False
        if self._pid != os.getpid():  # forked: the parent sends what it had counted; start afresh
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._flush_lock = threading.Lock()
            self._ints, self._floats, self._flusher = defaultdict(int), defaultdict(float), None
        if self._flusher is None or not self._flusher.is_alive():
            with self._lock:
                if self._flusher is None or not self._flusher.is_alive():
                    self._flusher = threading.Thread(target=self._flush_every, name="metrics-flush", daemon=True)
                    self._flusher.start()
        return True

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def flush(self) -> None:
        """Send what was counted in memory: one round trip, one HINCRBY(FLOAT) per series."""
        with self._flush_lock:
            with self._lock:
                if not self._ints and not self._floats:
                    return
                ints, floats = self._ints, self._floats
                self._ints, self._floats = defaultdict(int), defaultdict(float)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for field, amount in ints.items():
                        pipe.hincrby(KEYS.metrics, field, amount)
                    for field, value in floats.items():
                        pipe.hincrbyfloat(KEYS.metrics, field, value)
                    pipe.execute()
            except redis.RedisError as error:
                # Keep them for the next flush (Redis may be failing over): counts are late, not lost. A
                # pipeline that failed half-way may count some twice; that beats losing all of them.
                log.warning("metrics not sent, kept for the next flush: %s", error)
                with self._lock:
                    for field, amount in ints.items():
                        self._ints[field] += amount
                    for field, value in floats.items():
                        self._floats[field] += value


def flush_all() -> None:
    """Send every buffered count of this process (task end, worker shutdown, exit)."""
    for metrics in list(_live):
        if metrics._pid == os.getpid():
            metrics.flush()


def _worker_started(**_: Any) -> None:
    global _in_worker
    _in_worker = True


_running_tasks = 0
_running_guard = threading.Lock()


def _task_started(**_: Any) -> None:
    global _running_tasks
    with _running_guard:
        _running_tasks += 1


def _task_ended(**_: Any) -> None:
    """The last running task's end sends the counts; while others run, the timer does (issue #11: one round trip
    per task was a tenth of a busy worker's Redis trips)."""
    global _running_tasks
    with _running_guard:
        _running_tasks = max(0, _running_tasks - 1)
        idle = _running_tasks == 0
    if idle:
        flush_all()


signals.worker_init.connect(_worker_started, weak=False)
signals.worker_process_init.connect(_worker_started, weak=False)
signals.task_prerun.connect(_task_started, weak=False)
signals.task_postrun.connect(_task_ended, weak=False)
signals.worker_process_shutdown.connect(lambda **_: flush_all(), weak=False)
signals.worker_shutdown.connect(lambda **_: flush_all(), weak=False)
atexit.register(flush_all)


class RedisCollector(Collector):
    """Turns the Redis hash into metric families, and reads the gauges off live state at scrape time."""

    def __init__(self, store: Store, queue_key: str, host_daily_limit: int = 100) -> None:
        self.store = store
        self.queue_key = queue_key
        self.host_daily_limit = host_daily_limit

    def collect(self) -> Iterator[Any]:
        client = self.store.client
        raw = client.hgetall(KEYS.metrics)
        counters: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        histograms: dict[str, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        hits: dict[str, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for field, value in raw.items():
            name, labels = json.loads(field)
            labels = dict(labels)
            if name.endswith("_hits"):
                le = labels.pop("le")
                hits[name[: -len("_hits")]][tuple(sorted(labels.items()))][le] = float(value)
            elif name.endswith("_bucket"):
                le = labels.pop("le")
                histograms[name[: -len("_bucket")]][tuple(sorted(labels.items()))][le] = float(value)
            elif name.endswith("_sum"):
                histograms[name[: -len("_sum")]][tuple(sorted(labels.items()))]["sum"] = float(value)
            else:
                counters[name].append((labels, float(value)))

        # One bucket's hits count in every bucket from its bound up (Prometheus buckets are cumulative).
        for name, series in hits.items():
            for key, per_bucket in series.items():
                values = histograms[name][key]
                running = 0.0
                for le in _BUCKET_LABELS:
                    running += per_bucket.get(le, 0.0)
                    values[le] = values.get(le, 0.0) + running

        # Every known series is announced even before its first count, so dashboards and alert rules find it.
        for name in DESCRIPTIONS:
            if name.endswith("_seconds"):
                histograms.setdefault(name, {})
            else:
                counters.setdefault(name, [])
        for name, samples in sorted(counters.items()):
            label_names = sorted({k for labels, _ in samples for k in labels})
            family = CounterMetricFamily(name.removesuffix("_total"), DESCRIPTIONS.get(name, name),
                                         labels=label_names)
            for labels, value in samples:
                family.add_metric([labels.get(k, "") for k in label_names], value)
            yield family

        for name, series in sorted(histograms.items()):
            label_names = sorted({k for key in series for k, _ in key})
            family = HistogramMetricFamily(name, DESCRIPTIONS.get(name, name), labels=label_names)
            for key, values in series.items():
                labels = dict(key)
                buckets = [(le, values.get(le, 0.0)) for le in _BUCKET_LABELS]
                family.add_metric([labels.get(k, "") for k in label_names], buckets, values.get("sum", 0.0))
            yield family

        now = time.time()
        earliest = self.store.refresh.earliest()
        oldest_pending = self.store.oldest_pending()
        gauges = {
            "meetbridge_queue_depth": ("Sync and refresh tasks waiting in the broker queue.",
                                       client.llen(self.queue_key)),
            "meetbridge_dead_letter_size": ("Appointments whose sync failed for good (replay them).",
                                            client.zcard(KEYS.dead_letter)),
            "meetbridge_refresh_scheduled": ("Meetings whose start_url is kept fresh.", len(self.store.refresh)),
            "meetbridge_refresh_overdue_seconds": ("How far the oldest due start_url refresh is behind.",
                                                   max(0.0, now - earliest) if earliest else 0.0),
            "meetbridge_deferred_syncs": ("Syncs parked in Redis: retries and quota waits.", len(self.store.deferred)),
            "meetbridge_oldest_pending_seconds": (
                "Age of the oldest acknowledged delivery whose sync has not settled (retries included).",
                max(0.0, now - oldest_pending) if oldest_pending else 0.0),
        }
        for name, (description, value) in gauges.items():
            yield GaugeMetricFamily(name, description, value=value)
        yield from self._daily_budget()
        yield GaugeMetricFamily("meetbridge_redis_up", "1 while Redis answers the scrape.", value=1)

    def _daily_budget(self) -> Iterator[Any]:
        """Zoom's per-host daily create/update budget: the busiest hosts' use today, and the limit."""
        client = self.store.client
        day = time.strftime("%Y%m%d", time.gmtime())
        keys = list(client.scan_iter(match=KEYS.host_daily("*", day), count=1000))
        used = zip(keys, client.mget(keys), strict=True) if keys else ()
        prefix, suffix = KEYS.host_daily("", day).split("::")
        busiest = sorted(((int(v or 0), k[len(prefix) + 1:-len(suffix) - 1]) for k, v in used),
                         reverse=True)[:TOP_HOSTS]
        family = GaugeMetricFamily("meetbridge_zoom_daily_used", f"Zoom create/update requests today, for the "
                                   f"{TOP_HOSTS} busiest hosts.", labels=["host"])
        for count, host in busiest:
            family.add_metric([host], count)
        yield family
        yield GaugeMetricFamily("meetbridge_zoom_daily_limit", "Zoom create/update requests a host may make a day.",
                                value=self.host_daily_limit)
