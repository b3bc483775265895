"""Shared by the bench scripts: the Procfile's commands as processes, the bench Redis DB, machine facts,
statistics, and rewriting one script's own section of BENCHMARKS.md.

Nothing here imports from tests/: the scripts build their processes and environments themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION_ORDER = ("ingest", "ingest_replicas", "worker_cost", "floors", "profile_worker", "pipeline",
                 "pipeline_business", "pipeline_free", "refresh", "recovery", "failover", "retention", "host_page")

WEBHOOK_TOKEN = "bench-webhook-token-0123456789"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
ADMIN_TOKEN = "bench-admin-token-0123456789"
# Knobs that would change what the Procfile's commands run with: the benches set them explicitly or not at all.
_SCALING_VARS = ("WEB_CONCURRENCY", "WEB_THREADS", "WORKER_CONCURRENCY", "GUNICORN_CMD_ARGS", "PORT")

T = TypeVar("T")


# --- the command line ------------------------------------------------------------------------------------
def command_line() -> str:
    """How this script was invoked, relative to the repository root (for the report)."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return " ".join([".venv/bin/python", str(script), *map(shlex.quote, sys.argv[1:])])


# --- waiting ---------------------------------------------------------------------------------------------
def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- processes -------------------------------------------------------------------------------------------
def procfile_command(kind: str) -> str:
    """The Procfile's command line for `kind` (web, worker, beat), unchanged."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == kind:
            return command.strip()
    raise KeyError(f"no {kind!r} process in the Procfile")


def process_env(**values: Any) -> dict[str, str]:
    """The inherited environment (less the scaling knobs), the venv first on PATH, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCALING_VARS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in values.items() if v is not None})
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and its live descendants (all their threads)."""
        return cpu_seconds(self.popen.pid)

    def children(self) -> list[int]:
        """The pids of its live child processes (a gunicorn arbiter's workers)."""
        return children(self.popen.pid)

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time so far of `pid` (all its threads) and, unless told not to, its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        if descendants:
            pending.extend(children(current))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / ticks, total / ticks


def spawn(name: str, command: str, env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Process:
    """Run `command` through sh (as a Procfile runner does) in its own process group, logging to a file.

    `cwd` other than the repository (a checkout of another commit, see `checkout`) is put first on PYTHONPATH, so
    the process runs that code with this venv's packages."""
    log_path = log_dir / f"{name}.log"
    handle = log_path.open("wb")
    if cwd != ROOT:
        env = {**env, "PYTHONPATH": str(cwd)}
    popen = subprocess.Popen(["sh", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=handle,
                             stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Process(name, popen, log_path)


def start_gunicorn(name: str, app: str, env: dict[str, str], log_dir: Path, timeout: float = 30,
                   cwd: Path = ROOT) -> Process:
    """The Procfile's web command with its app spec replaced by `app` (same config file, same settings)."""
    web = procfile_command("web")
    if "'webhooks:create_app()'" not in web:
        raise RuntimeError(f"unexpected Procfile web line: {web}")
    command = web.replace("'webhooks:create_app()'", shlex.quote(app))
    process = spawn(name, command, env, log_dir, cwd)
    port = int(env["PORT"])
    try:
        wait_until(lambda: port_open(port) or not process.alive(), timeout, what=f"{name} to listen")
        if not process.alive():
            raise RuntimeError(f"{name} exited:\n{process.log()[-3000:]}")
        # Every gunicorn worker booted (each logs "Booting worker"), not just the arbiter's socket.
        workers = int(env.get("WEB_CONCURRENCY", "2"))
        wait_until(lambda: process.log().count("Booting worker") >= workers, timeout, what=f"{name} workers")
        wait_until(lambda: _answers(port), timeout, what=f"{name} to answer")
    except BaseException:
        process.stop()
        raise
    return process


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return True
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def log_directory(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="meetbridge-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"process logs kept in {path}")
        else:
            for child in path.iterdir():
                child.unlink()
            path.rmdir()


# --- Redis -----------------------------------------------------------------------------------------------
def bench_redis(url: str) -> redis.Redis:
    """A client of the bench's Redis DB (never DB 0)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    if db == 0:
        raise SystemExit(f"refusing to use Redis DB 0 for a benchmark ({url}): name a dedicated DB, e.g. /9")
    client.ping()
    return client


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[tuple[str, Path]]:
    """The service's files at commit `rev` in a temporary directory (`git archive`: the repository and its
    worktrees are left alone), for a same-run comparison against it: (its short hash, the directory)."""
    commit = _git("rev-parse", "--short", rev).decode().strip()
    path = Path(tempfile.mkdtemp(prefix=f"meetbridge-bench-{commit}-"))
    try:
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
        yield commit, path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_redis(log_dir: Path) -> Iterator[str]:
    """A redis-server of the bench's own on a free port (no persistence), for the length of the block: its URL.

    The shared Redis on 6379 is left alone, and MONITOR, INFO commandstats and CPU figures see the bench only."""
    port = free_port()
    process = spawn(f"redis-{port}", f"redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no "
                    f"--dir {shlex.quote(str(log_dir))}", dict(os.environ), log_dir)
    try:
        wait_until(lambda: port_open(port) or not process.alive(), 10, what="the private redis-server")
        if not process.alive():
            raise RuntimeError(f"redis-server exited:\n{process.log()[-2000:]}")
        yield f"redis://127.0.0.1:{port}/1"
    finally:
        process.stop()


# --- machine ---------------------------------------------------------------------------------------------
def machine(client: redis.Redis | None = None) -> dict[str, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    if client is not None:
        facts["redis"] = str(client.info("server").get("redis_version"))
    facts["code"] = code_version()  # taken when the bench starts: what its processes load
    facts["code_content"] = code_content()
    return facts


def load_line() -> str:
    """The load average (1, 5, 15 min) over the cores: the other work on this shared machine."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min) on {os.cpu_count()} cores"


def machine_line(facts: dict[str, str]) -> str:
    text = f"{facts['cores']} cores ({facts['cpu']}), Python {facts['python']}"
    if "redis" in facts:
        text += f", Redis {facts['redis']}"
    started = facts.get("code") or code_version()
    now, now_content = code_version(), code_content()
    if facts.get("code_content") and now_content != facts["code_content"]:
        return text + (f", {facts['os']} · code: {started} (**the code changed during the run**; at its end: "
                       f"{now})")
    return text + f", {facts['os']} · code: {now}"  # the same code; named by its latest commit if it has one


def code_version() -> str:
    """The commit measured, and which files of the service differed from it (bench/ itself aside)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").decode().strip()
        status = _git("status", "--porcelain").decode().splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = sorted(line[3:] for line in status
                     if not line[3:].startswith(("bench/", "BENCHMARKS.md")) and line[3:].endswith(".py"))
    if not changed:
        return f"`{commit}`"
    diff = _git("diff", "HEAD", "--", *changed)
    return f"`{commit}` + uncommitted changes (diff `{hashlib.sha1(diff).hexdigest()[:8]}`) to {', '.join(changed)}"


def code_content() -> str:
    """A hash of every tracked Python file of the service as it is on disk (bench/ aside)."""
    digest = hashlib.sha1()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for name in sorted(_git("ls-files", "--", "*.py", ":!bench").decode().splitlines()):
            digest.update(name.encode())
            with contextlib.suppress(OSError):
                digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout


# --- statistics ------------------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """`min–max` of the runs, for a table cell."""
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- BENCHMARKS.md ---------------------------------------------------------------------------------------
INTRO = """# meetbridge benchmarks

Measured with the scripts in `bench/` on the project's development machine kind: 2 cores, 24 GiB, Redis on
127.0.0.1, everything (load generator, service processes, simulators, Redis) on the same box. The machine is
shared and noisy, so every figure below is the **median of several runs** (each section says how many) and each
ratio compares figures measured in the same script run, taken in alternation.

Reproduce any section with `.venv/bin/python bench/<name>` from the repository root (`--help` lists the knobs).
Each script rewrites only its own section, between its `bench:<name>` markers; the others are left as they are.
"""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or add, in SECTION_ORDER) the section `name` of BENCHMARKS.md; other sections stay intact."""
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        later = [n for n in SECTION_ORDER[SECTION_ORDER.index(name) + 1:]] if name in SECTION_ORDER else []
        positions = [text.find(_markers(n)[0]) for n in later if _markers(n)[0] in text]
        if positions:
            at = min(positions)
            text = text[:at] + block + "\n\n" + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"updated the {name!r} section of {path.relative_to(ROOT)}")
