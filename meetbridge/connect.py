"""`meetbridge connect`: register meetbridge's webhook in meetergo and check the rest, once after deploying.

The webhook is meetergo's only way to reach the service, so connect manages exactly one registration of its
own: it lists the company's webhooks first (meetergo keeps at most six and answers `406 "Limit reached"`
beyond), reuses or repairs the one that is meetbridge's, and never touches another integration's. Then it
checks what the service needs from Zoom, NeetoCal and meetergo and prints one checklist; the exit status
says whether everything is ready.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from meetbridge.config import GENERATE_HINT, Settings
from meetbridge.doctor import Check, _api, _meetergo, _neetocal, _zoom, neetocal_template, zoom_scopes
from meetbridge.logs import mask_url, redact
from workers.clients.errors import APIError, AuthError, MeetbridgeError
from workers.wiring import Services

WEBHOOK_PATH = "/webhooks/meetergo"
# What the service acts on; meetergo's other types (new_employee, form_submission) would only be ignored.
EVENT_TYPES = ("booking_created", "booking_rescheduled", "booking_cancelled")
DESCRIPTION = "meetbridge"
MAX_WEBHOOKS = 6  # per company (developer-docs/webhooks/managing-webhooks)
LIMIT_REACHED = 406
NAME = "meetergo webhook"


@dataclass(frozen=True)
class WebhookPlan:
    """What registering the webhook takes: `keep`, `update` (with `changes`), `create`, or `limit` (no room)."""

    action: str
    webhook: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    duplicates: tuple[dict[str, Any], ...] = ()  # more registrations of ours, left alone


def webhook_endpoint(settings: Settings) -> str:
    """The URL meetergo should post to: PUBLIC_URL + the webhook path, carrying the first webhook token."""
    return f"{settings.public_url.rstrip('/')}{WEBHOOK_PATH}?token={quote(settings.webhook_tokens[0], safe='')}"


def _base(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def is_ours(endpoint: str, settings: Settings) -> bool:
    """A registration of this service: our PUBLIC_URL and path whatever its token (an old one, before a
    rotation), or our path carrying one of our tokens wherever it points (PUBLIC_URL moved)."""
    if _base(endpoint) == _base(webhook_endpoint(settings)):
        return True
    parts = urlsplit(endpoint)
    tokens = {value for name, value in parse_qsl(parts.query) if name == "token"}
    return parts.path.rstrip("/").endswith(WEBHOOK_PATH) and bool(tokens & set(settings.webhook_tokens))


def plan_webhook(existing: list[dict[str, Any]], settings: Settings) -> WebhookPlan:
    wanted = webhook_endpoint(settings)
    ours = [webhook for webhook in existing if is_ours(str(webhook.get("endpoint") or ""), settings)]
    if not ours:
        return WebhookPlan("limit" if len(existing) >= MAX_WEBHOOKS else "create")
    # Of several (made by hand, or by another tool), the one already right is kept; the others are reported.
    chosen = next((webhook for webhook in ours if not _changes(webhook, wanted)), ours[0])
    changes = _changes(chosen, wanted)
    duplicates = tuple(webhook for webhook in ours if webhook is not chosen)
    return WebhookPlan("update" if changes else "keep", chosen, changes, duplicates)


def _changes(webhook: dict[str, Any], wanted: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if webhook.get("endpoint") != wanted:
        changes["endpoint"] = wanted
    if set(webhook.get("eventTypes") or ()) != set(EVENT_TYPES):
        changes["eventTypes"] = list(EVENT_TYPES)
    return changes


# Path segments that look like a credential (hook ids of Zapier, Make, n8n…): long, with letters and digits.
_SECRETISH_SEGMENT = re.compile(r"^(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_\-.~%]{16,}$")


def redact_url(url: str) -> str:
    """A webhook endpoint fit to print: secrets in its query, userinfo and credential-like path segments hidden."""
    parts = urlsplit(redact(url))
    path = "/".join("<redacted>" if _SECRETISH_SEGMENT.match(segment) else segment
                    for segment in parts.path.split("/"))
    return parts._replace(path=path).geturl()


def _describe(webhook: dict[str, Any]) -> str:
    return f"{webhook.get('id')}: {redact_url(str(webhook.get('endpoint') or ''))}"


# ------------------------------------------------------------------------------------------- the webhook


def register_webhook(services: Services, *, dry_run: bool, allow_http: bool) -> Iterator[Check]:
    """Make meetergo hold exactly one up-to-date webhook of ours; FAIL lines say why it could not."""
    settings = services.settings
    refusal = _refusal(settings, allow_http)
    if refusal:
        yield Check(NAME, "fail", refusal)
        return
    try:
        existing = services.meetergo.list_webhooks()
    except AuthError as error:
        yield Check(NAME, "fail", f"meetergo refused the API key listing webhooks: {error}")
        return
    except MeetbridgeError as error:
        yield Check(NAME, "fail", f"could not list meetergo's webhooks: {error}")
        return
    plan = plan_webhook(existing, settings)
    yield _carry_out(services, plan, existing, dry_run=dry_run)
    if plan.duplicates:
        yield Check(NAME, "warn", f"{len(plan.duplicates)} more registration(s) of meetbridge, left as they are "
                    f"(deliveries are deduplicated): {'; '.join(_describe(w) for w in plan.duplicates)}; "
                    "delete them with DELETE /webhooks/{id}")


def _refusal(settings: Settings, allow_http: bool) -> str | None:
    if not settings.meetergo_api_key:
        return ("MEETERGO_API_KEY is not set: connect registers the webhook through meetergo's API "
                "(README: Connect the real services, meetergo)")
    if not settings.webhook_tokens:
        return f"MEETERGO_WEBHOOK_TOKENS is not set: the webhook URL carries its first token ({GENERATE_HINT})"
    if urlsplit(settings.public_url).scheme != "https" and not allow_http:
        # meetergo: "Use HTTPS in production" (developer-docs/webhooks/managing-webhooks).
        return (f"PUBLIC_URL {mask_url(settings.public_url)} is not https://: meetergo asks for HTTPS in production "
                "and the URL carries the webhook token; set an https:// PUBLIC_URL, or pass --allow-http for a "
                "local test. Nothing was registered")
    return None


def _carry_out(services: Services, plan: WebhookPlan, existing: list[dict[str, Any]], *, dry_run: bool) -> Check:
    wanted = webhook_endpoint(services.settings)
    events = ", ".join(EVENT_TYPES)
    if plan.action == "keep":
        assert plan.webhook is not None
        return Check(NAME, "ok", f"registered as {_describe(plan.webhook)} for {events}")
    if plan.action == "limit":
        return _limit_reached(existing)
    if dry_run:
        if plan.action == "update":
            assert plan.webhook is not None
            return Check(NAME, "fail", f"would update {_describe(plan.webhook)}: "
                         f"{_summary(plan.webhook, plan.changes)} (dry run: nothing changed)")
        return Check(NAME, "fail", f"would register {redact_url(wanted)} for {events} (dry run: nothing changed)")
    try:
        if plan.action == "update":
            assert plan.webhook is not None
            updated = {**plan.webhook, **services.meetergo.update_webhook(str(plan.webhook["id"]), plan.changes)}
            return Check(NAME, "ok", f"updated {_describe(updated)}: {_summary(plan.webhook, plan.changes)}")
        created = services.meetergo.create_webhook(wanted, list(EVENT_TYPES), DESCRIPTION)
    except MeetbridgeError as error:
        if isinstance(error, APIError) and error.status == LIMIT_REACHED:  # another registration got in since the list
            return _limit_reached(_relisted(services, existing))
        return Check(NAME, "fail", f"meetergo did not take the registration: {error}")
    return Check(NAME, "ok", f"registered as {_describe(created)} for {events}")


def _summary(webhook: dict[str, Any], changes: dict[str, Any]) -> str:
    """What a patch changes, in words that show no token (two redacted URLs would look alike)."""
    parts = []
    if "endpoint" in changes:
        same_place = _base(str(webhook.get("endpoint") or "")) == _base(changes["endpoint"])
        parts.append("token set to the first of MEETERGO_WEBHOOK_TOKENS" if same_place
                     else f"endpoint set to {redact_url(changes['endpoint'])}")
    if "eventTypes" in changes:
        parts.append(f"events set to {', '.join(changes['eventTypes'])}")
    return " and ".join(parts)


def _relisted(services: Services, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return services.meetergo.list_webhooks()
    except MeetbridgeError:
        return earlier


def _limit_reached(existing: list[dict[str, Any]]) -> Check:
    listed = "; ".join(_describe(webhook) for webhook in existing)
    return Check(NAME, "fail", f"meetergo's limit of {MAX_WEBHOOKS} webhooks per company is reached "
                 f"(406 \"Limit reached\") and none is meetbridge's: {listed}. Delete one that is no longer used "
                 "(DELETE /webhooks/{id}) and run connect again; nothing was created")


# ---------------------------------------------------------------------------------------------- the rest


def readiness(services: Services) -> Iterator[Check]:
    """What the service needs beyond the webhook: Zoom's token and scopes, the NeetoCal key and template (the
    checks `meetbridge doctor` makes), the meetergo key."""
    settings = services.settings
    zoom = _api("Zoom", _zoom, services)
    yield zoom
    if zoom.level == "ok":
        yield zoom_scopes(services)
    neetocal = _api("NeetoCal", _neetocal, services)
    yield neetocal
    if neetocal.level == "ok":  # the template is looked up with the same key
        yield neetocal_template(services)
    if settings.meetergo_api_key:
        yield _api("meetergo", _meetergo, services)
    else:
        yield Check("meetergo", "fail", "MEETERGO_API_KEY is not set: no webhook registration, no read-back, "
                    "no reconciliation of lost webhooks")


def connect(services: Services, *, dry_run: bool = False, allow_http: bool = False) -> Iterator[Check]:
    """The whole checklist, the webhook first (it is what connect changes)."""
    yield from register_webhook(services, dry_run=dry_run, allow_http=allow_http)
    yield from readiness(services)
