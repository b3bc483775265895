"""`meetbridge doctor`: is everything the service depends on there and working?"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from meetbridge.config import GENERATE_HINT, STALE_VARIABLES, ConfigError, Settings, load_settings
from meetbridge.logs import mask_url
from workers.clients.errors import AuthError, MeetbridgeError, NotFound
from workers.clients.neetocal import join_url_dropped_warning
from workers.clients.zoom import missing_scopes
from workers.queue import QUEUE
from workers.state import KEYS
from workers.state.server import ServerView
from workers.wiring import Services, build_services


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | warn | fail
    detail: str


def checks_from_environment() -> Iterator[Check]:
    """`meetbridge doctor`'s checks, reading the settings itself: a weak secret or a stale variable, which stops
    every process, is a FAIL line naming it (and the rest is still checked), not the end of the report."""
    try:
        settings = load_settings(validate=False)
    except ConfigError as error:  # a value that cannot even be parsed
        for name, message in error.problems:
            yield Check(name, "fail", _detail(name, message))
        return
    yield from run_checks(settings)


def run_checks(settings: Settings) -> Iterator[Check]:
    yield from _configuration(settings)
    services = build_services(settings)
    try:
        redis_ok = yield from _redis(services)
        if not redis_ok:
            return  # every API client shares state through Redis
        for name, probe in (("Zoom", _zoom), ("NeetoCal", _neetocal), ("meetergo", _meetergo)):
            check = _api(name, probe, services)
            yield check
            if name == "Zoom" and check.level == "ok":  # a refused token has no scopes to look at
                yield zoom_scopes(services)
        if settings.neetocal_configured:
            yield neetocal_template(services)
            yield _join_url_dropped(services)
            yield _neetocal_refused(services)
    finally:
        services.close()


def _configuration(settings: Settings) -> Iterator[Check]:
    # Weak secrets and stale variables (every process refuses to start on one): variable -> what is wrong.
    refused: dict[str, list[str]] = {}
    for name, message in settings.problems():
        refused.setdefault(name, []).append(_detail(name, message))

    def refusal(name: str) -> Check | None:
        details = refused.pop(name, None)
        if details is None:
            return None
        hint = "" if name in STALE_VARIABLES else f" ({GENERATE_HINT})"
        return Check(name, "fail", "; ".join(details) + hint)

    for name in settings.stale_variables:
        yield refusal(name) or Check(name, "fail", "no longer supported")
    required = {
        "MEETERGO_WEBHOOK_TOKENS": bool(settings.webhook_tokens),
        "SECRET_KEY": bool(settings.secret_key),
        "ZOOM_ACCOUNT_ID, ZOOM_CLIENT_ID, ZOOM_CLIENT_SECRET": settings.zoom_configured,
        "NEETOCAL_API_URL, NEETOCAL_API_KEY": settings.neetocal_configured,
    }
    for name, present in required.items():
        yield refusal(name) or Check(name, "ok" if present else "fail", "set" if present else "not set")
    if settings.secret_key_fallbacks:
        yield refusal("SECRET_KEY_FALLBACKS") or Check("SECRET_KEY_FALLBACKS", "ok",
                                                       f"{len(settings.secret_key_fallbacks)} earlier key(s)")
    yield refusal("ADMIN_TOKEN") or Check("ADMIN_TOKEN", "ok" if settings.admin_token else "warn",
                                          "set" if settings.admin_token else "not set: /api/* answers 404")
    for name in list(refused):  # any the configuration learns to refuse later
        check = refusal(name)
        if check:
            yield check
    yield Check("MEETERGO_API_KEY", "ok" if settings.meetergo_api_key else "warn",
                "set" if settings.meetergo_api_key else "not set: no read-back, no reconciliation of lost webhooks")
    if settings.metrics_port is not None:
        yield Check("/metrics", "ok", f"served on 127.0.0.1:{settings.metrics_port} only")
    elif settings.metrics_token:
        yield Check("/metrics", "ok", "needs METRICS_TOKEN")
    else:
        yield Check("/metrics", "warn", "/metrics and /openapi.json are public: set METRICS_TOKEN or METRICS_PORT")


def _detail(name: str, message: str) -> str:
    """A configuration message without the variable's name in front (the check line names it)."""
    return message[len(name):].lstrip() if message.startswith(name + " ") else message


