from __future__ import annotations

import base64
import json

from meetbridge.config import Settings
from workers.start_urls import CUSTCREATE_TTL_SECONDS, start_url_expiry, zak_expiry


def start_url_with_exp(exp: int) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"https://zoom.us/s/123456789?zak=eyJhbGciOiJIUzI1NiJ9.{payload}.c2lnbmF0dXJl"


def test_expiry_is_read_from_the_zak_token() -> None:
    assert zak_expiry(start_url_with_exp(1_900_000_000)) == 1_900_000_000


def test_unreadable_zak_falls_back_to_the_configured_lifetime() -> None:
    settings = Settings(zoom_start_url_ttl_seconds=7200)
    assert zak_expiry("https://zoom.us/s/1?zak=opaque") is None
    assert start_url_expiry("https://zoom.us/s/1?zak=opaque", 1000.0, "a@b.co", settings) == 8200.0


def test_custcreate_hosts_get_ninety_days() -> None:
    settings = Settings(zoom_custcreate_hosts=frozenset({"api@b.co"}))
    assert start_url_expiry("https://zoom.us/s/1", 0.0, "API@b.co", settings) == CUSTCREATE_TTL_SECONDS


def test_the_zak_wins_over_the_custcreate_assumption() -> None:
    settings = Settings(zoom_custcreate_hosts=frozenset({"api@b.co"}))
    assert start_url_expiry(start_url_with_exp(5000), 0.0, "api@b.co", settings) == 5000
