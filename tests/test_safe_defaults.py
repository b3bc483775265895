"""Production defaults: operator endpoints closed or moved, https host links, .env only in development, BIND."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meetbridge.config import ConfigError, Settings
from tests.support import ROOT, Stack, free_port

METRICS_TOKEN = "test-metrics-token-0123456789"


def test_metrics_token_closes_metrics_and_openapi(make_stack) -> None:
    stack = make_stack(workers=0, METRICS_TOKEN=METRICS_TOKEN)
    for path in ("/metrics", "/openapi.json"):
        assert stack.http.get(stack.web_url + path).status_code == 401
        assert stack.http.get(stack.web_url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        opened = stack.http.get(stack.web_url + path, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert opened.status_code == 200
    assert stack.http.get(stack.web_url + "/healthz").status_code == 200  # probes need no token


def test_metrics_port_serves_metrics_on_localhost_alone(make_stack) -> None:
    metrics_port = free_port()
    stack: Stack = make_stack(workers=0, METRICS_PORT=metrics_port)
    stack.start_web_process()  # gunicorn binds PORT and 127.0.0.1:METRICS_PORT
    public = stack.web_url
    local = f"http://127.0.0.1:{metrics_port}"
    assert stack.http.get(f"{public}/metrics").status_code == 404
    assert stack.http.get(f"{public}/openapi.json").status_code == 404
    assert stack.http.get(f"{public}/readyz").status_code == 200
    assert stack.http.get(f"{local}/metrics").status_code == 200
    assert "meetbridge_queue_depth" in stack.http.get(f"{local}/metrics").text
    assert stack.http.post(f"{local}/webhooks/meetergo", json={}).status_code == 404


def test_bind_sets_the_listen_address(make_stack) -> None:
    stack: Stack = make_stack(workers=0, BIND="127.0.0.1")
    stack.start_web_process()
    port = stack.env["PORT"]
    assert stack.http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    # The Procfile's own config file decides the addresses: IPv6 in brackets, metrics on localhost.
    env = {**os.environ, "BIND": "::", "PORT": "9000", "METRICS_PORT": "9100"}
    result = subprocess.run([sys.executable, "-c", "import runpy; print(runpy.run_path('gunicorn.conf.py')['bind'])"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "['[::]:9000', '127.0.0.1:9100']", result.stderr


def test_doctor_says_when_metrics_are_public(make_stack, sandbox) -> None:
    stack = make_stack(workers=0)
    env = {**os.environ, **stack.env}
    result = subprocess.run([sys.executable, "-m", "meetbridge.cli", "doctor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert "[warn] /metrics: /metrics and /openapi.json are public" in result.stdout
    closed = subprocess.run([sys.executable, "-m", "meetbridge.cli", "doctor"], cwd=ROOT,
                            env={**env, "METRICS_TOKEN": METRICS_TOKEN}, capture_output=True, text=True, timeout=60)
    assert "[ok  ] /metrics: needs METRICS_TOKEN" in closed.stdout


@pytest.mark.parametrize(("url", "env", "allowed"), [
    ("https://meetbridge.example.com", "production", True),
    ("http://meetbridge.example.com", "production", False),
    ("http://localhost:8000", "production", True),
    ("http://127.0.0.1:8000", "production", True),
    ("http://meetbridge.example.com", "dev", True),
])
def test_public_url_must_be_https_in_production(url: str, env: str, allowed: bool) -> None:
    environ = {"PUBLIC_URL": url, "MEETBRIDGE_ENV": env}
    if allowed:
        assert Settings.from_env(environ).public_url == url
    else:
        with pytest.raises(ConfigError, match="PUBLIC_URL must be an https:// URL"):
            Settings.from_env(environ)


def test_a_web_process_refuses_an_http_public_url(make_stack) -> None:
    stack: Stack = make_stack(workers=0)
    port = free_port()
    env = {**os.environ, **stack.env, "PUBLIC_URL": "http://meetbridge.example.com", "PORT": str(port),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    from tests.support import procfile

    result = subprocess.run(["bash", "-c", f"exec {procfile()['web']}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "PUBLIC_URL" in result.stdout + result.stderr


@pytest.mark.parametrize(("environment", "read"), [("production", False), ("dev", True)])
def test_a_dotenv_file_is_read_in_development_only(tmp_path: Path, environment: str, read: bool) -> None:
    (tmp_path / ".env").write_text("ZOOM_PLAN=business\n")
    env = {k: v for k, v in os.environ.items() if k != "ZOOM_PLAN"}
    env.update({"MEETBRIDGE_ENV": environment, "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-c", "from meetbridge.config import load_settings; "
                             "print(load_settings(validate=False).zoom_plan)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("business" if read else "pro")


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="MEETBRIDGE_ENV"):
        Settings.from_env({"MEETBRIDGE_ENV": "staging"})


def test_sentinels_with_a_tls_redis_url_are_refused() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS with a rediss://"):
        Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_URL": "rediss://:pw@redis/0"})
