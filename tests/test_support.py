"""The test support's own servers: each one is the process the test started, on a port of its own."""

from __future__ import annotations

import socket

import redis

from tests.support import RedisServer, free_port


def test_ports_are_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_redis_server_whose_port_another_process_took_starts_on_another(tmp_path) -> None:
    server = RedisServer(tmp_path / "redis")
    with socket.socket() as taken:  # between picking the port and binding it, someone else listens there
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        server.start()
        try:
            assert server.port != taken.getsockname()[1]
            assert int(redis.Redis(port=server.port).info("server")["process_id"]) == server.popen.pid
        finally:
            server.stop()
