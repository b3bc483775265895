"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from webhooks import services
from workers.metrics import RedisCollector
from workers.queue import QUEUE
from workers.state.server import ServerView

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    try:
        ServerView(services().redis).ping()
    except redis.RedisError:
        return jsonify(status="unavailable", redis="unreachable"), 503
    return jsonify(status="ready", redis="ok")


REDIS_DOWN = (b"# HELP meetbridge_redis_up 1 while Redis answers the scrape.\n"
              b"# TYPE meetbridge_redis_up gauge\nmeetbridge_redis_up 0.0\n")


@bp.get("/metrics")
def metrics() -> Any:
    these = services()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(these.store, QUEUE, these.settings.zoom_host_daily_limit))
    try:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    except redis.RedisError:
        # The counters live in Redis; what can be said without it is that it is down (an alert rule reads this).
        return Response(REDIS_DOWN, mimetype=CONTENT_TYPE_LATEST)
