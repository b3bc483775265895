"""`meetbridge dev`: the whole service on one machine, as the Procfile runs it.

Starts the simulators when no real Zoom/NeetoCal credentials are set, runs every Procfile process with the
same environment, and books a demo appointment through the meetergo simulator so it can be watched
flowing through to Zoom and NeetoCal.

The simulators (`sandbox/`) are not part of the installed service: they run from a source checkout with the dev
extra (`pip install -e '.[dev]'`; scripts/dev does it). Without them, `meetbridge dev` runs only against real
credentials and otherwise says what to install.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from meetbridge.config import ConfigError, Settings, is_dev_environment, load_dotenv

ROOT = Path(__file__).resolve().parent.parent
COLORS = {"web": "\033[36m", "worker": "\033[33m", "beat": "\033[35m"}
RESET = "\033[0m"


def say(message: str) -> None:
    print(f"\033[1m==> {message}{RESET}", flush=True)


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip():
            entries[name.strip()] = command.strip()
    return entries


class SimulatorsMissing(RuntimeError):
    """The simulators cannot be imported: not a source checkout, or the dev extra is not installed."""


def start_simulators() -> Any:
    """Start the API simulators (sandbox.server.start_all), from the source checkout this runner belongs to."""
    # An editable install maps only the service's own packages: the checkout's root holds the simulators.
    if (ROOT / "sandbox" / "__init__.py").is_file() and str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    try:
        from sandbox.server import start_all
    except ImportError as error:
        raise SimulatorsMissing(
            f"the API simulators are not installed ({error}). They run from a source checkout with the dev "
            "extra: pip install -e '.[dev]' (scripts/dev does it); or set real Zoom and NeetoCal credentials"
        ) from None
    return start_all()


def dev_environment(start_simulators: Callable[[], Any]) -> tuple[dict[str, str], Any]:
    """The environment the processes get: the caller's (and a .env file's), completed with development defaults."""
    os.environ.setdefault("MEETBRIDGE_ENV", "dev")  # the local runner is development by definition
    if is_dev_environment():
        load_dotenv()
    env = dict(os.environ)
    # The Procfile names gunicorn and celery: use the ones installed beside this Python.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PORT", "8000")
    env.setdefault("REDIS_URL", "redis://localhost:6379/0")
    # Random secrets strong enough for Settings (tokens >= 24, SECRET_KEY >= 32 characters); the prefix keeps a
    # random value from ever beginning like a placeholder (xxx..., todo...).
    env.setdefault("MEETERGO_WEBHOOK_TOKENS", "dev-webhook-" + secrets.token_urlsafe(24))
    env.setdefault("SECRET_KEY", "dev-secret-" + secrets.token_urlsafe(32))
    env.setdefault("ADMIN_TOKEN", "dev-admin-" + secrets.token_urlsafe(24))
    env.setdefault("LOG_FORMAT", "text")
    env.setdefault("WEB_CONCURRENCY", "1")
    env.setdefault("WORKER_CONCURRENCY", "4")
    env.setdefault("REFRESH_SWEEP_SECONDS", "10")
    settings = Settings.from_env(env)
    sandbox = None
    if not (settings.zoom_configured and settings.neetocal_configured):
        sandbox = start_simulators()
        env.update(sandbox.env)
    return env, sandbox


class Processes:
    """The Procfile's processes, their output prefixed with their name; all stopped together."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = process
        threading.Thread(target=self._pump, args=(name, process), daemon=True).start()

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        color = COLORS.get(name, "")
        assert process.stdout is not None
        with (self.log_dir / f"{name}.log").open("ab") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(f"{color}{name:>6} |{RESET} {line.decode(errors='replace')}")

    def exited(self) -> str | None:
        return next((name for name, p in self.running.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_ready(base_url: str, processes: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.exited():
            raise RuntimeError(f"{processes.exited()} exited while starting; see its output above")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the web process did not become ready at {base_url}")


def connect(env: dict[str, str]) -> None:
    """`meetbridge connect`, as an operator runs it after deploying: it registers the webhook in the meetergo
    simulator (PUBLIC_URL is http://localhost here, hence --allow-http) and checks the simulated Zoom and
    NeetoCal. Its checklist is shown; anything it cannot fix stops the demo."""
    say("meetbridge connect --allow-http")
    result = subprocess.run([sys.executable, "-m", "meetbridge.cli", "connect", "--allow-http"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    for line in (result.stdout + result.stderr).splitlines():
        say(f"  {line}")
    if result.returncode != 0:
        raise RuntimeError("meetbridge connect found something to fix (see above)")


def book_demo(env: dict[str, str]) -> str:
    """Book an appointment for tomorrow through meetergo's booking API, as a visitor would: meetergo then
    delivers booking_created to the webhook `connect` registered."""
    meetergo = httpx.Client(base_url=env["MEETERGO_API_URL"], timeout=10,
                            headers={"Authorization": f"Bearer {env['MEETERGO_API_KEY']}"})
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=14, minute=0, second=0, microsecond=0)
    booked = meetergo.post("/v4/booking", json={
        "meetingTypeId": "mt-uuid-456", "start": start.isoformat(), "hostIds": ["host-uuid-123"],
        "attendee": {"email": "demo.visitor@example.com", "firstname": "Demo", "lastname": "Visitor",
                     "timezone": "Europe/Berlin", "receiveReminders": False, "notes": {}},
    })
    booked.raise_for_status()
    return booked.json()["appointmentId"]


def show_deliveries(meetergo_url: str, appointment_id: str) -> None:
    """What the meetergo simulator delivered for the appointment, and where to (its log redacts the token)."""
    deliveries = httpx.get(f"{meetergo_url}/_sandbox/deliveries", timeout=5).json()["deliveries"]
    for delivery in deliveries:
        if delivery["appointment_id"] == appointment_id:
            say(f"meetergo delivered {delivery['webhookType']} to {delivery['endpoint']}: {delivery['status']}")


def follow(base_url: str, admin_token: str, appointment_id: str, timeout: float = 60) -> dict[str, Any]:
    """Print the appointment's history as it happens, until it is synced."""
    client = httpx.Client(base_url=base_url, timeout=5, headers={"Authorization": f"Bearer {admin_token}"})
    shown = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/appointments/{appointment_id}")
        if response.status_code == 200:
            view = response.json()
            for entry in view["history"][shown:]:
                say(f"  {entry['at']}  {entry['event']}: {entry['detail']}")
            shown = len(view["history"])
            if view["status"] in ("synced", "failed"):
                return view
        time.sleep(0.3)
    raise RuntimeError(f"the demo appointment did not sync within {timeout:.0f}s")


def run(demo: bool = True, exit_after_demo: bool = False) -> int:
    try:
        env, sandbox = dev_environment(start_simulators)
    # e.g. a weak SECRET_KEY in the caller's environment (every process would refuse it), or no simulators
    except (ConfigError, SimulatorsMissing) as error:
        say(f"error: {error}")
        return 1
    base_url = f"http://127.0.0.1:{env['PORT']}"
    if sandbox:
        say(f"No real Zoom/NeetoCal credentials: simulators at {sandbox.zoom.url} (Zoom), "
            f"{sandbox.neetocal.url} (NeetoCal), {sandbox.meetergo.url} (meetergo)")
    processes = Processes(env, ROOT / "var" / "log")
    try:
        for name, command in procfile().items():
            say(f"starting {name}: {command}")
            processes.start(name, command)
        wait_ready(base_url, processes)
        say(f"meetbridge is up at {base_url}  (admin token: {env['ADMIN_TOKEN']})")
        if sandbox:
            connect(env)
        if demo and sandbox:
            appointment_id = book_demo(env)
            say(f"booked demo appointment {appointment_id} in the meetergo simulator; following it:")
            view = follow(base_url, env["ADMIN_TOKEN"], appointment_id)
            show_deliveries(env["MEETERGO_API_URL"], appointment_id)
            say(f"demo appointment is {view['status']}: Zoom meeting {view['zoom']['meeting_id']}, "
                f"NeetoCal booking {view['neetocal']['booking_sid']}")
            say(f"host link: {view['host_link']}")
            say(f"see it all: curl -H 'Authorization: Bearer {env['ADMIN_TOKEN']}' "
                f"{base_url}/api/appointments/{appointment_id}")
            if exit_after_demo:
                return 0 if view["status"] == "synced" else 1
        say("running; Ctrl-C stops everything")
        while not processes.exited():
            time.sleep(0.5)
        say(f"{processes.exited()} exited; stopping")
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as error:
        say(f"error: {error}")
        return 1
    finally:
        processes.stop()
        if sandbox:
            sandbox.stop()


if __name__ == "__main__":
    sys.exit(run())

