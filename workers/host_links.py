"""Host links: one stable, signed URL per appointment that always leads to a valid Zoom start_url.

The start_url itself expires (2 hours for regular users) and logs its holder in as host, so it is never
handed out; the host gets `<PUBLIC_URL>/h/<appointment id>/<signature>` instead. The signature is an
HMAC of the appointment id under SECRET_KEY: unguessable, bound to that appointment, and checked in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

PATH_PREFIX = "/h"
_PURPOSE = b"meetbridge host link v1\x00"


def signature(secret_key: str, appointment_id: str) -> str:
    digest = hmac.new(secret_key.encode(), _PURPOSE + appointment_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def host_link(public_url: str, secret_key: str, appointment_id: str) -> str:
    return f"{public_url}{PATH_PREFIX}/{quote(appointment_id, safe='')}/{signature(secret_key, appointment_id)}"


def is_valid(secret_key: str, appointment_id: str, candidate: str) -> bool:
    return hmac.compare_digest(signature(secret_key, appointment_id).encode(), candidate.encode())
