"""The service's whole configuration, read from the environment once.

Every process (web, worker, beat, CLI) builds one `Settings` from `os.environ` (a `.env` file may fill it in
development) and passes it down; nothing else reads the environment. The names and defaults of the operator
contract (CONTRACT.md) are kept exactly; the extra knobs below it have safe defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

MAX_WEBHOOK_BODY_BYTES = 256 * 1024

N = TypeVar("N", int, float)

# Zoom's per-second limits by account plan (developers.zoom.us/docs/api/rate-limits/).
ZOOM_PLAN_RATES: dict[str, tuple[float, float]] = {
    # plan: (light per second, medium per second)
    "free": (4, 2),
    "pro": (30, 20),
    "business": (80, 60),
}


# Secrets too weak to run with (issue #9). A process given one refuses to start; `meetbridge doctor` names it.
MIN_SECRET_KEY_LENGTH = 32  # SECRET_KEY and each of SECRET_KEY_FALLBACKS
MIN_TOKEN_LENGTH = 24  # each of MEETERGO_WEBHOOK_TOKENS, ADMIN_TOKEN
# Documented and commonly copied placeholders. A secret is one when, lower-cased and without separators
# (space - _ .), it begins with one of these (so CHANGE_ME, change-me, ChangeMe_please... all are).
PLACEHOLDER_SECRETS = frozenset({
    "change_me", "change-me", "changeme", "change_this", "changeit", "replace_me", "replaceme",
    "your-secret-key", "your_secret", "your-token", "secret", "password", "placeholder", "example",
    "xxx", "todo", "fixme", "insecure", "dummy", "<",
})
# Hex never begins like a placeholder; 64 characters pass every minimum.
GENERATE_HINT = "generate a secret with: python -c 'import secrets; print(secrets.token_hex(32))'"

# Variables that used to mean something and now must not be set: a process refuses to start while one is.
STALE_VARIABLES: dict[str, str] = {
    "NEETOCAL_HOST_LINK_FIELD": (
        "is no longer supported: the host link is a host credential and is no longer written to the "
        "attendee's NeetoCal booking; hosts find it on their host page (GET /api/hosts/<email>/page) instead. "
        "Remove the variable"),
}


ENVIRONMENTS = ("production", "dev")
# NeetoCal API versions the client speaks, named by the last segment of NEETOCAL_API_URL. v1 is deprecated
# ("This endpoint is part of API v1, which is deprecated. Please use the v2 API instead.") but still served.
NEETOCAL_API_VERSIONS = ("v1", "v2")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ConfigError(ValueError):
    """The environment does not describe a runnable service; the message names the variable.

    `problems` lists (variable, what is wrong) when there is more than one thing to say.
    """

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or ((message.split(" ", 1)[0], message),)


def _normalized(value: str) -> str:
    return "".join(c for c in value.lower() if c not in " -_.")


def secret_weakness(value: str, minimum: int) -> str | None:
    """What makes `value` too weak to be a secret of at least `minimum` characters; None when it is fine.

    Never repeats the value (the message goes to logs and terminals)."""
    normalized = _normalized(value)
    if any(normalized.startswith(_normalized(p)) for p in PLACEHOLDER_SECRETS):
        return f"is a placeholder: set a random value of at least {minimum} characters"
    if len(set(value)) == 1:
        return f"is one character repeated: set a random value of at least {minimum} characters"
    if len(value) < minimum:
        return f"is too short: {len(value)} characters, at least {minimum} are required"
    return None


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    redis_url: str = "redis://localhost:6379/0"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str | None = None
    redis_min_replicas_ack: int = 0
    webhook_tokens: tuple[str, ...] = ()
    meetergo_api_url: str = "https://api.meetergo.com"
    meetergo_api_key: str | None = None
    meetergo_api_user_id: str | None = None
    zoom_api_url: str = "https://api.zoom.us/v2"
    zoom_oauth_url: str = "https://zoom.us/oauth/token"
    zoom_account_id: str | None = None
    zoom_client_id: str | None = None
    zoom_client_secret: str | None = None
    neetocal_api_url: str | None = None
    neetocal_api_key: str | None = None
    neetocal_join_url_field: str = "zoom_join_url"
    neetocal_template_id: str | None = None
    public_url: str = "http://localhost:8000"
    secret_key: str | None = None
    secret_key_fallbacks: tuple[str, ...] = ()
    admin_token: str | None = None
    zoom_start_url_ttl_seconds: int = 7200
    start_url_refresh_lead_seconds: int = 900
    refresh_sweep_seconds: float = 60
    reconcile_seconds: float = 900
    host_link_grace_seconds: int = 86400
    zoom_channels: frozenset[str] = frozenset({"zoom"})
    retention_days: float = 30
    metrics_token: str | None = None
    metrics_port: int | None = None
    meetbridge_env: str = "production"
    bind: str = "0.0.0.0"

    # Beyond the contract.
    zoom_custcreate_hosts: frozenset[str] = field(default_factory=frozenset)
    zoom_plan: str = "pro"
    # The plan's rates unless ZOOM_LIGHT_PER_SECOND / ZOOM_MEDIUM_PER_SECOND say otherwise.
    zoom_light_per_second: float = ZOOM_PLAN_RATES[zoom_plan][0]
    zoom_medium_per_second: float = ZOOM_PLAN_RATES[zoom_plan][1]
    zoom_host_daily_limit: int = 100
    zoom_cancel_reminder: bool = False
    meetergo_requests_per_minute: float = 100
    http_timeout_seconds: float = 10
    sync_max_retries: int = 8
    retry_max_delay_seconds: float = 300
    broker_visibility_timeout_seconds: int = 30
    host_link_min_validity_seconds: int = 300
    # Where a start_url may point: the host link redirects only to https URLs on these domains (or subdomains).
    zoom_start_url_domains: tuple[str, ...] = ("zoom.us", "zoomgov.com", "zoom.com")
    log_level: str = "INFO"
    log_format: str = "json"
    # Names of STALE_VARIABLES found set in the environment (a problem: see problems()).
    stale_variables: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, validate: bool = True) -> Settings:
        """The settings the environment describes. Raises ConfigError naming the variable for a value that
        cannot be parsed and, unless `validate` is false (`meetbridge doctor`, which reports them), for a weak
        secret or a stale variable."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        port = reader.int("PORT", cls.port)
        plan = reader.str("ZOOM_PLAN", cls.zoom_plan).lower()
        if plan not in ZOOM_PLAN_RATES:
            raise ConfigError(f"ZOOM_PLAN must be one of {', '.join(ZOOM_PLAN_RATES)}; got {plan!r}")
        light, medium = ZOOM_PLAN_RATES[plan]
        settings = cls(
            port=port,
            redis_url=reader.str("REDIS_URL", cls.redis_url),
            redis_sentinels=reader.addresses("REDIS_SENTINELS"),
            redis_sentinel_master=reader.str("REDIS_SENTINEL_MASTER", cls.redis_sentinel_master),
            redis_sentinel_password=reader.optional("REDIS_SENTINEL_PASSWORD"),
            redis_min_replicas_ack=reader.int("REDIS_MIN_REPLICAS_ACK", cls.redis_min_replicas_ack, minimum=0),
            webhook_tokens=reader.list("MEETERGO_WEBHOOK_TOKENS"),
            meetergo_api_url=reader.url("MEETERGO_API_URL", cls.meetergo_api_url),
            meetergo_api_key=reader.optional("MEETERGO_API_KEY"),
            meetergo_api_user_id=reader.optional("MEETERGO_API_USER_ID"),
            zoom_api_url=reader.url("ZOOM_API_URL", cls.zoom_api_url),
            zoom_oauth_url=reader.url("ZOOM_OAUTH_URL", cls.zoom_oauth_url),
            zoom_account_id=reader.optional("ZOOM_ACCOUNT_ID"),
            zoom_client_id=reader.optional("ZOOM_CLIENT_ID"),
            zoom_client_secret=reader.optional("ZOOM_CLIENT_SECRET"),
            neetocal_api_url=reader.neetocal_url("NEETOCAL_API_URL"),
            neetocal_api_key=reader.optional("NEETOCAL_API_KEY"),
            neetocal_join_url_field=reader.str("NEETOCAL_JOIN_URL_FIELD", cls.neetocal_join_url_field),
            neetocal_template_id=reader.optional("NEETOCAL_TEMPLATE_ID"),
            public_url=reader.url("PUBLIC_URL", f"http://localhost:{port}"),
            secret_key=reader.optional("SECRET_KEY"),
            secret_key_fallbacks=reader.list("SECRET_KEY_FALLBACKS"),
            admin_token=reader.optional("ADMIN_TOKEN"),
            zoom_start_url_ttl_seconds=reader.int("ZOOM_START_URL_TTL_SECONDS", cls.zoom_start_url_ttl_seconds,
                                                  minimum=1),
            start_url_refresh_lead_seconds=reader.int(
                "START_URL_REFRESH_LEAD_SECONDS", cls.start_url_refresh_lead_seconds, minimum=0),
            refresh_sweep_seconds=reader.float("REFRESH_SWEEP_SECONDS", cls.refresh_sweep_seconds, minimum=0.1),
            reconcile_seconds=reader.float("RECONCILE_SECONDS", cls.reconcile_seconds, minimum=1),
            host_link_grace_seconds=reader.int("HOST_LINK_GRACE_SECONDS", cls.host_link_grace_seconds, minimum=0),
            zoom_channels=frozenset(c.lower() for c in reader.list("ZOOM_CHANNELS")) or cls.zoom_channels,
            retention_days=reader.float("RETENTION_DAYS", cls.retention_days, minimum=0),
            metrics_token=reader.optional("METRICS_TOKEN"),
            metrics_port=reader.optional_int("METRICS_PORT"),
            meetbridge_env=reader.choice("MEETBRIDGE_ENV", cls.meetbridge_env, ENVIRONMENTS),
            bind=reader.str("BIND", cls.bind),
            zoom_custcreate_hosts=frozenset(e.lower() for e in reader.list("ZOOM_CUSTCREATE_HOSTS")),
            zoom_plan=plan,
            zoom_light_per_second=reader.float("ZOOM_LIGHT_PER_SECOND", light, minimum=0.1),
            zoom_medium_per_second=reader.float("ZOOM_MEDIUM_PER_SECOND", medium, minimum=0.1),
            zoom_host_daily_limit=reader.int("ZOOM_HOST_DAILY_LIMIT", cls.zoom_host_daily_limit, minimum=1),
            zoom_cancel_reminder=reader.bool("ZOOM_CANCEL_REMINDER", cls.zoom_cancel_reminder),
            meetergo_requests_per_minute=reader.float("MEETERGO_REQUESTS_PER_MINUTE", cls.meetergo_requests_per_minute,
                                                      minimum=1),
            http_timeout_seconds=reader.float("HTTP_TIMEOUT_SECONDS", cls.http_timeout_seconds, minimum=0.1),
            sync_max_retries=reader.int("SYNC_MAX_RETRIES", cls.sync_max_retries, minimum=0),
            retry_max_delay_seconds=reader.float("RETRY_MAX_DELAY_SECONDS", cls.retry_max_delay_seconds, minimum=1),
            broker_visibility_timeout_seconds=reader.int(
                "BROKER_VISIBILITY_TIMEOUT_SECONDS", cls.broker_visibility_timeout_seconds, minimum=3),
            host_link_min_validity_seconds=reader.int(
                "HOST_LINK_MIN_VALIDITY_SECONDS", cls.host_link_min_validity_seconds, minimum=0),
            zoom_start_url_domains=tuple(d.lower().strip(".") for d in reader.list("ZOOM_START_URL_DOMAINS"))
            or cls.zoom_start_url_domains,
            log_level=reader.str("LOG_LEVEL", cls.log_level).upper(),
            log_format=reader.str("LOG_FORMAT", cls.log_format).lower(),
            stale_variables=tuple(name for name in STALE_VARIABLES if reader.optional(name)),
        )
        if settings.redis_sentinels and settings.redis_url.startswith("rediss://"):
            # Sentinel discovery here speaks plain TCP: a TLS REDIS_URL would silently lose its TLS.
            raise ConfigError("REDIS_SENTINELS with a rediss:// REDIS_URL is not supported: the service would "
                              "reach the primary without TLS; use Sentinel on a private network with redis://")
        if validate:
            settings.validate()
        return settings

    def problems(self) -> list[tuple[str, str]]:
        """(variable, message naming it) for every weak secret and stale variable; empty when all is well."""
        found: list[tuple[str, str]] = [(name, f"{name} {STALE_VARIABLES[name]}") for name in self.stale_variables]

        def check(name: str, value: str | None, minimum: int) -> None:
            weakness = value is not None and secret_weakness(value, minimum)
            if weakness:
                found.append((name.split(" ", 1)[0], f"{name} {weakness}"))

        def check_list(name: str, values: tuple[str, ...], minimum: int) -> None:
            for n, value in enumerate(values, 1):
                check(f"{name} (entry {n} of {len(values)})" if len(values) > 1 else name, value, minimum)

        check("SECRET_KEY", self.secret_key, MIN_SECRET_KEY_LENGTH)
        check_list("SECRET_KEY_FALLBACKS", self.secret_key_fallbacks, MIN_SECRET_KEY_LENGTH)
        check_list("MEETERGO_WEBHOOK_TOKENS", self.webhook_tokens, MIN_TOKEN_LENGTH)
        check("ADMIN_TOKEN", self.admin_token, MIN_TOKEN_LENGTH)
        check("METRICS_TOKEN", self.metrics_token, MIN_TOKEN_LENGTH)
        if not self.public_url_allowed:
            found.append(("PUBLIC_URL", f"PUBLIC_URL must be an https:// URL in production (got {self.public_url}): "
                          "host links sent over http can be read on the way; http is allowed for localhost and "
                          "127.0.0.1, or anywhere with MEETBRIDGE_ENV=dev"))
        return found

    @property
    def public_url_allowed(self) -> bool:
        parts = urlsplit(self.public_url)
        return parts.scheme == "https" or self.meetbridge_env == "dev" or parts.hostname in LOOPBACK_HOSTS

    def validate(self) -> None:
        """Refuse weak secrets and stale variables, whichever process this is."""
        found = self.problems()
        if found:
            hint = f" ({GENERATE_HINT})" if any(name not in STALE_VARIABLES for name, _ in found) else ""
            raise ConfigError("; ".join(message for _, message in found) + hint, tuple(found))

    # What each process cannot start without (beat needs nothing beyond validate()).
    def require_web(self) -> None:
        self.validate()
        self._require("web", ("MEETERGO_WEBHOOK_TOKENS", self.webhook_tokens), ("SECRET_KEY", self.secret_key))

    def require_worker(self) -> None:
        self.validate()
        self._require("worker", ("SECRET_KEY", self.secret_key))

    @staticmethod
    def _require(process: str, *values: tuple[str, object]) -> None:
        missing = [name for name, value in values if not value]
        if missing:
            raise ConfigError(f"{process} needs {' and '.join(missing)} set",
                              tuple((name, f"{name} is not set ({process} needs it)") for name in missing))

    @property
    def zoom_configured(self) -> bool:
        return bool(self.zoom_account_id and self.zoom_client_id and self.zoom_client_secret)

    @property
    def neetocal_configured(self) -> bool:
        return bool(self.neetocal_api_url and self.neetocal_api_key)

    @property
    def neetocal_api_version(self) -> str:
        """"v1" or "v2" (checked when read): the API the URL names; v2 when no URL is set."""
        return neetocal_version(self.neetocal_api_url) or "v2"

    @property
    def meetergo_readback(self) -> bool:
        return bool(self.meetergo_api_key)

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        values = [*self.webhook_tokens, self.redis_sentinel_password, self.meetergo_api_key, self.zoom_client_secret,
                  self.neetocal_api_key,
                  self.secret_key, *self.secret_key_fallbacks, self.admin_token, self.metrics_token]
        return [v for v in values if v and len(v) >= 4]


