"""meetergo REST API (v4): appointments read back for the truth, the company's users (host emails), and the
webhook registrations `meetbridge connect` manages."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from schemas.text import whole_characters
from workers.clients.base import ApiClient
from workers.clients.errors import NotConfigured, ValidationFailed
from workers.clients.paging import numbered_pages, offset_pages
from workers.limits import RateLimiter

PAGE_SIZE = 50


class MeetergoClient(ApiClient):
    service = "meetergo"

    def __init__(self, base_url: str, *, api_key: str | None, api_user_id: str | None = None,
                 limiter: RateLimiter | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.api_key = api_key
        self.api_user_id = api_user_id
        self.limiter = limiter

    def get_appointment(self, appointment_id: str) -> dict[str, Any]:
        return whole_characters(
            self.request("GET", f"v4/appointment/{appointment_id}", operation="get_appointment").json())

    def appointments(self) -> Iterator[dict[str, Any]]:
        """Every appointment, page by page.

        The docs number pages from 1, the n8n node from 0: start at 0 (skipped if refused) and drop
        appointments already seen, so either numbering yields each appointment once.
        """
        def fetch(page: int) -> tuple[list[dict[str, Any]], None]:
            body = whole_characters(self.request("GET", "v4/appointment/paginated", operation="list_appointments",
                                                 params={"page": page, "limit": PAGE_SIZE, "pageSize": PAGE_SIZE}
                                                 ).json())
            return [item for item in body.get("appointments") or [] if isinstance(item, dict)], None

        pages = numbered_pages(fetch, page_size=PAGE_SIZE, first=0)
        try:
            first_page = next(pages, [])
        except ValidationFailed:  # page 0 refused: this API counts from 1
            pages = numbered_pages(fetch, page_size=PAGE_SIZE, first=1)
        else:
            pages = itertools.chain([first_page], pages)
        seen: set[str] = set()
        stale_pages = 0
        for items in pages:
            fresh = [item for item in items if item.get("id") not in seen]
            seen.update(str(item.get("id")) for item in fresh)
            yield from fresh
            # Two full pages in a row with nothing new: the API is repeating itself; stop rather than loop.
            stale_pages = 0 if fresh else stale_pages + 1
            if stale_pages >= 2:
                return

    def users(self) -> Iterator[dict[str, Any]]:
        def fetch(offset: int) -> tuple[list[dict[str, Any]], int]:
            body = self.request("GET", "v4/user", operation="list_users",
                                params={"limit": 100, "offset": offset}).json()
            return body.get("users") or [], int(body.get("total") or 0)

        for users in offset_pages(fetch):
            yield from users

    # Webhook management lives at /webhooks, outside /v4 (developer-docs/webhooks/managing-webhooks).
    def list_webhooks(self) -> list[dict[str, Any]]:
        body = self.request("GET", "webhooks", operation="list_webhooks").json()
        return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []

    def create_webhook(self, endpoint: str, event_types: list[str], description: str) -> dict[str, Any]:
        """Register a webhook; a company holding meetergo's maximum already gets `406 "Limit reached"`."""
        body = {"endpoint": endpoint, "description": description, "eventTypes": event_types}
        result: dict[str, Any] = self.request("POST", "webhooks", operation="create_webhook", json=body).json()
        return result

    def update_webhook(self, webhook_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PATCH", f"webhooks/{webhook_id}", operation="update_webhook",
                                              json=changes).json()
        return result

    def auth_headers(self) -> dict[str, str]:
        if not self.api_key:
            raise NotConfigured("MEETERGO_API_KEY is not set", service="meetergo")
        headers = {"Authorization": f"Bearer {self.api_key}"}
        # A platform key acts for the company and must name the user it acts as; a personal token must not.
        if self.api_key.startswith("ak_live:") and self.api_user_id:
            headers["x-meetergo-api-user-id"] = self.api_user_id
        return headers

    def before_request(self, operation: str) -> None:
        if self.limiter:
            self.limiter.acquire()

    def describe_error(self, body: Any) -> tuple[str, int | str | None]:
        message, _ = super().describe_error(body)
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in body["errors"]
                                if isinstance(e, dict))
            message = f"{message} ({details})" if details else message
        return message, None
