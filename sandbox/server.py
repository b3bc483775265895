"""Run simulators on real sockets: one at a time (`serve`) or all three with their env lines (`start_all`)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox import meetergo, neetocal, zoom


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line (the request log is in /_sandbox)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class RunningServer:
    url: str
    port: int
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(app: Flask, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = False) -> RunningServer:
    """Serve `app` from a daemon thread; port 0 picks a free port. Returns once the socket listens."""
    handler = WSGIRequestHandler if log_requests else _QuietHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    # A short poll interval keeps stop() quick (shutdown waits for the serving loop to notice).
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sandbox-{app.name}", daemon=True
    )
    thread.start()
    url_host = f"[{host}]" if ":" in host else host
    return RunningServer(
        url=f"http://{url_host}:{server.port}", port=server.port, _server=server, _thread=thread
    )


@dataclass
class Sandbox:
    zoom: RunningServer
    neetocal: RunningServer
    meetergo: RunningServer
    env: dict[str, str]

    def stop(self) -> None:
        for server in (self.zoom, self.neetocal, self.meetergo):
            server.stop()


def start_all(
    host: str = "127.0.0.1", ports: Mapping[str, int] | None = None, *, log_requests: bool = False
) -> Sandbox:
    """Start all three simulators. `ports` maps "zoom" / "neetocal" / "meetergo" to a port (missing: free)."""
    chosen = dict(ports or {})
    unknown = set(chosen) - {"zoom", "neetocal", "meetergo"}
    if unknown:
        raise ValueError(f"unknown simulator(s) in ports: {sorted(unknown)}")
    started: list[RunningServer] = []
    try:
        for name, module in (("zoom", zoom), ("neetocal", neetocal), ("meetergo", meetergo)):
            started.append(serve(module.create_app(), host, chosen.get(name, 0), log_requests=log_requests))
    except BaseException:
        for server in started:
            server.stop()
        raise
    zoom_server, neetocal_server, meetergo_server = started
    return Sandbox(
        zoom=zoom_server,
        neetocal=neetocal_server,
        meetergo=meetergo_server,
        env=service_env(zoom_server.url, neetocal_server.url, meetergo_server.url),
    )


def service_env(zoom_url: str, neetocal_url: str, meetergo_url: str) -> dict[str, str]:
    """The environment a meetbridge process needs to talk to simulators at these base URLs."""
    return {
        "ZOOM_API_URL": f"{zoom_url}/v2",
        "ZOOM_OAUTH_URL": f"{zoom_url}/oauth/token",
        "ZOOM_ACCOUNT_ID": zoom.DEFAULT_ACCOUNT_ID,
        "ZOOM_CLIENT_ID": zoom.DEFAULT_CLIENT_ID,
        "ZOOM_CLIENT_SECRET": zoom.DEFAULT_CLIENT_SECRET,
        "NEETOCAL_API_URL": f"{neetocal_url}/api/external/v2",  # v2, the current API (v1 is served too)
        "NEETOCAL_API_KEY": neetocal.DEFAULT_API_KEY,
        # meetergo serves REST under /v4 and webhook management under /webhooks: the base is the root.
        "MEETERGO_API_URL": meetergo_url,
        "MEETERGO_API_KEY": meetergo.DEFAULT_API_KEY,
        # The simulator's start_urls live on its own domain; the host link redirects only to allowed ones.
        "ZOOM_START_URL_DOMAINS": zoom.PUBLIC_URL.removeprefix("https://"),
    }
