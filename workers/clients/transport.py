"""The API clients' httpx transport: HTTP/1.1 over the standard library's http.client, kept-alive connections pooled.

Why not httpx's default (httpcore): under a worker's concurrency its connection pool and h11's state machine cost
more than the rest of a call. In `bench/pipeline` (Business, 50 hosts) httpcore held a fifth of the worker's CPU
per booking, and this transport brought the whole worker to 0.81-0.86 of it, same run (BENCHMARKS.md, #11).
The clients keep speaking httpx (its requests, responses, timeouts and errors); only the bytes on the wire go
through http.client, which is what urllib3 and requests build on.

What httpx's default does and this one does not: proxies from the environment (`default_transport` leaves httpx's
own in place when one is set), HTTP/2 (no API here needs it), skipping an informational answer other than
`100 Continue` (103 Early Hints), and reading the answer a server sent before it stopped reading a request (these
APIs take small JSON bodies).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}
# At most this many idle connections per origin (httpx's default keeps as many in all), each reused within this many
# seconds of its last answer, as httpx's (a server closes idle ones on its own schedule; an old one is more likely
# closing as we send). Older ones are closed whenever the origin's pool is looked at.
MAX_IDLE_PER_ORIGIN = 20
KEEPALIVE_EXPIRY_SECONDS = 5.0

Origin = tuple[str, str, int]


def default_transport() -> httpx.BaseTransport | None:
    """This transport, or None (httpx's default) where the environment names a proxy: httpx honours those."""
    proxies = urllib.request.getproxies()
    if any(scheme in proxies for scheme in ("http", "https", "all")):
        return None
    return PooledTransport()


class PooledTransport(httpx.BaseTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
                 keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS) -> None:
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._max_idle = max_idle_per_origin
        self._expiry = keepalive_expiry
        self._idle: dict[Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        origin = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.read()
        connection = self._idle_connection(origin) or self._connect(origin, timeouts.get("connect"), request)
        answer: http.client.HTTPResponse | None = None
        try:
            answer = self._exchange(connection, request, body, timeouts)
            with _reading(request):
                content = answer.read()
        except BaseException:
            if answer is not None:
                answer.close()  # an answer that ends with the connection holds the socket itself
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._keep(origin, connection)
        return httpx.Response(
            answer.status,
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.msg.items()],
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1" if answer.version == 11 else b"HTTP/1.0",
                        "reason_phrase": answer.reason.encode("ascii", "replace")},
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, {}, True
        for connections in idle.values():
            for connection, _ in connections:
                connection.close()

    # --- connections -------------------------------------------------------------------------------------
    def _idle_connection(self, origin: Origin) -> http.client.HTTPConnection | None:
        """The most recently used idle connection that is still open: not readable (a server that closed it has
        sent its end of file; one that sent anything unasked is not to be trusted either). Expired ones go."""
        fresh_since = time.monotonic() - self._expiry
        with self._lock:
            connections = self._idle.get(origin, [])
            expired = [connection for connection, idle_since in connections if idle_since <= fresh_since]
            connections[:] = [(connection, idle_since) for connection, idle_since in connections
                              if idle_since > fresh_since]
        for connection in expired:
            connection.close()
        while True:
            with self._lock:
                if not connections:
                    return None
                connection, _ = connections.pop()
            if connection.sock is not None and not _readable(connection.sock):
                return connection
            connection.close()

    def _keep(self, origin: Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            connections = self._idle.setdefault(origin, [])
            if len(connections) < self._max_idle and not self._closed:
                connections.append((connection, time.monotonic()))
                return
        connection.close()

    def _connect(self, origin: Origin, timeout: float | None, request: httpx.Request) -> http.client.HTTPConnection:
        scheme, host, port = origin
        connection = (http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context)
                      if scheme == "https" else http.client.HTTPConnection(host, port, timeout=timeout))
        try:
            connection.connect()
        except TimeoutError as error:
            connection.close()
            raise httpx.ConnectTimeout(str(error) or "timed out connecting", request=request) from error
        except OSError as error:  # refused, unreachable, name not resolved, TLS refused (ssl.SSLError)
            connection.close()
            raise httpx.ConnectError(str(error), request=request) from error
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    @staticmethod
    def _exchange(connection: http.client.HTTPConnection, request: httpx.Request, body: bytes,
                  timeouts: dict[str, float | None]) -> http.client.HTTPResponse:
        """Send the request and read the answer's head."""
        sock = connection.sock
        assert sock is not None
        chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"  # a body httpx streams
        try:
            sock.settimeout(timeouts.get("write"))
            try:
                connection.putrequest(request.method, request.url.raw_path.decode("ascii"), skip_host=True,
                                      skip_accept_encoding=True)
                for name, value in request.headers.raw:  # httpx's: Host, Accept-Encoding, Content-Length among them
                    connection.putheader(name, value)
            except (ValueError, http.client.HTTPException):
                # A control character in a header or the path. Not the message: it quotes the value, a token maybe.
                raise httpx.LocalProtocolError("invalid request line or header", request=request) from None
            connection.endheaders(body if chunked else body or None, encode_chunked=chunked)
        except TimeoutError as error:
            raise httpx.WriteTimeout(str(error) or "timed out sending", request=request) from error
        except OSError as error:
            raise httpx.WriteError(str(error), request=request) from error
        sock.settimeout(timeouts.get("read"))
        with _reading(request):
            return connection.getresponse()


@contextmanager
def _reading(request: httpx.Request) -> Iterator[None]:
    """http.client's failures while reading an answer, as httpx's."""
    try:
        yield
    except TimeoutError as error:
        raise httpx.ReadTimeout(str(error) or "timed out reading", request=request) from error
    except http.client.RemoteDisconnected as error:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request) from error
    except http.client.HTTPException as error:  # a malformed status line or header, a body cut short
        raise httpx.RemoteProtocolError(f"{type(error).__name__}: {error}", request=request) from error
    except OSError as error:
        raise httpx.ReadError(str(error), request=request) from error


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))

