"""The floors for `bench/ingest`: bare Flask apps on meetbridge's webhook route that answer 202 with an empty
JSON body and do as little as their name says.

- `create_app()`: nothing else (no token check, no parsing, no Redis): Flask + gunicorn alone.
- `create_app("redis")`: the raw body written to Redis in one round trip (`RPUSH`), as durable as meetbridge's
  recording and nothing more: what the one round trip alone costs under gunicorn.
- `create_app("validate")`: the body parsed and loaded by meetbridge's marshmallow schemas, then written as
  above: the round trip plus the validation, without meetbridge's token check, deduplication or Celery message.

Served under the very same gunicorn config as the service (`gunicorn --config gunicorn.conf.py
'bench.bare_app:create_app()'`, from the repository root), so the differences between them and meetbridge are
what each part of meetbridge's handler costs.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

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
