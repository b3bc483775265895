"""The web process: the meetergo webhook receiver, the admin API, host links, health and metrics.

No remote call happens on the webhook path: it authenticates, validates, records and queues in one Redis
round trip and answers. Host links are the one place the web talks to Zoom (a start_url fetched on the spot
for a host who is waiting for it).
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from meetbridge import logs
from meetbridge.config import MAX_WEBHOOK_BODY_BYTES, Settings, get_settings
from workers.state.server import require_safe_redis
from workers.wiring import Services, build_services

EXTENSION = "meetbridge"


def services() -> Services:
    """The services of the app handling this request (`create_app` keeps them in Flask's `app.extensions`)."""
    return current_app.extensions[EXTENSION]


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or get_settings()
    settings.require_web()
    logs.register_secrets(settings.secrets())
    require_safe_redis(settings)

    app = Flask(__name__)
    # One byte over the limit is let through so the receiver can tell "too large" from "exactly at the limit"
    # for bodies sent without a length; werkzeug cuts such streams off silently at this size.
    app.config.from_mapping(MAX_CONTENT_LENGTH=MAX_WEBHOOK_BODY_BYTES + 1)
    app.extensions[EXTENSION] = services or build_services(settings)

    from webhooks import admin, health, host_links, host_pages, meetergo, openapi

    for module in (meetergo, admin, host_links, host_pages, health, openapi):
        app.register_blueprint(module.bp)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return jsonify(error=error.description or error.name), error.code

    app.before_request(lambda: guard_operator_endpoints(settings))
    return app


OPERATOR_PATHS = frozenset({"/metrics", "/openapi.json"})


def guard_operator_endpoints(settings: Settings) -> Any:
    """`/metrics` and `/openapi.json` tell volumes and shapes to whoever asks: behind METRICS_TOKEN, or only on
    METRICS_PORT (bound to localhost), where nothing else is served."""
    operator_path = request.path in OPERATOR_PATHS
    if settings.metrics_port is not None:
        on_metrics_port = request.environ.get("SERVER_PORT") == str(settings.metrics_port)
        if operator_path != on_metrics_port:
            return jsonify(error="not found"), 404
    if operator_path and settings.metrics_token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                  settings.metrics_token.encode()):
            return jsonify(error="missing or wrong metrics token"), 401
    return None
