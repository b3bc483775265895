"""Issue 9: weak secrets and stale settings stop every process at start-up, naming the variable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meetbridge import doctor
from meetbridge.config import ConfigError, Settings
from tests.support import ADMIN_TOKEN, REDIS_URL, ROOT, SECRET_KEY, WEBHOOK_TOKEN, free_port, procfile, service_env

STRONG = {"REDIS_URL": REDIS_URL, "MEETERGO_WEBHOOK_TOKENS": WEBHOOK_TOKEN, "SECRET_KEY": SECRET_KEY,
          "ADMIN_TOKEN": ADMIN_TOKEN}
PLACEHOLDER_KEY = "CHANGE_ME_please_change_me_to_something_long"

# name: (environment changes, the variable the refusal must name)
WEAK = {
    "short SECRET_KEY": ({"SECRET_KEY": "short-key-0123456789"}, "SECRET_KEY"),
    "placeholder SECRET_KEY": ({"SECRET_KEY": PLACEHOLDER_KEY}, "SECRET_KEY"),
    "short ADMIN_TOKEN": ({"ADMIN_TOKEN": "admin-0123456789"}, "ADMIN_TOKEN"),
    "one short MEETERGO_WEBHOOK_TOKENS entry": ({"MEETERGO_WEBHOOK_TOKENS": f"{WEBHOOK_TOKEN},hook-0123456789"},
                                                "MEETERGO_WEBHOOK_TOKENS"),
    "weak SECRET_KEY_FALLBACKS": ({"SECRET_KEY_FALLBACKS": "old-key-0123456789"}, "SECRET_KEY_FALLBACKS"),
}
STALE = ({"NEETOCAL_HOST_LINK_FIELD": "zoom_host_link"}, "NEETOCAL_HOST_LINK_FIELD")
NO_SECRET_KEY = ({"SECRET_KEY": None}, "SECRET_KEY")

PROCESS_CASES = [
    *[pytest.param(process, *WEAK[case], id=f"{process}: {case}")
      for case in WEAK for process in ("web", "worker", "beat", "doctor")],
    pytest.param("worker", *NO_SECRET_KEY, id="worker: no SECRET_KEY"),
    *[pytest.param(process, *STALE, id=f"{process}: NEETOCAL_HOST_LINK_FIELD set") for process in ("web", "worker")],
]


# --- the processes, started as they are deployed ---------------------------------------------------------

def spawn(process: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """A process as it is deployed (the web as the Procfile runs it), its output captured."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    celery = [sys.executable, "-m", "celery", "--app", "workers.celery_app"]
    commands = {
        "web": (["bash", "-c", f"exec {procfile()['web']}"], ROOT),  # gunicorn.conf.py is found in ROOT
        "worker": ([*celery, "worker", "--pool", "threads", "--concurrency", "2", "--queues", "meetbridge",
                    "--without-mingle", "--without-gossip", "--loglevel", "INFO"], cwd),
        "beat": ([*celery, "beat", "--loglevel", "INFO"], cwd),
        "doctor": ([sys.executable, "-m", "meetbridge.cli", "doctor"], cwd),
    }
    args, directory = commands[process]
    # Outside ROOT (but for the web) so that no .env file there fills in what a case leaves unset.
    return subprocess.Popen(args, cwd=directory, env={**env, "PATH": path, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def run(popen: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, str]:
    """Wait for the process to exit; its exit code (None: it was still running, and was killed) and output."""
    try:
        output, _ = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        output, _ = popen.communicate()
        return None, output.decode(errors="replace")
    return popen.returncode, output.decode(errors="replace")


def start(process: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    code, output = run(spawn(process, env, cwd), timeout)
    assert code is not None, f"{process} did not exit within {timeout}s:\n{output[-3000:]}"
    return code, output


def process_env(sandbox: Any, changes: dict[str, str | None]) -> dict[str, str]:
    env = {**os.environ, **service_env(sandbox, REDIS_URL), "PORT": str(free_port()), "WEB_CONCURRENCY": "1"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.mark.parametrize(("process", "changes", "variable"), PROCESS_CASES)
def test_each_process_refuses_to_start(sandbox: Any, redis_client: Any, tmp_path: Path, process: str,
                                       changes: dict[str, str | None], variable: str) -> None:
    code, output = start(process, process_env(sandbox, changes), tmp_path)
    assert code != 0, output[-3000:]
    assert variable in output, output[-3000:]
    if variable != STALE[1]:  # the refusal names the secret, never its value
        weak = [part for value in changes.values() for part in (value or "").split(",") if part != WEBHOOK_TOKEN]
        assert not [part for part in weak if part and part in output], output[-3000:]
    if process in ("worker", "beat"):  # the reason, not a traceback (gunicorn logs its worker's boot failure)
        assert "meetbridge refuses to start: " in output and "Traceback" not in output, output[-3000:]
    if process == "doctor":
        assert "Traceback" not in output, output[-3000:]


def test_beat_needs_no_secret_key(sandbox: Any, redis_client: Any, tmp_path: Path) -> None:
    code, output = run(spawn("beat", process_env(sandbox, {"SECRET_KEY": None}), tmp_path), timeout=8)
    assert code is None, output[-3000:]  # still running after 8 s, so it started
    assert "beat: Starting" in output, output[-3000:]


def test_doctor_passes_the_test_secrets(sandbox: Any, redis_client: Any, tmp_path: Path) -> None:
    code, output = start("doctor", process_env(sandbox, {}), tmp_path)
    assert code == 0, output
    assert "[ok  ] SECRET_KEY: set" in output and "[ok  ] ADMIN_TOKEN: set" in output, output


# --- the rules, on Settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(WEAK))
def test_from_env_refuses_weak_secrets(case: str) -> None:
    changes, variable = WEAK[case]
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**STRONG, **changes})
    message = str(refused.value)
    assert message.startswith(variable)
    assert all(part not in message for value in changes.values() for part in value.split(",") if part != WEBHOOK_TOKEN)
    assert [name for name, _ in refused.value.problems] == [variable]


@pytest.mark.parametrize("value", [
    PLACEHOLDER_KEY, "change_me", "CHANGEME", "changeme-0123456789abcdef0123456789abcdef",
    "Change-Me-Now-Please-0123456789", "secret", "your-secret-key", "YOUR_SECRET_KEY_0123456789_abcdefghijkl",
    "x" * 40, "xxx-0123456789abcdef0123456789abcdef", "a" * 64, "0123456789abcdef0123456789abcde",
])
def test_secret_key_placeholders_repeats_and_short_keys_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="^SECRET_KEY (is a placeholder|is one character repeated|is too short)"):
        Settings.from_env({**STRONG, "SECRET_KEY": value})


@pytest.mark.parametrize("value", [SECRET_KEY, "0123456789abcdef0123456789abcdef", "dev-secret-" + "Q" * 20 + "abc"])
def test_secret_keys_of_32_characters_and_more_are_accepted(value: str) -> None:
    assert Settings.from_env({**STRONG, "SECRET_KEY": value}).secret_key == value


def test_tokens_need_24_characters_and_no_placeholder() -> None:
    assert Settings.from_env({**STRONG, "ADMIN_TOKEN": "a1" * 12}).admin_token == "a1" * 12
    with pytest.raises(ConfigError, match="^ADMIN_TOKEN is too short: 23 characters, at least 24"):
        Settings.from_env({**STRONG, "ADMIN_TOKEN": "a1" * 11 + "a"})
    with pytest.raises(ConfigError, match=r"^MEETERGO_WEBHOOK_TOKENS \(entry 2 of 2\) is a placeholder"):
        Settings.from_env({**STRONG, "MEETERGO_WEBHOOK_TOKENS": f"{WEBHOOK_TOKEN},CHANGE_ME_WEBHOOK_TOKEN_0123"})


def test_every_weak_secret_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**STRONG, "SECRET_KEY": "short", "ADMIN_TOKEN": "short", **STALE[0]})
    assert [name for name, _ in refused.value.problems] == ["NEETOCAL_HOST_LINK_FIELD", "SECRET_KEY", "ADMIN_TOKEN"]