def _redis(services: Services) -> Iterator[Check]:
    server = ServerView(services.redis)
    try:
        server.ping()
    except redis.RedisError as error:
        yield Check("Redis", "fail", f"{mask_url(services.settings.redis_url)} does not answer: {error}")
        return False
    yield Check("Redis", "ok", "answers")
    if services.settings.redis_sentinels:
        yield _topology(services)
    for problem in server.settings_problems():
        yield Check("Redis settings", "fail" if "maxmemory-policy is" in problem else "warn", problem)
    memory = _memory(server)
    if memory:
        yield memory
    queued, dead = server.queued(QUEUE), server.dead()
    yield Check("queue", "ok", f"{queued} task(s) waiting")
    yield Check("dead letters", "warn" if dead else "ok",
                f"{dead} failed appointment(s): meetbridge list --status failed" if dead else "none")
    return True


def _topology(services: Services) -> Check:
    """The primary the sentinels name, how many of them agree, and the primary's replicas."""
    settings = services.settings
    answers: dict[str, list[str]] = {}
    for host, port in settings.redis_sentinels:
        try:
            sentinel = redis.Redis(host=host, port=port, password=settings.redis_sentinel_password,
                                   socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
            address = sentinel.sentinel_get_master_addr_by_name(settings.redis_sentinel_master)
            answers.setdefault(f"{address[0]}:{address[1]}" if address else "none", []).append(f"{host}:{port}")
        except redis.RedisError:
            answers.setdefault("unreachable", []).append(f"{host}:{port}")
    named = {k: v for k, v in answers.items() if k not in ("none", "unreachable")}
    primary = max(named, key=lambda k: len(named[k])) if named else None
    replicas = ServerView(services.redis).replicas()
    agree = len(named.get(primary, [])) if primary else 0
    level = "ok" if primary and agree > len(settings.redis_sentinels) // 2 and replicas else "warn"
    return Check("Redis topology", level, f"primary {primary or 'unknown'} ({settings.redis_sentinel_master}), "
                 f"{replicas} replica(s), {agree} of {len(settings.redis_sentinels)} sentinel(s) agree"
                 + ("".join(f"; {k}: {', '.join(v)}" for k, v in answers.items() if k != primary)))


# Redis memory one appointment holds while retained (record, events, history, set entries): bench/retention.
BYTES_PER_APPOINTMENT = 4096


def _memory(server: ServerView) -> Check | None:
    """Whether maxmemory holds the working set: the appointments retained now, with room to double."""
    memory = server.memory()
    if memory is None:
        return None
    limit, used = memory
    retained = server.retained()
    projected = used + retained * BYTES_PER_APPOINTMENT
    if not limit:
        return Check("Redis memory", "warn", f"no maxmemory set; {used // 2**20} MiB used for {retained} "
                                             "appointment(s): set one so a full Redis refuses writes visibly")
    level = "warn" if projected > limit else "ok"
    return Check("Redis memory", level, f"{used // 2**20} MiB of {limit // 2**20} MiB used, {retained} appointment(s) "
                 f"retained; twice that needs about {projected // 2**20} MiB"
                 + (": raise maxmemory or lower RETENTION_DAYS" if level == "warn" else ""))


def _api(name: str, probe: Callable[[Services], str], services: Services) -> Check:
    try:
        return Check(name, "ok", probe(services))
    except AuthError as error:
        return Check(name, "fail", f"credentials refused: {error}")
    except MeetbridgeError as error:
        return Check(name, "fail", str(error))


def _zoom(services: Services) -> str:
    services.zoom.auth.token()
    with contextlib.suppress(NotFound):  # no meeting has id 1: a 404 proves the token is accepted
        services.zoom.get_meeting(1)
    return "token issued and accepted"


def zoom_scopes(services: Services) -> Check:
    """Whether a new Zoom token holds the scopes of every call meetbridge makes; the missing ones are named.

    A new token, not the shared one: that may predate a change of the app's scopes (and several tokens may be
    live at once, so asking for another revokes nothing)."""
    try:
        grant = services.zoom.auth.fresh_grant()
    except AuthError as error:
        return Check("Zoom scopes", "fail", f"credentials refused: {error}")
    except MeetbridgeError as error:
        return Check("Zoom scopes", "fail", str(error))
    if not isinstance(grant.get("scope"), str):
        return Check("Zoom scopes", "warn", "the token answer names no scopes; cannot tell what the app may do")
    missing = missing_scopes(grant["scope"])
    if missing:
        return Check("Zoom scopes", "fail", f"the token lacks {', '.join(missing)}: add "
                     f"{'it' if len(missing) == 1 else 'them'} under Scopes in the "
                     "Server-to-Server OAuth app (Zoom App Marketplace, Manage), then drop the cached token "
                     f"(redis-cli DEL {KEYS.zoom_token})")
    return Check("Zoom scopes", "ok", "a new token may create, update, delete, read and list meetings")


def _neetocal(services: Services) -> str:
    services.neetocal.request("GET", "meetings", operation="doctor", params={"page_size": 1})
    return "API key accepted"


def neetocal_template(services: Services) -> Check:
    """NEETOCAL_TEMPLATE_ID names a scheduling-link template (v2: `GET /meeting-templates/{id}`; v1: found in
    `GET /meeting_templates`). Its booking-form questions cannot be read: no documented call lists them."""
    settings = services.settings
    name, field = "NEETOCAL_TEMPLATE_ID", settings.neetocal_join_url_field
    if not settings.neetocal_template_id:
        return Check(name, "warn", f"not set: links get NeetoCal's default booking form; unless it has a "
                     f"short-text question with field code {field}, NeetoCal drops the join URL (README: "
                     "Connect the real services, NeetoCal)")
    try:
        template = services.neetocal.get_template(settings.neetocal_template_id)
    except MeetbridgeError as error:
        return Check(name, "fail", str(error))
    if template is None:
        return Check(name, "fail", f"{settings.neetocal_template_id} is not a scheduling-link template in this "
                     "workspace: copy the id of one from NeetoCal's scheduling-link templates")
    if not template.is_template:
        return Check(name, "fail", f"{settings.neetocal_template_id} is a scheduling link, not a template")
    return Check(name, "ok", f"template {template.name or template.id}; its booking form needs a short-text "
                 f"question with field code {field} (the API cannot list questions: check it in NeetoCal)")


def _join_url_dropped(services: Services) -> Check:
    return _flagged("NeetoCal join URL", services.store.join_url_dropped(), "fail",
                    ok="every NeetoCal booking checked carries the join URL",
                    problem=lambda count, recent: f"{count} appointment(s) (e.g. {recent}): "
                    + join_url_dropped_warning(services.settings.neetocal_join_url_field))


def _neetocal_refused(services: Services) -> Check:
    return _flagged("NeetoCal bookings", services.store.neetocal_refused(), "warn",
                    ok="NeetoCal accepted every booking",
                    problem=lambda count, recent: f"NeetoCal refused a booking of {count} appointment(s) (e.g. "
                    f"{recent}); each has its Zoom meeting, and its `warning` in the admin API gives NeetoCal's reason")


def _flagged(name: str, found: tuple[int, list[str]], level: str, *, ok: str,
             problem: Callable[[int, str], str]) -> Check:
    """A check on a set of flagged appointments (how many, and the latest few)."""
    count, recent = found
    return Check(name, level, problem(count, ", ".join(recent))) if count else Check(name, "ok", ok)


def _meetergo(services: Services) -> str:
    if not services.settings.meetergo_api_key:
        return "not used (no MEETERGO_API_KEY)"
    services.meetergo.request("GET", "v4/user", operation="doctor", params={"limit": 1})
    return "API key accepted"
