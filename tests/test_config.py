"""Settings: each default is declared once (on the dataclass) and `from_env` falls back to it."""

from __future__ import annotations

import pytest

from meetbridge.config import ZOOM_PLAN_RATES, ConfigError, Settings


def test_an_empty_environment_gives_the_declared_defaults() -> None:
    assert Settings.from_env({}, validate=False) == Settings()


def test_contract_defaults() -> None:
    settings = Settings.from_env({}, validate=False)
    assert (settings.port, settings.redis_url, settings.public_url) == (
        8000, "redis://localhost:6379/0", "http://localhost:8000")
    assert (settings.zoom_start_url_ttl_seconds, settings.start_url_refresh_lead_seconds,
            settings.refresh_sweep_seconds, settings.reconcile_seconds, settings.host_link_grace_seconds,
            settings.retention_days, settings.redis_min_replicas_ack) == (7200, 900, 60, 900, 86400, 30, 0)
    assert (settings.meetbridge_env, settings.bind, settings.zoom_channels) == (
        "production", "0.0.0.0", frozenset({"zoom"}))


def test_zoom_rates_follow_the_plan_unless_set() -> None:
    assert (Settings().zoom_light_per_second, Settings().zoom_medium_per_second) == ZOOM_PLAN_RATES["pro"]
    business = Settings.from_env({"ZOOM_PLAN": "business"}, validate=False)
    assert (business.zoom_light_per_second, business.zoom_medium_per_second) == ZOOM_PLAN_RATES["business"]
    assert Settings.from_env({"ZOOM_PLAN": "free", "ZOOM_LIGHT_PER_SECOND": "7"},
                             validate=False).zoom_light_per_second == 7


@pytest.mark.parametrize(("env", "message"), [
    ({"PORT": "80.5"}, "PORT must be a whole number; got '80.5'"),
    ({"RETENTION_DAYS": "soon"}, "RETENTION_DAYS must be a number; got 'soon'"),
    ({"SYNC_MAX_RETRIES": "-1"}, "SYNC_MAX_RETRIES must be at least 0; got -1"),
    ({"REFRESH_SWEEP_SECONDS": "0"}, "REFRESH_SWEEP_SECONDS must be at least 0.1; got 0.0"),
    ({"PORT": "3000", "RETENTION_DAYS": "1.5"}, None),
])
def test_numbers_name_the_variable(env: dict[str, str], message: str | None) -> None:
    if message is None:
        settings = Settings.from_env(env, validate=False)
        assert (settings.port, settings.retention_days, settings.public_url) == (3000, 1.5, "http://localhost:3000")
        return
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env, validate=False)
    assert str(raised.value) == message