def test_the_stale_host_link_field_is_refused_and_says_why() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**STRONG, "NEETOCAL_HOST_LINK_FIELD": "host_start_link"})
    assert "host credential" in str(refused.value) and "/api/hosts/<email>/page" in str(refused.value)
    assert not hasattr(Settings(), "neetocal_host_link_field")


def test_per_process_requirements() -> None:
    without_key = Settings.from_env({**STRONG, "SECRET_KEY": ""})  # beat needs none
    with pytest.raises(ConfigError, match="worker needs SECRET_KEY"):
        without_key.require_worker()
    with pytest.raises(ConfigError, match="web needs SECRET_KEY"):
        without_key.require_web()
    Settings.from_env(STRONG).require_worker()
    Settings.from_env(STRONG).require_web()
    # Settings made in code (not from the environment) are held to the same rules when a process starts.
    weak = Settings(webhook_tokens=(WEBHOOK_TOKEN,), secret_key="short")
    for require in (weak.require_web, weak.require_worker):
        with pytest.raises(ConfigError, match="^SECRET_KEY is too short"):
            require()


def test_doctor_reports_each_problem_as_a_fail_line() -> None:
    settings = Settings.from_env({**STRONG, "SECRET_KEY": PLACEHOLDER_KEY, "ADMIN_TOKEN": "short",
                                  "SECRET_KEY_FALLBACKS": f"{SECRET_KEY},x", **STALE[0]}, validate=False)
    failed = {check.name: check.detail for check in doctor._configuration(settings) if check.level == "fail"}
    assert failed["SECRET_KEY"].startswith("is a placeholder")
    assert failed["ADMIN_TOKEN"].startswith("is too short: 5 characters")
    assert failed["SECRET_KEY_FALLBACKS"].startswith("(entry 2 of 2) is one character repeated")
    assert "host credential" in failed["NEETOCAL_HOST_LINK_FIELD"]
    assert "MEETERGO_WEBHOOK_TOKENS" not in failed


