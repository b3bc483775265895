"""`POST /webhooks/meetergo?token=<secret>`: a meetergo webhook delivery.

meetergo signs nothing, so each delivery must carry one of MEETERGO_WEBHOOK_TOKENS in its URL (several allow
rotation). A 202 means the work is durably queued in Redis; when it cannot be, the answer is 503 so that the
sender tries again. Nothing is queued or stored for a delivery that is refused.

`webhook_view` owns everything before the event (token, size, type, JSON) and answers each refusal; the view
validates the event, records it and answers. Every answer goes through `reply`.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from meetbridge.config import MAX_WEBHOOK_BODY_BYTES
from schemas.events import AppointmentEvent
from schemas.meetergo import parse_delivery
from schemas.text import ESCAPED_SURROGATE, whole_characters
from webhooks import services
from workers.queue import QUEUE, sync_message

bp = Blueprint("meetergo", __name__)

JSON_TYPES = ("application/json",)
TOO_LARGE = f"body is larger than {MAX_WEBHOOK_BODY_BYTES // 1024} KiB"
RETRY_AFTER_SECONDS = 5


def reply(http_status: int, counted_as: str | None = None, *, retry_after: int | None = None,
          **body: Any) -> Response:
    """Every answer of the receiver: a JSON body, counted in `meetbridge_deliveries_total` under `counted_as`
    (None where the recording script counted it already, or could not), with `Retry-After` when the sender is
    to try again later."""
    if counted_as is not None:
        services().metrics.count("meetbridge_deliveries_total", status=counted_as)
    response = jsonify(body)
    response.status_code = http_status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


class Refused(Exception):
    """A delivery refused before its event is looked at. `unread` says what is left of the body: "drain" it
    (read and drop it, so the connection is left at the start of the next request, for a proxy's pool to reuse),
    "close" the connection on it, or nothing ("none": the body was read)."""

    def __init__(self, http_status: int, counted_as: str, error: str, *, details: dict[str, Any] | None = None,
                 unread: Literal["drain", "close", "none"] = "none") -> None:
        super().__init__(error)
        self.http_status, self.counted_as, self.error = http_status, counted_as, error
        self.details, self.unread = details, unread

    def answer(self) -> Response:
        if self.unread == "close" or (self.unread == "drain" and not _discard_body()):
            _close_connection()
        extra = {} if self.details is None else {"details": self.details}
        return reply(self.http_status, self.counted_as, error=self.error, **extra)


def webhook_view(view: Callable[[Any], Response]) -> Callable[[], Response]:
    """Everything about a delivery before its event: the token, the size, the type and the JSON, each failure
    answered here (Zulip's `webhook_view`). The view is handed the parsed body."""

    @functools.wraps(view)
    def checked() -> Response:
        try:
            _authenticate()
            _check_declared_body()
            body = _read_json()
        except Refused as refused:
            return refused.answer()
        return view(body)

    return checked


@bp.post("/webhooks/meetergo")
@webhook_view
def receive(body: Any) -> Response:
    """Validate, record and answer: 202 once the work is durably queued (or is a duplicate, or ignored)."""
    try:
        delivery = parse_delivery(body, received_at=datetime.now(UTC))
    except ValidationError as error:
        return reply(400, "invalid", error="not a valid meetergo event", details=error.messages)
    if delivery.event is None:
        return reply(202, "ignored", status="ignored", appointment_id=None)
    event = delivery.event
    try:
        recorded = services().store.record_delivery(event, sync_message(event.appointment_id), QUEUE,
                                                    history=_describe(event))
    except redis.RedisError:
        current_app.logger.warning("could not queue a delivery for %s: Redis is unreachable", event.appointment_id)
        return reply(503, error="the delivery could not be queued; send it again", retry_after=RETRY_AFTER_SECONDS)
    # Not counted here: the script counted it already, in the same round trip.
    return reply(202, status="accepted" if recorded else "duplicate", appointment_id=event.appointment_id)


def _authenticate() -> None:
    candidate = request.args.get("token", "").encode()
    # Compare against every token, always, so timing says nothing about which one nearly matched.
    matches = [hmac.compare_digest(candidate, token.encode()) for token in services().settings.webhook_tokens]
    if not any(matches):
        raise Refused(401, "unauthorized", "missing or wrong token", unread="drain")


def _check_declared_body() -> None:
    """What the headers say: a length over the limit, a type that is not JSON."""
    if (request.content_length or 0) > MAX_WEBHOOK_BODY_BYTES:
        raise Refused(413, "too_large", TOO_LARGE, unread="drain")
    if request.mimetype not in JSON_TYPES and not request.mimetype.endswith("+json"):
        raise Refused(415, "unsupported_type", "send the delivery as application/json",
                      details={"content_type": request.mimetype or None}, unread="drain")


def _read_json() -> Any:
    # A body sent without a length (chunked) is only known to be too large once read past the limit.
    raw = request.stream.read(MAX_WEBHOOK_BODY_BYTES + 1)
    if len(raw) > MAX_WEBHOOK_BODY_BYTES:
        raise Refused(413, "too_large", TOO_LARGE, unread="close")  # the rest of it is left unread
    try:
        # Decoded strictly: json.loads would also take UTF-16 and the bytes of half a character.
        body = json.loads(raw.decode("utf-8"))
        # Half a character escaped ("\ud83d", an emoji cut in two) becomes U+FFFD, rather than fail every sync.
        return whole_characters(body) if ESCAPED_SURROGATE.search(raw) else body
    except UnicodeDecodeError:
        raise Refused(400, "invalid", "body is not valid UTF-8", details={}) from None
    except RecursionError:
        raise Refused(400, "invalid", "body is nested too deeply", details={}) from None
    except ValueError as error:
        raise Refused(400, "invalid", "body is not valid JSON", details={"json": [str(error)]}) from None


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


def _describe(event: AppointmentEvent) -> str:
    if event.cancelled:
        return "cancelled" + (f": {event.cancel_reason}" if event.cancel_reason else "")
    if event.start and event.end:
        hosts = ", ".join(h.email for h in event.hosts)
        return f"{event.start.isoformat()} to {event.end.isoformat()}, hosted by {hosts}"
    return event.kind
