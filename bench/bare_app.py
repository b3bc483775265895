"""The floors for `bench/ingest`: bare Flask apps on meetbridge's webhook route that answer 202 with an empty
JSON body and do as little as their name says.

- `create_app()`: nothing else (no token check, no parsing, no Redis): Flask + gunicorn alone.
- `create_app("redis")`: the raw body written to Redis in one round trip (`RPUSH`), as durable as meetbridge's
  recording and nothing more: what the one round trip alone costs under gunicorn.
- `create_app("validate")`: the body parsed and loaded by meetbridge's marshmallow schemas, then written as
  above: the round trip plus the validation, without meetbridge's token check, deduplication or Celery message.
- `meetbridge_without_validation()`: meetbridge's own app with marshmallow's load replaced by a copy of one
  loaded event under the body's appointment id: what the handler would cost if validation were free (bench only:
  it accepts anything with an id).

Served under the very same gunicorn config as the service (`gunicorn --config gunicorn.conf.py
'bench.bare_app:create_app()'`, from the repository root), so the differences between them and meetbridge are
what each part of meetbridge's handler costs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask, jsonify, request

FLOOR_KEY = "bench:floor"


def create_app(work: str = "none") -> Flask:
    if work not in ("none", "redis", "validate"):
        raise ValueError(f"unknown floor {work!r}")
    app = Flask(__name__)
    client = redis.Redis.from_url(os.environ["REDIS_URL"]) if work != "none" else None

    @app.post("/webhooks/meetergo")
    def receive() -> object:
        if client is not None:
            body = request.get_data()
            if work == "validate":
                from schemas.meetergo import parse_delivery

                parse_delivery(json.loads(body), received_at=datetime.now(UTC))
            client.rpush(FLOOR_KEY, body)
        return jsonify({}), 202

    return app


def meetbridge_without_validation() -> Flask:
    import webhooks.meetergo
    from schemas.meetergo import Delivery, parse_delivery
    from webhooks import create_app as meetbridge_app

    loaded: dict[str, Any] = {}

    def first_then_copies(body: Any, received_at: datetime | None = None) -> Delivery:
        if not loaded:
            loaded["delivery"] = parse_delivery(body, received_at=received_at)
        delivery = loaded["delivery"]
        event = dataclasses.replace(delivery.event, appointment_id=body["id"], received_at=received_at)
        return Delivery(kind=delivery.kind, event=event)

    webhooks.meetergo.parse_delivery = first_then_copies
    return meetbridge_app()
