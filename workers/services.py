"""The clients and stores one process works with, built once from its settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import httpx
import redis

from meetbridge.config import Settings, get_settings
from workers.clients.meetergo import MeetergoClient
from workers.clients.neetocal import NeetoCalClient
from workers.clients.zoom import LIGHT, MEDIUM, ZoomAuth, ZoomClient, ZoomOAuth
from workers.limits import HostDailyQuota, RateLimiter
from workers.metrics import Metrics
from workers.state import SharedToken, Store, connect

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: Store
    metrics: Metrics
    zoom: ZoomClient
    neetocal: NeetoCalClient
    meetergo: MeetergoClient
    quota: HostDailyQuota

    def close(self) -> None:
        for client in (self.zoom, self.neetocal, self.meetergo):
            client.close()
        self.zoom.auth.close()
        self.redis.close()


def build_services(settings: Settings, transport: httpx.BaseTransport | None = None) -> Services:
    client = connect(settings)
    metrics = Metrics(client)

    def observe(service: str, operation: str, status: int | None, seconds: float) -> None:
        metrics.count("meetbridge_api_requests_total", service=service, operation=operation,
                      status=str(status) if status else "error")
        metrics.observe("meetbridge_api_request_seconds", seconds, service=service)

    common = {"timeout": settings.http_timeout_seconds, "transport": transport, "observe": observe}
    quota = HostDailyQuota(client, settings.zoom_host_daily_limit)
    zoom = ZoomClient(
        settings.zoom_api_url,
        auth=ZoomAuth(SharedToken(client), ZoomOAuth(
            settings.zoom_oauth_url, account_id=settings.zoom_account_id, client_id=settings.zoom_client_id,
            client_secret=settings.zoom_client_secret, **common)),
        limiters={
            LIGHT: RateLimiter(client, "zoom:light", settings.zoom_light_per_second),
            MEDIUM: RateLimiter(client, "zoom:medium", settings.zoom_medium_per_second),
        },
        quota=quota,
        **common,
    )
    neetocal = NeetoCalClient(settings.neetocal_api_url, api_key=settings.neetocal_api_key,
                              version=settings.neetocal_api_version, template_id=settings.neetocal_template_id,
                              **common)
    meetergo = MeetergoClient(
        settings.meetergo_api_url,
        api_key=settings.meetergo_api_key,
        api_user_id=settings.meetergo_api_user_id,
        limiter=RateLimiter(client, "meetergo", settings.meetergo_requests_per_minute / 60, burst=5),
        **common,
    )
    store = Store(client, min_replicas_ack=settings.redis_min_replicas_ack)
    return Services(settings=settings, redis=client, store=store, metrics=metrics, zoom=zoom,
                    neetocal=neetocal, meetergo=meetergo, quota=quota)


@lru_cache(maxsize=1)
def get_services() -> Services:
    """This process's services, built on first use (after a prefork worker has forked)."""
    return build_services(get_settings())