class _Reader:
    """Parses environment values, naming the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def str(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def list(self, name: str) -> tuple[str, ...]:
        raw = self.optional(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def url(self, name: str, default: str) -> str:
        return self._check_url(name, self.str(name, default))

    def optional_url(self, name: str) -> str | None:
        value = self.optional(name)
        return self._check_url(name, value) if value else None

    def neetocal_url(self, name: str) -> str | None:
        """The NeetoCal base URL, which must end in the API version it speaks (…/api/external/v2 or …/v1)."""
        value = self.optional_url(name)
        if value is not None and neetocal_version(value) is None:
            raise ConfigError(f"{name} must end in the API version, /v2 (current) or /v1 (deprecated), e.g. "
                              f"https://acme.neetocal.com/api/external/v2; got {value!r}")
        return value

    def addresses(self, name: str) -> tuple[tuple[str, int], ...]:
        """`host:port,host:port` (IPv6 as `[::1]:26379`)."""
        found = []
        for item in self.list(name):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{name} must be comma-separated host:port pairs; got {item!r}")
            found.append((host.strip("[]"), int(port)))
        return tuple(found)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def optional_int(self, name: str) -> int | None:
        if self.optional(name) is None:
            return None
        value = self.int(name, 0, minimum=1)
        if value > 65535:
            raise ConfigError(f"{name} must be a port number (1-65535); got {value}")
        return value

    def int(self, name: str, default: int, minimum: int | None = None) -> int:
        return self._number(name, default, minimum, int, "a whole number")

    def float(self, name: str, default: float, minimum: float | None = None) -> float:
        return self._number(name, default, minimum, float, "a number")

    def _number(self, name: str, default: N, minimum: N | None, parse: Callable[[str], N], kind: str) -> N:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {kind}; got {raw!r}") from None
        return self._check_minimum(name, value, minimum)

    def bool(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be true or false; got {raw!r}")

    @staticmethod
    def _check_url(name: str, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL; got {value!r}")
        return value.rstrip("/")

    @staticmethod
    def _check_minimum(name: str, value, minimum):  # type: ignore[no-untyped-def]
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}; got {value}")
        return value


def neetocal_version(url: str | None) -> str | None:
    """The NeetoCal API version a base URL names by its last path segment, or None."""
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] if url else ""
    return segment if segment in NEETOCAL_API_VERSIONS else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use (not at import)."""
    return load_settings()


def load_settings(validate: bool = True) -> Settings:
    """Settings from the environment (and, in development only, a .env file); `validate=False` lets weak secrets
    through."""
    if is_dev_environment():
        load_dotenv()
    return Settings.from_env(validate=validate)


def is_dev_environment() -> bool:
    # Read before the settings exist: a .env file must not be able to switch a production process to dev.
    return os.environ.get("MEETBRIDGE_ENV", "").strip().lower() == "dev"


def load_dotenv() -> None:
    # Development convenience: a .env in the working directory fills in what the environment leaves unset.
    path = os.path.join(os.getcwd(), ".env")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            os.environ.setdefault(key.strip(), value.strip().strip("'\""))
