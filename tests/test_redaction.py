"""Issue 9: Redis URLs are printed with their password masked; percent-encoded ?token= values are redacted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meetbridge.logs import mask_url, redact
from tests.support import ROOT

PASSWORD = "s3cretpassw0rd"


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://user:s3cretpassw0rd@redis.internal:6379/0", "redis://user:***@redis.internal:6379/0"),
    ("redis://:s3cretpassw0rd@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ("rediss://default:s3cretpassw0rd@cache.example.com:6380/2", "rediss://default:***@cache.example.com:6380/2"),
    ("rediss://:s3cret%40passw0rd@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
    ("redis://:s3cret@passw0rd@host:6379/0", "redis://:***@host:6379/0"),  # an unencoded @ in it
    ("unix://:s3cretpassw0rd@/run/redis/redis.sock?db=3", "unix://:***@/run/redis/redis.sock?db=3"),
    ("redis://host:6379/0?password=s3cretpassw0rd&db=1", "redis://host:6379/0?password=***&db=1"),
    # Nothing to mask.
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://user@host:6379/0", "redis://user@host:6379/0"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(("line", "expected"), [
    ("connecting to redis://user:s3cretpassw0rd@redis.internal:6379/0 failed",
     "connecting to redis://user:***@redis.internal:6379/0 failed"),
    ("broker rediss://:s3cretpassw0rd@cache.example.com:6380/2, retrying",
     "broker rediss://:***@cache.example.com:6380/2, retrying"),
    ('{"broker_url": "redis://:s3cretpassw0rd@127.0.0.1:6379/0"}', '{"broker_url": "redis://:***@127.0.0.1:6379/0"}'),
    ("Cannot connect to redis://:s3cret@pass@host:6379//: refused",
     "Cannot connect to redis://:***@host:6379//: refused"),
    ("REDIS_URL=redis://:s3cretpassw0rd@host", "REDIS_URL=redis://:***@host"),
])
def test_a_redis_password_is_masked_in_a_log_line(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize("line", [
    "Connected to redis://localhost:6379/0 as celery@worker1",
    "GET http://127.0.0.1:8080/healthz 200 from ops@example.com",
    "worker1@host ready: redis://127.0.0.1:6379/13",
])
def test_urls_without_a_password_are_left_alone(line: str) -> None:
    assert redact(line) == line


SECRET = "Qz7/Wk9+Rv3=Hx5&Lm2%Np8 Ty4"  # every character quote() escapes


@pytest.mark.parametrize(("line", "expected"), [
    # Plain, as before; a value with %XX escapes is redacted whole.
    ('"POST /webhooks/meetergo?token=abcdef0123456789 HTTP/1.1" 202',
     '"POST /webhooks/meetergo?token=<redacted> HTTP/1.1" 202'),
    ("/webhooks/meetergo?token=ab%2Fcd%3D%3D0123456789&x=1", "/webhooks/meetergo?token=<redacted>&x=1"),
    ("/webhooks/meetergo?x=1&token=ab%2Fcd%2B0123", "/webhooks/meetergo?x=1&token=<redacted>"),
    # A URL inside a URL: the query string percent-encoded, once or twice, upper or lower case.
    ("next=https%3A%2F%2Fbridge.example.com%2Fwebhooks%2Fmeetergo%3Ftoken%3Dabc%2Fdef0123456789",
     "next=https%3A%2F%2Fbridge.example.com%2Fwebhooks%2Fmeetergo%3Ftoken%3D<redacted>"),
    ("url=%2Fwebhooks%2Fmeetergo%3fevent%3D1%26token%3dabcdef0123456789 sent",
     "url=%2Fwebhooks%2Fmeetergo%3fevent%3D1%26token%3d<redacted> sent"),
    ("u=%252Fwebhooks%253Ftoken%253Dabc%25252Fdef0123", "u=%252Fwebhooks%253Ftoken%253D<redacted>"),
    ("mixed %3Ftoken=abcdef0123 and ?token%3Dabcdef0123", "mixed %3Ftoken=<redacted> and ?token%3D<redacted>"),
    ("webhook https%3A%2F%2Fh%2Fw%3Fapi_key%3Dk%2B1%26signature%3Ds%2F2",
     "webhook https%3A%2F%2Fh%2Fw%3Fapi_key%3D<redacted>"),
])
def test_query_secrets_are_redacted_plain_and_percent_encoded(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_no_part_of_an_encoded_token_survives() -> None:
    from urllib.parse import quote

    url = f"https://bridge.example.com/webhooks/meetergo?token={quote(SECRET, safe='')}&x=1"
    for text in (url, quote(url, safe=""), quote(quote(url, safe=""), safe="")):
        redacted = redact(f"delivery to {text} failed")
        for fragment in ("Qz7", "Wk9", "Rv3", "Hx5", "Lm2", "Np8", "Ty4"):
            assert fragment not in redacted, redacted


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MEETBRIDGE_"))}
    return subprocess.run([sys.executable, "-m", "meetbridge.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**environment, **env}, timeout=60)


@pytest.mark.parametrize("command", [["doctor"], ["list", "--status", "failed"]])
def test_the_cli_masks_the_redis_password(command: list[str]) -> None:
    result = cli(*command, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:1/0")  # nothing listens there
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert PASSWORD not in output
    assert "redis://:***@127.0.0.1:1/0 does not answer" in output, output
