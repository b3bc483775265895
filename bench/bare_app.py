"""The floor for `bench/ingest`: a bare Flask app on meetbridge's webhook route that answers 202 with an empty
JSON body and does nothing else (no token check, no parsing, no Redis).

Served under the very same gunicorn config as the service (`gunicorn --config gunicorn.conf.py
'bench.bare_app:create_app()'`, from the repository root), so the difference between the two is what
meetbridge's handler costs: authentication, JSON parsing, validation, building the Celery message and the
one Redis round trip.
"""

from __future__ import annotations

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/meetergo")
    def receive() -> object:
        return jsonify({}), 202

    return app
