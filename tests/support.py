"""Running meetbridge for tests: the web app over HTTP, real Celery workers and beat as processes, a real Redis,
and the simulators over HTTP. Nothing here mocks the service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from meetbridge.config import Settings
from sandbox import meetergo as meetergo_sim
from sandbox.server import RunningServer, Sandbox, serve
from webhooks import create_app

ROOT = Path(__file__).resolve().parent.parent


def _test_redis_url() -> str:
    """The Redis database the tests own (flushed by them): one per pytest-xdist worker, counting down."""
    base = urlsplit(os.environ.get("MEETBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    database = int(base.path.lstrip("/") or 0) - worker
    if database < 0:
        raise RuntimeError("too many test workers for the Redis databases below MEETBRIDGE_TEST_REDIS_URL's")
    return urlunsplit(base._replace(path=f"/{database}"))


REDIS_URL = _test_redis_url()
WEBHOOK_TOKEN = "test-webhook-token-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-0123456789abcdef"
T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, message: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with `message` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")


class Sims:
    """The simulators' control API (`/_sandbox`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(timeout=10)

    def url(self, name: str) -> str:
        return getattr(self.sandbox, name).url

    def reset(self) -> None:
        for name in ("zoom", "neetocal", "meetergo"):
            self.http.post(f"{self.url(name)}/_sandbox/reset").raise_for_status()

    def configure(self, name: str, **values: Any) -> dict[str, Any]:
        response = self.http.patch(f"{self.url(name)}/_sandbox/config", json=values)
        response.raise_for_status()
        return response.json()

    def get(self, name: str, what: str) -> Any:
        response = self.http.get(f"{self.url(name)}/_sandbox/{what}")
        response.raise_for_status()
        return response.json()

    def post(self, name: str, what: str, body: Any) -> Any:
        response = self.http.post(f"{self.url(name)}/_sandbox/{what}", json=body)
        response.raise_for_status()
        return response.json()

    def requests(self, name: str) -> list[dict[str, Any]]:
        return self.get(name, "requests")["requests"]

    def calls(self, name: str, method: str, path_part: str) -> list[dict[str, Any]]:
        return [r for r in self.requests(name) if r["method"] == method and path_part in r["path"]]

    def zoom_meetings(self, live_only: bool = True) -> list[dict[str, Any]]:
        meetings = self.get("zoom", "meetings")["meetings"]
        return [m for m in meetings if not (live_only and m.get("deleted"))]

    def neetocal_bookings(self, live_only: bool = True) -> list[dict[str, Any]]:
        bookings = self.get("neetocal", "bookings")["bookings"]
        return [b for b in bookings if not (live_only and b.get("status") == "cancelled")]


# NeetoCal API versions the flow tests run against (v2 the default, v1 deprecated but served).
NEETOCAL_VERSIONS = ("v2", "v1")
# Routes v2 does not have ("Older v1-only routes for those actions are not available in v2").
NEETOCAL_V1_ONLY = (("POST", "/cancel"), ("POST", "/availability"), ("GET", "/meeting_templates"))


def neetocal_env(sims: Sims, version: str) -> dict[str, str]:
    """The environment that points a stack at the NeetoCal simulator's `version` API."""
    return {"NEETOCAL_API_URL": f"{sims.url('neetocal')}/api/external/{version}"}


def assert_neetocal_calls_fit(sims: Sims, version: str) -> None:
    """Every NeetoCal call went to `version`; on v2 none was a v1-only route and each was answered 2xx."""
    calls = sims.requests("neetocal")
    assert calls, "no NeetoCal call was made"
    for call in calls:
        assert call["path"].startswith(f"/api/external/{version}/"), call
        if version == "v2":
            assert not any(call["method"] == m and call["path"].endswith(end) for m, end in NEETOCAL_V1_ONLY), call
            assert call["status"] is not None and 200 <= call["status"] < 300, call


