"""`POST /webhooks/meetergo?token=<secret>`: a meetergo webhook delivery.

meetergo signs nothing, so each delivery must carry one of MEETERGO_WEBHOOK_TOKENS in its URL (several allow
rotation). A 202 means the work is durably queued in Redis; when it cannot be, the answer is 503 so that the
sender tries again. Nothing is queued or stored for a delivery that is refused.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from meetbridge.config import MAX_WEBHOOK_BODY_BYTES
from schemas.events import AppointmentEvent
from schemas.meetergo import parse_delivery
from workers.queue import QUEUE, sync_message

bp = Blueprint("meetergo", __name__)

JSON_TYPES = ("application/json",)


def _reply(http_status: int, counted_as: str, **body: Any) -> Any:
    current_app.extensions["meetbridge"].metrics.count("meetbridge_deliveries_total", status=counted_as)
    return jsonify(body), http_status


def _token_ok(candidate: str) -> bool:
    tokens = current_app.extensions["meetbridge"].settings.webhook_tokens
    # Compare against every token, always, so timing says nothing about which one nearly matched.
    matches = [hmac.compare_digest(candidate.encode(), token.encode()) for token in tokens]
    return any(matches)


def _discard_body() -> bool:
    """Read what is left of the request body, up to the size limit, and drop it: whether its end was reached."""
    if (request.content_length or 0) > MAX_WEBHOOK_BODY_BYTES:
        return False  # not worth reading
    left = MAX_WEBHOOK_BODY_BYTES + 1  # the stream refuses to be read past this (MAX_CONTENT_LENGTH)
    try:
        while left > 0:
            chunk = request.stream.read(min(left, 64 * 1024))
            if not chunk:
                return True
            left -= len(chunk)
    except (OSError, HTTPException):  # the client went away, or sent a malformed chunk
        return False
    return False


def _close_connection() -> None:
    """Have the server close the connection after this answer, and say so in it (`Connection: close`).

    For an answer given before the body was read to its end: the next request on the connection would
    otherwise be read from the rest of the body. A `Connection` header set here would not do: it is hop-by-hop,
    and gunicorn drops it. gunicorn.conf.py's pre_request hook hands the body stream the means to ask.
    """
    close = getattr(request.environ.get("wsgi.input"), "meetbridge_close_connection", None)
    if close is not None:
        close()


def _refuse(http_status: int, counted_as: str, **body: Any) -> Any:
    """An answer given before the body is used. A body within the limit is read and dropped, so that the
    connection is left at the start of the next request (a proxy's pool reuses it); a larger one is not read,
    and the connection is closed."""
    if not _discard_body():
        _close_connection()
    return _reply(http_status, counted_as, **body)


@bp.post("/webhooks/meetergo")
def receive() -> Any:
    if not _token_ok(request.args.get("token", "")):
        return _refuse(401, "unauthorized", error="missing or wrong token")
    if (request.content_length or 0) > MAX_WEBHOOK_BODY_BYTES:
        return _refuse(413, "too_large", error=f"body is larger than {MAX_WEBHOOK_BODY_BYTES // 1024} KiB")
    if request.mimetype not in JSON_TYPES and not request.mimetype.endswith("+json"):
        return _refuse(415, "unsupported_type", error="send the delivery as application/json",
                       details={"content_type": request.mimetype or None})
    # A body sent without a length (chunked) is only known to be too large once read past the limit.
    raw = request.stream.read(MAX_WEBHOOK_BODY_BYTES + 1)
    if len(raw) > MAX_WEBHOOK_BODY_BYTES:
        _close_connection()  # the rest of it is left unread
        return _reply(413, "too_large", error=f"body is larger than {MAX_WEBHOOK_BODY_BYTES // 1024} KiB")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        return _reply(400, "invalid", error="body is not valid UTF-8", details={})
    except RecursionError:
        return _reply(400, "invalid", error="body is nested too deeply", details={})
    except ValueError as error:
        return _reply(400, "invalid", error="body is not valid JSON", details={"json": [str(error)]})
    try:
        delivery = parse_delivery(body, received_at=datetime.now(UTC))
    except ValidationError as error:
        return _reply(400, "invalid", error="not a valid meetergo event", details=error.messages)
    if delivery.event is None:
        return _reply(202, "ignored", status="ignored", appointment_id=None)
    return _record(delivery.event)


def _record(event: AppointmentEvent) -> Any:
    services = current_app.extensions["meetbridge"]
    message = sync_message(event.appointment_id)
    try:
        recorded = services.store.record_delivery(event, message, QUEUE, history=_describe(event))
    except redis.RedisError:
        current_app.logger.warning("could not queue a delivery for %s: Redis is unreachable", event.appointment_id)
        response = jsonify(error="the delivery could not be queued; send it again")
        response.headers["Retry-After"] = "5"
        return response, 503
    # The script counted it already, in the same round trip.
    return jsonify(status="accepted" if recorded else "duplicate", appointment_id=event.appointment_id), 202


def _describe(event: AppointmentEvent) -> str:
    if event.cancelled:
        return "cancelled" + (f": {event.cancel_reason}" if event.cancel_reason else "")
    if event.start and event.end:
        hosts = ", ".join(h.email for h in event.hosts)
        return f"{event.start.isoformat()} to {event.end.isoformat()}, hosted by {hosts}"
    return event.kind
