"""Issue 9: an early refusal leaves the connection clean.

A reverse proxy keeps its connections to the web open and sends the next delivery on whichever one is free. So a
refusal (401, 413, 415) answered before the body is read must leave the connection where the next request starts:
either the body is read (and dropped) first, or the answer says `Connection: close` and the server closes it.
Answering `keep-alive` and then closing, or reading the next request out of the rest of the body, loses the next
delivery. gunicorn is run as the Procfile runs it, and spoken to over a raw socket: nothing retries or reconnects
behind the test's back.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import REDIS_URL, WEBHOOK_TOKEN, Stack, appointment, service_env

WRONG_TOKEN = "wrong-token-0123456789abcdef"
MB = 1024 * 1024
TOO_LARGE = {"error": "body is larger than 256 KiB"}


@pytest.fixture(scope="module")
def web(sandbox, tmp_path_factory) -> Iterator[Stack]:
    """One gunicorn for the module, no worker (what is queued stays queued)."""
    stack = Stack(env=service_env(sandbox, REDIS_URL), log_dir=tmp_path_factory.mktemp("gunicorn"))
    try:
        stack.start_web_process()
        yield stack
    finally:
        stack.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    send_error: OSError | None = None

    def json(self) -> object:
        return json.loads(self.body)


class Connection:
    """One HTTP/1.1 connection, used for as many requests as it can carry."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.reader = self.sock.makefile("rb")

    def post(self, token: str, body: bytes, content_type: str = "application/json",
             chunked: bool = False) -> Reply:
        head = [f"POST /webhooks/meetergo?token={token} HTTP/1.1", "Host: meetbridge.test",
                f"Content-Type: {content_type}"]
        if chunked:
            head.append("Transfer-Encoding: chunked")
            step = 64 * 1024
            payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                               for i in range(0, len(body), step)) + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {len(body)}")
            payload = body
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        # The server may answer before it has read the body: send it from a thread, read the answer meanwhile.
        errors: list[OSError] = []

        def send() -> None:
            try:
                self.sock.sendall(request)
            except OSError as error:  # the server closed the connection without reading everything
                errors.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            reply = self._read_reply()
        finally:
            sender.join(timeout=20)
        reply.send_error = errors[0] if errors else None
        return reply

    def _read_reply(self) -> Reply:
        status_line = self.reader.readline()
        assert status_line, "the server closed the connection without answering"
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, value = line.decode("latin-1").split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = self.reader.read(int(headers.get("content-length", "0")))
        return Reply(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def connect(web: Stack) -> Iterator[Callable[[], Connection]]:
    opened: list[Connection] = []

    def open_one() -> Connection:
        opened.append(Connection(int(web.env["PORT"])))
        return opened[-1]

    yield open_one
    for connection in opened:
        connection.close()


def json_body(size: int) -> bytes:
    """A JSON document of about `size` bytes."""
    return json.dumps({"webhookType": "booking_created", "padding": "x" * size}).encode()


UNSUPPORTED = {"error": "send the delivery as application/json", "details": {"content_type": "text/plain"}}
UNAUTHORIZED = {"error": "missing or wrong token"}
# name: (token, body, content type, chunked, status, answer, whether the connection stays open)
CASES = {
    "401, body within the limit": (WRONG_TOKEN, json_body(200_000), "application/json", False, 401, UNAUTHORIZED,
                                   True),
    "401, 3 MB body": (WRONG_TOKEN, json_body(3 * MB), "application/json", False, 401, UNAUTHORIZED, False),
    "401, 3 MB chunked body": (WRONG_TOKEN, json_body(3 * MB), "application/json", True, 401, UNAUTHORIZED, False),
    "413, 3 MB body": (WEBHOOK_TOKEN, json_body(3 * MB), "application/json", False, 413, TOO_LARGE, False),
    "413, 3 MB chunked body": (WEBHOOK_TOKEN, json_body(3 * MB), "application/json", True, 413, TOO_LARGE, False),
    "415, body within the limit": (WEBHOOK_TOKEN, b"x" * 200_000, "text/plain", False, 415, UNSUPPORTED, True),
    "415, chunked body within the limit": (WEBHOOK_TOKEN, b"x" * 200_000, "text/plain", True, 415, UNSUPPORTED,
                                           True),
    # Small bodies: gunicorn itself drains up to 64 KiB; they must stay as good as they were.
    "401, small body": (WRONG_TOKEN, json_body(100), "application/json", False, 401, UNAUTHORIZED, True),
    "415, small body": (WEBHOOK_TOKEN, b"hello", "text/plain", False, 415, UNSUPPORTED, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_after_a_refusal_the_next_delivery_is_accepted(connect, redis_client: redis.Redis, case: str) -> None:
    token, body, content_type, chunked, status, answer, stays_open = CASES[case]
    connection = connect()

    refused = connection.post(token, body, content_type, chunked=chunked)
    assert (refused.status, refused.json()) == (status, answer)
    assert redis_client.llen("meetbridge") == 0
    if stays_open:
        # The body was read: the connection can carry the next delivery, and says so.
        assert refused.headers["connection"] == "keep-alive"
        assert refused.send_error is None
    else:
        # Not worth reading: the answer says the connection closes, and the server does close it. A client
        # (a proxy's pool) takes a new one for the next request, as it must after `Connection: close`.
        assert refused.headers["connection"] == "close"
        assert connection.closed_by_server()
        connection = connect()

    appt = appointment()
    accepted = connection.post(WEBHOOK_TOKEN, json.dumps(meetergo_sim.booking_created(appt)).encode())
    assert (accepted.status, accepted.json()) == (202, {"status": "accepted", "appointment_id": appt["id"]})
    assert accepted.headers["connection"] == "keep-alive"
    assert redis_client.llen("meetbridge") == 1


def test_a_kept_connection_carries_refusals_and_deliveries_in_turn(connect, redis_client: redis.Redis) -> None:
    """The reported sequence, on one connection: refusals that keep it, each followed by a delivery."""
    connection = connect()
    for n in range(3):
        assert connection.post(WRONG_TOKEN, json_body(200_000)).status == 401
        assert connection.post(WEBHOOK_TOKEN, b"x" * 100_000, "text/plain", chunked=True).status == 415
        appt = appointment(hour=9 + n)
        accepted = connection.post(WEBHOOK_TOKEN, json.dumps(meetergo_sim.booking_created(appt)).encode())
        assert (accepted.status, accepted.json()["status"]) == (202, "accepted")
    assert redis_client.llen("meetbridge") == 3
