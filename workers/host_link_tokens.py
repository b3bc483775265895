"""Host links: one signed URL per appointment and host that leads to a valid Zoom start_url.

The start_url itself expires (2 hours for regular users) and logs its holder in as host, so it is never
handed out; the host gets `<PUBLIC_URL>/h/<appointment id>/<token>` instead. The token signs the appointment
id, the host it was made for, the appointment's link version and an expiry (the meeting's end plus
HOST_LINK_GRACE_SECONDS). A link therefore dies when the meeting moves to another host, when it is revoked
(the version is bumped), and some time after the meeting is over. It is signed with SECRET_KEY and verified
with SECRET_KEY and every SECRET_KEY_FALLBACKS key, so a key can be rotated without breaking links.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote, urlsplit

from itsdangerous import BadSignature, URLSafeSerializer

from meetbridge.config import Settings
from workers.state import AppointmentRecord

PATH_PREFIX = "/h"
_SALT = "meetbridge host link v2"


@dataclass(frozen=True)
class Claims:
    appointment_id: str
    host: str
    version: int
    expires_at: int


class LinkRefused(Exception):
    """The link does not open: `status` is the HTTP answer (403 tampered, 404 unknown, 410 gone)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _serializer(settings: Settings) -> URLSafeSerializer:
    if not settings.secret_key:
        raise LinkRefused(403, "host links are not configured (SECRET_KEY is unset)")
    return _serializer_for(settings.secret_key, settings.secret_key_fallbacks)


@lru_cache(maxsize=4)
def _serializer_for(secret_key: str, fallbacks: tuple[str, ...]) -> URLSafeSerializer:
    # itsdangerous signs with the last key and verifies with all of them.
    keys = [*reversed(fallbacks), secret_key]
    return URLSafeSerializer(keys, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def link_expiry(settings: Settings, record: AppointmentRecord) -> int | None:
    if not record.ends_at:
        return None
    return int(datetime.fromisoformat(record.ends_at).timestamp()) + settings.host_link_grace_seconds


def host_link(settings: Settings, record: AppointmentRecord) -> str | None:
    """The appointment's current host link, or None while it has no Zoom meeting to start."""
    expires_at = link_expiry(settings, record)
    if not settings.secret_key or not record.zoom_meeting_id or not record.zoom_host or expires_at is None:
        return None
    token = _serializer(settings).dumps(
        [record.appointment_id, record.zoom_host, record.host_link_version, expires_at])
    return f"{settings.public_url}{PATH_PREFIX}/{quote(record.appointment_id, safe='')}/{token}"


def read_claims(settings: Settings, appointment_id: str, token: str) -> Claims:
    """The claims of a link whose signature holds for this appointment; LinkRefused(403) otherwise."""
    try:
        raw = _serializer(settings).loads(token)
        claims = Claims(appointment_id=str(raw[0]), host=str(raw[1]), version=int(raw[2]),
                        expires_at=int(raw[3]))
    except (BadSignature, IndexError, TypeError, ValueError):
        raise LinkRefused(403, "this link is not valid") from None
    if claims.appointment_id != appointment_id:
        raise LinkRefused(403, "this link is not valid")
    return claims


def check_still_open(settings: Settings, claims: Claims, record: AppointmentRecord,
                     now: float | None = None) -> None:
    """Raise LinkRefused(410) when the signed link no longer opens this appointment's meeting."""
    now = time.time() if now is None else now
    if record.status == "cancelled":
        raise LinkRefused(410, "this appointment was cancelled")
    current_expiry = link_expiry(settings, record)
    if now > claims.expires_at or (current_expiry is not None and now > current_expiry):
        raise LinkRefused(410, "this meeting is over; the link has expired")
    if claims.version != record.host_link_version:
        raise LinkRefused(410, "this link was revoked; ask for the current one")
    if record.zoom_host and claims.host.lower() != record.zoom_host.lower():
        raise LinkRefused(410, "the meeting has another host now; this link no longer opens it")


def is_zoom_start_url(settings: Settings, url: str | None) -> bool:
    """Only an https URL on Zoom's own domains (or the configured simulator's) may be a redirect target."""
    if not url:
        return False
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and any(host == domain or host.endswith("." + domain)
                                           for domain in settings.zoom_start_url_domains)
