"""The clients and stores one process works with, built once from its settings.

Redis, the store and the metrics are built at once. The API clients (Zoom, NeetoCal, meetergo) are imported and
built on first use: the web process needs one only when a host presses "Start" on a host link (Zoom), so it
neither loads nor builds them otherwise (`tests/webhooks/test_thin_web.py`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import redis

from meetbridge.config import Settings, get_settings
from workers.metrics import Metrics
from workers.state import SharedToken, Store, connect

if TYPE_CHECKING:
    import httpx

    from workers.clients.meetergo import MeetergoClient
    from workers.clients.neetocal import NeetoCalClient
    from workers.clients.zoom import ZoomClient
    from workers.limits import HostDailyQuota

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiClients:
    zoom: ZoomClient
    neetocal: NeetoCalClient
    meetergo: MeetergoClient
    quota: HostDailyQuota


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: Store
    metrics: Metrics
    transport: httpx.BaseTransport | None = None  # for the API clients (tests hand in a mock transport)
    _api: ApiClients | None = field(default=None, init=False, repr=False, compare=False)
    _api_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def api(self) -> ApiClients:
        """The API clients, built by the first caller (a web thread or a worker thread; once either way)."""
        if self._api is None:
            with self._api_lock:
                if self._api is None:
                    self._api = build_api_clients(self.settings, self.redis, self.metrics, self.transport)
        return self._api

    @property
    def zoom(self) -> ZoomClient:
        return self.api.zoom

    @property
    def neetocal(self) -> NeetoCalClient:
        return self.api.neetocal

    @property
    def meetergo(self) -> MeetergoClient:
        return self.api.meetergo

    @property
    def quota(self) -> HostDailyQuota:
        return self.api.quota

    def close(self) -> None:
        if self._api is not None:
            for client in (self._api.zoom, self._api.neetocal, self._api.meetergo):
                client.close()
            self._api.zoom.auth.close()
        self.redis.close()


def build_services(settings: Settings, transport: httpx.BaseTransport | None = None) -> Services:
    client = connect(settings)
    store = Store(client, min_replicas_ack=settings.redis_min_replicas_ack)
    return Services(settings=settings, redis=client, store=store, metrics=Metrics(client), transport=transport)


def build_api_clients(settings: Settings, client: redis.Redis, metrics: Metrics,
                      transport: httpx.BaseTransport | None = None) -> ApiClients:
    # Imported here, not at the top: this is the one place the API clients come in (see the module's docstring).
    from workers.clients.meetergo import MeetergoClient
    from workers.clients.neetocal import NeetoCalClient
    from workers.clients.zoom import LIGHT, MEDIUM, ZoomAuth, ZoomClient, ZoomOAuth
    from workers.limits import HostDailyQuota, RateLimiter

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
    return ApiClients(zoom=zoom, neetocal=neetocal, meetergo=meetergo, quota=quota)


@lru_cache(maxsize=1)
def get_services() -> Services:
    """This process's services, built on first use (after a prefork worker has forked)."""
    return build_services(get_settings())
