"""NeetoCal v1 external API: scheduling links and bookings (`X-Api-Key`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from schemas.neetocal import (
    Booking,
    BookingRequest,
    BookingRequestSchema,
    BookingResponseSchema,
    Link,
    LinkRequestSchema,
    LinkResponseSchema,
    LinkSpec,
    RescheduleRequestSchema,
    always_available,
)
from workers.clients.base import ApiClient
from workers.clients.errors import APIError, NotConfigured, SlotUnavailable, ValidationFailed

PAGE_SIZE = 100


class NeetoCalClient(ApiClient):
    service = "neetocal"

    def __init__(self, base_url: str | None, *, api_key: str | None, **kwargs: Any) -> None:
        super().__init__(base_url or "http://neetocal.invalid", **kwargs)
        self.configured = bool(base_url and api_key)
        self.api_key = api_key or ""

    # --- scheduling links --------------------------------------------------------------------------------
    def find_link(self, host_email: str, slug: str) -> Link | None:
        for item in self._pages("meetings", "list_links", "meetings", host_email=host_email):
            if item.get("slug") == slug:
                return LinkResponseSchema().load(item)
        return None

    def create_link(self, spec: LinkSpec) -> Link:
        response = self.request("POST", "meetings", operation="create_link", json=LinkRequestSchema().dump(spec))
        return LinkResponseSchema().load(response.json()["meeting"])

    def open_availability(self, link: Link) -> None:
        self.request("POST", f"meetings/{link.sid}/availability", operation="set_availability",
                     json=always_available(), retries=2)

    def set_custom_spot(self, link: Link, text: str) -> None:
        self.request("POST", f"meetings/{link.sid}/spots", operation="create_spot",
                     json={"spot": "custom", "spot_custom_text": text, "is_default": True})

    # --- bookings ----------------------------------------------------------------------------------------
    def create_booking(self, booking: BookingRequest) -> Booking:
        response = self.request("POST", "bookings", operation="create_booking",
                                json=BookingRequestSchema().dump(booking))
        return BookingResponseSchema().load(response.json())

    def find_booking(self, client_email: str, answer: str) -> Booking | None:
        """The live booking of `client_email` that carries `answer` in its form responses."""
        for item in self._pages("bookings", "list_bookings", "bookings", client_email=client_email):
            booking = BookingResponseSchema().load(item)
            if booking.status != "cancelled" and answer in booking.answers:
                return booking
        return None

    def get_booking(self, sid: str) -> Booking:
        response = self.request("GET", f"bookings/{sid}", operation="get_booking")
        return BookingResponseSchema().load(response.json())

    def reschedule_booking(self, sid: str, booking: BookingRequest) -> Booking:
        # Not repeated within the call: after a lost answer the sync first reads the booking back.
        response = self.request("PATCH", f"bookings/{sid}", operation="reschedule_booking", retries=0,
                                json=RescheduleRequestSchema().dump(booking))
        return BookingResponseSchema().load(response.json())

    def cancel_booking(self, sid: str, reason: str) -> None:
        """Cancel; a booking that is already cancelled counts as done (repeat behaviour is undocumented)."""
        if self.get_booking(sid).status == "cancelled":
            return
        try:
            self.request("POST", f"bookings/{sid}/cancel", operation="cancel_booking",
                         json={"cancel_reason": reason[:500]}, retries=2)
        except ValidationFailed:
            if self.get_booking(sid).status != "cancelled":
                raise

    # --- plumbing ----------------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        if not self.configured:
            raise NotConfigured("NEETOCAL_API_URL and NEETOCAL_API_KEY are not set", service="neetocal")
        return {"X-Api-Key": self.api_key}

    def _pages(self, path: str, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            body = self.request("GET", path, operation=operation,
                                params={**params, "page_number": page, "page_size": PAGE_SIZE}).json()
            items = body.get(key) or []
            yield from items
            pagination = body.get("pagination") or {}
            total_pages = pagination.get("total_pages")
            if not items or (total_pages is not None and page >= int(total_pages)) or len(items) < PAGE_SIZE:
                return
            page += 1

    def error_from(self, response: httpx.Response, operation: str) -> APIError:
        error = super().error_from(response, operation)
        text = error.message.lower()
        if response.status_code == 422 and "slot" in text and ("available" in text or "taken" in text):
            return SlotUnavailable(error.message, service="neetocal", status=422, body=error.body)
        return error