def neetocal_writes(sims: Sims) -> dict[str, int]:
    """NeetoCal bookings made, moved and cancelled (answered calls), on v1 or v2: v2 cancels by updating the
    booking's status, v1 by `POST …/cancel`."""
    counts = {"neetocal_book": 0, "neetocal_reschedule": 0, "neetocal_cancel": 0}
    for call in sims.requests("neetocal"):
        if not call["status"] or call["status"] >= 400 or "/bookings" not in call["path"]:
            continue
        body = call["json"] or {}
        if call["method"] == "POST" and call["path"].endswith("/bookings"):
            counts["neetocal_book"] += 1
        elif call["method"] == "POST" and call["path"].endswith("/cancel"):
            counts["neetocal_cancel"] += 1
        elif call["method"] in ("PATCH", "PUT") and "/bookings/" in call["path"]:
            counts["neetocal_cancel" if body.get("status") == "cancelled" else "neetocal_reschedule"] += 1
    return counts


def service_env(sandbox: Sandbox, redis_url: str, **overrides: Any) -> dict[str, str]:
    """The environment of a meetbridge process pointed at the simulators."""
    env = {
        "REDIS_URL": redis_url,
        "MEETERGO_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "PUBLIC_URL": "https://meetbridge.test",
        "HTTP_TIMEOUT_SECONDS": "3",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        **{k: v for k, v in sandbox.env.items() if k not in ("MEETERGO_API_KEY", "MEETERGO_API_USER_ID")},
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    """One meetbridge deployment: web (in this process, over HTTP), workers and beat (processes)."""

    env: dict[str, str]
    log_dir: Path
    web_url: str | None = None
    web_server: RunningServer | None = None
    processes: list[Process] = field(default_factory=list)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def start_web(self) -> str:
        """The web app in this process, served over real HTTP."""
        self.web_server = serve(create_app(self.settings))
        self.web_url = self.web_server.url
        return self.web_url

    def start_web_process(self) -> Process:
        """The web as the Procfile runs it (gunicorn with its config), for what only gunicorn does (access log)."""
        port = free_port()
        self.env["PORT"] = str(port)
        process = self._spawn("web", ["bash", "-c", f"exec {procfile()['web']}"],
                              {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])})
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return self.http.get(f"{url}/readyz").status_code == 200
            except httpx.HTTPError:
                return process.popen.poll() is not None

        wait_until(ready, timeout=30, message="gunicorn to answer")
        assert process.popen.poll() is None, process.log()
        self.web_url = url
        return process

    def start_worker(self, concurrency: int = 8, name: str | None = None, **extra_env: Any) -> Process:
        name = name or f"worker{len(self.processes)}"
        args = [sys.executable, "-m", "celery", "--app", "workers.celery_app", "worker", "--pool", "threads",
                "--concurrency", str(concurrency), "--queues", "meetbridge", "--hostname", f"{name}@%h",
                "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
        process = self._spawn(name, args, extra_env)
        wait_until(lambda: "ready" in process.log() or process.popen.poll() is not None, timeout=30,
                   message=f"{name} to start")
        assert process.popen.poll() is None, f"{name} exited:\n{process.log()[-3000:]}"
        return process

    def start_beat(self, name: str | None = None, **extra_env: Any) -> Process:
        name = name or f"beat{len(self.processes)}"
        args = [sys.executable, "-m", "celery", "--app", "workers.celery_app", "beat", "--loglevel", "INFO"]
        return self._spawn(name, args, extra_env)

    def _spawn(self, name: str, args: list[str], extra_env: dict[str, Any]) -> Process:
        env = {**os.environ, **self.env, **{k: str(v) for k, v in extra_env.items()}}
        log_path = self.log_dir / f"{name}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.web_server is not None:
            self.web_server.stop()
        self.http.close()

    # --- talking to it -----------------------------------------------------------------------------------
    def deliver(self, payload: dict[str, Any], token: str = WEBHOOK_TOKEN) -> httpx.Response:
        assert self.web_url is not None
        return self.http.post(f"{self.web_url}/webhooks/meetergo", params={"token": token}, json=payload)

    def appointment(self, appointment_id: str) -> dict[str, Any] | None:
        assert self.web_url is not None
        response = self.http.get(f"{self.web_url}/api/appointments/{appointment_id}",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def wait_for_status(self, appointment_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            view = self.appointment(appointment_id)
            return view if view and view["status"] == status else None

        try:
            return wait_until(reached, timeout=timeout, message=f"{appointment_id} to become {status}")
        except AssertionError as error:
            raise AssertionError(f"{error}\nview: {self.appointment(appointment_id)}\n"
                                 f"logs:\n{self.logs()[-4000:]}") from None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.processes)


def procfile() -> dict[str, str]:
    from meetbridge.dev import procfile as read

    return read()


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now, and never one this process handed out before: a Sentinel cluster
    picks all its ports before any of its servers binds one, and the kernel may offer a port it just offered."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def _serves(port: int, pid: int) -> bool:
    """The process answering on `port` is `pid` (and not a server another test started on a port it was also
    offered)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        return int(client.info("server")["process_id"]) == pid
    except redis.RedisError:
        return False
    finally:
        client.close()


def _started(popen: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the server just spawned answers on `port`; False once it exited (the port was taken)."""
    wait_until(lambda: popen.poll() is not None or _serves(port, popen.pid), timeout=10,
               message=f"redis-server on {port} to answer or exit")
    return popen.poll() is None


class RedisServer:
    """A Redis of the test's own (with AOF), so a test can stop and restart it."""

    def __init__(self, directory: Path, appendonly: bool = True, appendfsync: str = "everysec",
                 replica_of: int | None = None) -> None:
        # everysec, as the README tells operators to run it: a crash may lose the last second of writes.
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.replica_of = replica_of
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.popen = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                 "--save", "", "--maxmemory-policy", "noeviction",
                 *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            if _started(self.popen, self.port):
                return
            self.port = free_port()  # another process bound it first: this server exited
        raise AssertionError("redis-server did not start on any of three ports")

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(timeout=10)

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)


class SentinelCluster:
    """One primary, replicas and sentinels on localhost, as a Sentinel deployment runs them (short timeouts)."""

    MASTER = "mymaster"

    def __init__(self, directory: Path, replicas: int = 2, sentinels: int = 3) -> None:
        self.directory = directory
        self.primary = RedisServer(directory / "primary")
        self.replicas = [RedisServer(directory / f"replica{n}", replica_of=self.primary.port) for n in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # a cluster that never came up leaves no servers behind
            raise

    def _start(self) -> None:
        import redis

        self.primary.start()
        for replica in self.replicas:
            replica.replica_of = self.primary.port  # the primary's port, had it to pick another one
            replica.start()
        for n in range(len(self.sentinel_ports)):
            self.sentinels.append(self._start_sentinel(n))

        def ready() -> bool:
            try:
                primary = redis.Redis(port=self.primary.port)
                primary.set("replication-probe", time.time())
                replicas = primary.wait(len(self.replicas), 1000)
                seen = [redis.Redis(port=port).sentinel_master(self.MASTER) for port in self.sentinel_ports]
                return replicas == len(self.replicas) and all(m["num-other-sentinels"] == len(seen) - 1 for m in seen)
            except redis.RedisError:
                return False

        wait_until(ready, timeout=30, message="replicas and sentinels to see each other")

    def _start_sentinel(self, n: int) -> subprocess.Popen[bytes]:
        for _ in range(3):
            port = self.sentinel_ports[n]
            config = self.directory / f"sentinel{n}.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor {self.MASTER} 127.0.0.1 "
                              f"{self.primary.port} 2\nsentinel down-after-milliseconds {self.MASTER} 1000\n"
                              f"sentinel failover-timeout {self.MASTER} 4000\n"
                              f"sentinel parallel-syncs {self.MASTER} 1\n")
            popen = subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
            if _started(popen, port):
                return popen
            self.sentinel_ports[n] = free_port()  # another process bound it first: this sentinel exited
        raise AssertionError("redis-server --sentinel did not start on any of three ports")

    def current_primary_port(self) -> int:
        """The primary most sentinels name. One sentinel may still name the old primary for a moment after the
        others promoted a replica (each learns of the new configuration in its own time)."""
        import redis

        named = [int(redis.Redis(port=port).sentinel_get_master_addr_by_name(self.MASTER)[1])
                 for port in self.sentinel_ports]
        return max(set(named), key=named.count)

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        for server in [self.primary, *self.replicas]:
            server.stop()


def future_start(days: int = 3, hour: int = 10, minute: int = 0) -> datetime:
    moment = datetime.now(UTC) + timedelta(days=days)
    return moment.replace(hour=hour, minute=minute, second=0, microsecond=0)


def appointment(days: int = 3, hour: int = 10, minute: int = 0, **kwargs: Any) -> dict[str, Any]:
    """A meetergo appointment in the future (the simulator's builder), updated a minute ago."""
    appt = meetergo_sim.make_appointment(future_start(days, hour, minute), **kwargs)
    appt["updatedAt"] = appt["createdAt"] = _iso(datetime.now(UTC) - timedelta(minutes=1))
    return appt


def moved(appt: dict[str, Any], start: datetime, minutes: int = 30, seconds_later: int = 1,
          **changes: Any) -> dict[str, Any]:
    """The appointment after a reschedule in meetergo (its timestamps strictly later)."""
    at = datetime.fromisoformat(appt["updatedAt"].replace("Z", "+00:00")) + timedelta(seconds=seconds_later)
    return {**appt, "start": start.isoformat(), "end": (start + timedelta(minutes=minutes)).isoformat(),
            "updatedAt": _iso(at), "rescheduledAt": _iso(at), **changes}


def cancelled_payload(appt: dict[str, Any], seconds_later: int = 1, shape: str = "webhook",
                      reason: str = "Something came up", at: datetime | None = None) -> dict[str, Any]:
    """The booking_cancelled delivery, dated `seconds_later` than the appointment's last change (or `at`)."""
    at = at or datetime.fromisoformat(appt["updatedAt"].replace("Z", "+00:00")) + timedelta(seconds=seconds_later)
    later = {**appt, "updatedAt": _iso(at), "cancel": {"cancelledAt": _iso(at), "cancelledBy": "attendee",
                                                       "reason": reason}}
    return meetergo_sim.booking_cancelled(later, shape=shape)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`meetbridge doctor` with a stack's environment."""
    return subprocess.run([sys.executable, "-m", "meetbridge.cli", "doctor"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def metric(stack: Stack, name: str) -> float:
    """One unlabelled series of the stack's /metrics (0 when absent)."""
    for line in stack.http.get(f"{stack.web_url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


FIXTURES = ROOT / "tests" / "fixtures" / "meetergo"


def meetergo_fixture(name: str) -> dict[str, Any]:
    """A recorded meetergo delivery (tests/fixtures/meetergo/<name>.json)."""
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def check_webhook(stack: Stack, fixture: str | dict[str, Any], status: int) -> dict[str, Any]:
    """Deliver a fixture (by name) or a body to the stack's webhook; assert the answer's status; its JSON."""
    body = meetergo_fixture(fixture) if isinstance(fixture, str) else fixture
    response = stack.deliver(body)
    assert response.status_code == status, response.text
    return dict(response.json()) if response.content else {}


def meeting_made_by_meetergo(stack: Stack, host: str = "john@example.com") -> Any:
    """A Zoom meeting as meetergo's own Zoom integration makes it, in the same Zoom account (a ZoomMeeting)."""
    from schemas.zoom import MeetingSpec
    from workers.wiring import build_services

    services = build_services(stack.settings)
    try:
        return services.zoom.create_meeting(host, MeetingSpec(
            topic="Discovery Call", start_time=datetime.now(UTC) + timedelta(days=3), duration=30, timezone="UTC",
            agenda="made by meetergo"))
    finally:
        services.close()