def test_doctor_checks_from_the_environment_fail_instead_of_stopping(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in {**STRONG, "REDIS_URL": "redis://127.0.0.1:1/0", "SECRET_KEY": "short"}.items():
        monkeypatch.setenv(name, value)
    checks = list(doctor.checks_from_environment())
    assert ("SECRET_KEY", "fail") in [(c.name, c.level) for c in checks]
    assert ("Redis", "fail") in [(c.name, c.level) for c in checks]  # and the rest is still checked
    monkeypatch.setenv("PORT", "eighty")
    assert [(c.name, c.level) for c in doctor.checks_from_environment()] == [("PORT", "fail")]


# --- the secrets the project hands out ---------------------------------------------------------------------

def test_the_deploy_examples_are_refused_until_their_placeholders_are_replaced() -> None:
    lines = (ROOT / "deploy/systemd/meetbridge.env.example").read_text().splitlines()
    systemd = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    kubernetes: dict[str, str] = {}
    for name in ("configmap.yaml", "secret.example.yaml"):
        for document in yaml.safe_load_all((ROOT / "deploy/kubernetes" / name).read_text()):
            if document["metadata"]["name"] in ("meetbridge-config", "meetbridge-secrets"):
                kubernetes.update(document.get("data") or document.get("stringData"))
    for env in (systemd, kubernetes):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env(env)
        assert [name for name, _ in refused.value.problems] == ["SECRET_KEY", "MEETERGO_WEBHOOK_TOKENS",
                                                                 "ADMIN_TOKEN"]


def test_the_dev_runner_generates_secrets_that_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from meetbridge.dev import dev_environment

    for name in ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "ADMIN_TOKEN", "MEETERGO_WEBHOOK_TOKENS"):
        monkeypatch.delenv(name, raising=False)

    class NoSimulators:
        env: dict[str, str] = {}

    for _ in range(20):
        env, _sandbox = dev_environment(NoSimulators)
        settings = Settings.from_env(env)
        settings.require_web()
        settings.require_worker()
