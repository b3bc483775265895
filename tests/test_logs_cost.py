"""`redact` skips the patterns whose literals a line lacks (issue 11): the same output as running every pattern,
whatever the letters."""

from __future__ import annotations

import random
import re
import string

import pytest

from meetbridge import logs


def every_pattern(text: str) -> str:
    """`redact` as it was: every pattern over every line."""
    for secret in logs._known_secrets:
        if secret in text:
            text = text.replace(secret, logs.REDACTED)
    for pattern, replacement, _ in logs._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


LINES = [
    "synced: zoom meeting 123 and neetocal booking abc",
    "Task meetbridge.sync_appointment[6f1c] succeeded in 0.41s: 'synced'",
    "start https://zoom.us/s/123456789?zak=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln and more",
    "POST /webhooks/meetergo?token=abcdefghijklmnopqrstuvwxyz HTTP/1.1",
    "redirect to https://x.example/cb%3Ftoken%3Dsecretvalue%26a%3D1",
    "connecting to redis://user:hunter2@redis.internal:6379/0",
    "Authorization: Bearer abcdef123456 sent",
    '{"access_token": "tok-123456", "client_secret": "shh"}',
    "page at https://mb.example/hosts/abcDEF123.ics and /h/host-1/sig.nature",
    "key ak_live:abc123 and rgo-ABCDEFGHIJK and eyJabcdefg.hijklmnop.qrs",
    "api_key=12345 apikey=67890 SIGNATURE=zzz Secret: 42",
    # Letters IGNORECASE takes for ASCII ones: long s, dotless i, Kelvin sign, dotted capital I.
    "\u017fecret=abc \u017fignature=x",
    "?token=1 &s\u0131gnature=abc authorİzation: basic QWxhZGRpbjpvcGVu",
    "\u212aEY=abc x-api-\u212aey: 12345678",
    "PASSWORD=letmein Start_Url=https://zoom.us/s/1",
]


@pytest.mark.parametrize("line", LINES)
def test_redact_answers_as_every_pattern_would(line: str) -> None:
    assert logs.redact(line) == every_pattern(line)


def test_redact_answers_as_every_pattern_would_on_random_lines() -> None:
    pieces = ["token", "Token", "=", "?", "&", "%3F", "%26", "%3D", "://", "@", ":", "http", "https", "/s/1",
              "zak=", "/h/", "/hosts/", "bearer ", "Basic ", "eyJ", "ak_live:", "rgo-", "secret", "key", "api_key",
              "password", "start_url", "authorization", "signature", " ", '"', "'", "\u017f", "\u0131", "\u212a",
              "\u0130", "abcdefgh", "12345678", ".", "-", "_"]
    rng = random.Random(11)
    for _ in range(5000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        assert logs.redact(line) == every_pattern(line), line


def test_every_letter_ignorecase_takes_for_an_ascii_one_folds_to_it() -> None:
    any_letter = re.compile("(?i)[a-z]")
    for point in range(0x80, 0x110000):
        char = chr(point)
        if 0xD800 <= point < 0xE000 or not any_letter.fullmatch(char):
            continue
        for letter in string.ascii_lowercase:
            if re.fullmatch(f"(?i){letter}", char):
                assert letter in logs._folded(char), (hex(point), letter)
