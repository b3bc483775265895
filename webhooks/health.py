"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from workers.metrics import RedisCollector
from workers.queue import QUEUE

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    try:
        current_app.extensions["meetbridge"].redis.ping()
    except redis.RedisError:
        return jsonify(status="unavailable", redis="unreachable"), 503
    return jsonify(status="ready", redis="ok")


@bp.get("/metrics")
def metrics() -> Any:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(current_app.extensions["meetbridge"].store, QUEUE))
    try:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    except redis.RedisError:
        return jsonify(error="metrics are kept in Redis, which is unreachable"), 503
