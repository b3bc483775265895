"""The API clients' transport (workers/clients/transport.py) against a real HTTP server on localhost: connections
kept and let go as they should be, and every failure as the httpx error the clients map."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from workers.clients.transport import PooledTransport, default_transport


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def do_GET(self) -> None:
        self.answer()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            self.answer(body)
        else:
            self.answer(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, body: bytes = b"") -> None:
        path = self.path.partition("?")[0]
        if path == "/drop":  # the connection closed with no answer
            self.close_connection = True
            return
        if path == "/slow":
            time.sleep(1)
        if path in ("/no-content", "/latin-1"):
            self.send_response(204)
            self.send_header("X-Name", "café" if path == "/latin-1" else "none")  # sent as latin-1: one byte over 127
            self.end_headers()
            return
        if path == "/cut-short":  # an answer that ends with its connection, stalled partway through its body
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            time.sleep(1)
            self.close_connection = True
            return
        if path == "/gzip-chunked":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Set-Cookie", "a=1")
            self.send_header("Set-Cookie", "b=2")
            self.end_headers()
            packed = gzip.compress(b'{"chunked": true}')
            for part in (packed[:10], packed[10:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        echoed = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                             "host": self.headers["Host"], "auth": self.headers["Authorization"]}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(echoed)))
        self.end_headers()
        self.wfile.write(echoed)
        # The server lets the connection go after answering, without saying so (no `Connection: close`), as a
        # server whose idle timeout strikes just then does.
        self.close_connection = path == "/then-close"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.connections = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def client(base: str, timeout: float = 5, **options: float) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=timeout, transport=PooledTransport(**options))


def test_requests_share_one_kept_alive_connection_and_carry_httpx_headers_and_bodies(server: str) -> None:
    with client(server) as http:
        answers = [http.post("/meetings?page=2", json={"n": n}, headers={"Authorization": "Bearer t"})
                   for n in range(3)]
        answers.append(http.get("/meetings/1"))
    assert Handler.connections == 1
    assert [answer.status_code for answer in answers] == [201, 201, 201, 200]
    first = answers[0].json()
    assert first["method"] == "POST" and first["path"] == "/meetings?page=2"
    assert json.loads(first["body"]) == {"n": 0} and first["auth"] == "Bearer t"
    assert first["host"] == server.removeprefix("http://")
    assert answers[0].reason_phrase == "Created" and answers[0].http_version == "HTTP/1.1"


def test_threads_sharing_one_client_each_get_a_connection_of_their_own(server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with client(server) as http, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: http.post("/meetings", json={"n": n}).json(), range(320)))
    assert sorted(json.loads(answer["body"])["n"] for answer in answers) == list(range(320))
    assert Handler.connections <= 16


def test_a_connection_the_server_let_go_while_idle_is_not_reused(server: str) -> None:
    with client(server) as http:
        assert http.get("/then-close").status_code == 200
        time.sleep(0.1)  # the server's end of file has arrived
        # A POST is not repeated on a failure, so it must not be sent down a closed connection in the first place.
        assert http.post("/meetings", json={}).status_code == 201
    assert Handler.connections == 2


def test_a_connection_idle_past_the_keepalive_expiry_is_not_reused(server: str) -> None:
    with client(server, keepalive_expiry=0.05) as http:
        http.get("/ok")
        time.sleep(0.1)
        http.get("/ok")
    assert Handler.connections == 2


def test_a_chunked_gzipped_answer_is_decoded_with_its_repeated_headers(server: str) -> None:
    with client(server) as http:
        answer = http.get("/gzip-chunked")
    assert answer.json() == {"chunked": True}
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]


def test_bodiless_answers_streamed_bodies_and_header_bytes_over_127(server: str) -> None:
    with client(server) as http:
        assert http.head("/ok").headers["content-length"] == "1234"
        assert http.get("/no-content").status_code == 204
        assert http.get("/latin-1").headers["x-name"] == "café"
        streamed = http.post("/meetings", content=iter([b"hel", b"lo"]))
        assert streamed.json()["body"] == "hello"
        assert http.post("/meetings", content=iter([])).json()["body"] == ""
    assert Handler.connections == 1


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_an_answer_cut_short_leaves_no_socket_open(server: str) -> None:
    held = []  # the errors stay alive, as a retry's or a report's chained exceptions keep them
    with client(server, timeout=0.2) as http:
        http.get("/ok")
        before = open_descriptors()
        for _ in range(5):
            with pytest.raises(httpx.ReadTimeout) as raised:
                http.get("/cut-short")
            held.append(raised.value)
        time.sleep(1.2)  # the server's ends (this process's too) are closed once it has stalled its second
        assert open_descriptors() <= before


def test_an_invalid_header_is_refused_without_quoting_it(server: str) -> None:
    with client(server) as http, pytest.raises(httpx.LocalProtocolError) as raised:
        http.get("/ok", headers={"Authorization": "Bearer s3cret-token\n"})
    assert "s3cret" not in str(raised.value) and raised.value.__cause__ is None


def test_failures_are_httpx_errors(server: str) -> None:
    with client(server, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get("/slow")
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            http.post("/drop", json={})
        assert http.get("/ok").status_code == 200  # a failed connection is not kept
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with client(f"http://127.0.0.1:{port}") as http, pytest.raises(httpx.ConnectError):
        http.get("/ok")
    with client("http://no-such-host.invalid") as http, pytest.raises(httpx.ConnectError):
        http.get("/ok")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://localhost:{httpd.server_address[1]}", cert
    httpd.shutdown()
    httpd.server_close()


def test_https_verifies_the_servers_certificate(tls_server: tuple[str, Path]) -> None:
    base, cert = tls_server
    with client(base) as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        http.get("/ok")  # a self-signed certificate: refused by the default context (certifi's roots)
    trusting = ssl.create_default_context(cafile=str(cert))
    Handler.connections = 0
    with httpx.Client(base_url=base, transport=PooledTransport(ssl_context=trusting)) as http:
        assert [http.get("/ok").status_code for _ in range(3)] == [200, 200, 200]
    assert Handler.connections == 1  # kept alive over TLS too


def test_a_proxy_in_the_environment_keeps_httpxs_own_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(default_transport(), PooledTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert default_transport() is None
