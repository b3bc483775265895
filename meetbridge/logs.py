"""Structured logs with the appointment in context, and no secret in any line.

The service handles credentials that log people in as meeting hosts (Zoom start_urls, host links), API keys
and OAuth tokens. `RedactSecrets` rewrites every record, whatever logger or library emitted it (gunicorn's
access log included), before any handler formats it.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import re
import sys
import traceback
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pythonjsonlogger.json import JsonFormatter

REDACTED = "<redacted>"
MASK = "***"  # a URL's password, as mask_url prints it
# Each pattern, its replacement, and literals of which at least one must be in the (lower-cased) text for the
# pattern to match at all: most lines hold none, and a substring test is far cheaper than a regex scan. Each
# literal is one the pattern cannot match without (case-folded where the pattern ignores case).
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # A Zoom start_url (its zak token logs the holder in as host), whole.
    (re.compile(r"https?://[^\s\"'<>]*?(?:/s/\d+|[?&]zak=)[^\s\"'<>]*"), "<start_url redacted>", ("http",)),
    # Host links: the signature is what makes them work.
    (re.compile(r"(/h/[^/\s\"'?]+/)[A-Za-z0-9_.-]+"), r"\1" + REDACTED, ("/h/",)),
    # Host pages and calendar feeds: the token is the credential.
    (re.compile(r"(/hosts/)[A-Za-z0-9_.-]+"), r"\1" + REDACTED, ("/hosts/",)),
    # Secrets in query strings, e.g. the webhook's ?token=, also percent-encoded (a URL inside a URL:
    # %3Ftoken%3D..., %26token%3D..., once or more: %253F...). The value runs to a plain & or the end of the
    # URL, %XX escapes and all: inside an encoded query, even an encoded %26 may belong to it.
    (re.compile(r"(?i)((?:[?&;]|%(?:25)*(?:3F|26|3B))(?:token|zak|access_token|api_key|apikey|key|secret|signature)"
                r"(?:=|%(?:25)*3D))[^&\s\"'<>]+"),
     r"\1" + REDACTED, ("token", "zak", "key", "secret", "signature")),
    # The password in a URL's userinfo: redis://user:password@host, rediss://:password@host (any scheme).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s\"'<>]*:)[^/?#\s\"'<>]*@"), r"\1" + MASK + "@", ("://",)),
    # Authorization headers.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]{6,}"), r"\1 " + REDACTED, ("bearer", "basic")),
    # key: value / "key": "value" pairs of credential-bearing fields.
    (re.compile(r"(?i)([\"']?\b(?:access_token|api_key|x-api-key|client_secret|secret|authorization|start_url|"
                r"password|zak)\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"), r"\1" + REDACTED,
     ("token", "key", "secret", "authorization", "start_url", "password", "zak")),
    # JWTs and meetergo keys wherever they stand.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED, ("eyj",)),
    (re.compile(r"\bak_live:[^\s\"',]+"), REDACTED, ("ak_live:",)),
    (re.compile(r"\brgo-[A-Za-z0-9_-]{8,}"), REDACTED, ("rgo-",)),
]

_known_secrets: list[str] = []
appointment_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("appointment_id", default=None)
task_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)


def register_secrets(values: Iterable[str]) -> None:
    """Configured secrets (API keys, tokens) are redacted by value too, wherever they turn up."""
    for value in values:
        if value and len(value) >= 4 and value not in _known_secrets:
            _known_secrets.append(value)
    _known_secrets.sort(key=len, reverse=True)


def redact(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = _folded(text)
    for pattern, replacement, literals in _PATTERNS:
        if any(literal in lowered for literal in literals):
            redacted = pattern.sub(replacement, text)
            if redacted != text:
                text, lowered = redacted, _folded(redacted)
    return text


def _folded(text: str) -> str:
    """Lower-cased, and every letter `re.IGNORECASE` takes for an ASCII one made that one (dotless ı for i, long ſ
    for s, İ's dot dropped; the Kelvin sign already lower-cases to k), so a literal test never skips a line a
    pattern would match (tests/test_logs_cost.py checks every code point)."""
    return text.lower().replace("\u0307", "").replace("\u0131", "i").replace("\u017f", "s")


def mask_url(url: str) -> str:
    """A URL fit to print: its password masked (redis://user:***@host:6379/0), also one passed as ?password=."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            parts = parts._replace(netloc=f"{user}:{MASK}@{hostport}")
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2" + MASK, parts.query)
    return urlunsplit(parts._replace(query=query))


class RedactSecrets(logging.Filter):
    """Renders each record's message and traceback once, redacted, so no formatter sees the raw values."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class AddContext(logging.Filter):
    """Puts the appointment and task being worked on into every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        appointment_id = appointment_context.get()
        if appointment_id and not hasattr(record, "appointment_id"):
            record.appointment_id = appointment_id
        task_id = task_context.get()
        if task_id and not hasattr(record, "task_id"):
            record.task_id = task_id
        return True


class Json(JsonFormatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", True)
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        if record.exc_text:
            log_record["exception"] = record.exc_text
        log_record.pop("exc_text", None)


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")


def logging_dict(level: str = "INFO", fmt: str = "json", stream: Any = "ext://sys.stderr") -> dict[str, Any]:
    """A dictConfig for meetbridge's processes (gunicorn's config uses it for its own loggers too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}, "context": {"()": AddContext}},
        "formatters": {"json": {"()": Json}, "text": {"()": Text}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "formatter": fmt if fmt in ("json", "text") else "json",
                "filters": ["context", "redact"],
            }
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # Celery's "Task ... received" line: one per task, and the "succeeded in" line that follows says more
            # (outcome, time). Kept at DEBUG; at INFO it was a third of a worker's log lines and their CPU.
            "celery.worker.strategy": {"level": "DEBUG" if level == "DEBUG" else "WARNING"},
        },
    }


def configure(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    register_secrets(secrets)
    logging.config.dictConfig(logging_dict(level, fmt, sys.stderr))
