"""`GET /openapi.json`: the service's own HTTP API, as operators and the fuzz tests see it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__)

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "details": {"type": "object"}},
          "required": ["error"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ERROR, description)


_HOST = {"type": "object", "required": ["email"], "properties": {
    "id": {"type": "string"}, "email": {"type": "string", "format": "email"},
    "fullName": {"type": "string"}, "givenName": {"type": "string"}, "familyName": {"type": "string"}}}
_ATTENDEE = {"type": "object", "required": ["email"], "properties": {
    "email": {"type": "string", "format": "email"}, "firstname": {"type": "string"},
    "lastname": {"type": "string"}, "fullname": {"type": "string"}, "timezone": {"type": "string"}}}
_APPOINTMENT = {
    "type": "object",
    "required": ["id", "start", "end", "hosts", "attendees"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "hosts": {"type": "array", "minItems": 1, "items": _HOST},
        "attendees": {"type": "array", "minItems": 1, "items": _ATTENDEE},
        "meetingType": {"type": "object", "properties": {
            "id": {"type": "string"}, "slug": {"type": "string"},
            "meetingInfo": {"type": "object", "properties": {"name": {"type": "string"}}}}},
        "isCancelled": {"type": "boolean"},
        "cancel": {"type": "object"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "rescheduledAt": {"type": "string", "format": "date-time"},
    },
}
_DELIVERY = {
    "oneOf": [
        {"allOf": [_APPOINTMENT, {"type": "object", "required": ["webhookType"], "properties": {
            "webhookType": {"type": "string", "enum": ["booking_created", "booking_rescheduled", "booking_cancelled",
                                                       "new_employee", "form_submission"]},
            "rescheduledAppointment": _APPOINTMENT, "oldStartDate": {"type": "string"}}}]},
        {"type": "object", "required": ["event", "data"], "properties": {
            "event": {"type": "string"}, "data": _APPOINTMENT}},
    ]
}
_APPOINTMENT_VIEW = {
    "type": "object",
    "required": ["appointment_id", "status", "zoom", "neetocal", "host_link", "error", "history"],
    "properties": {
        "appointment_id": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "synced", "cancelled", "skipped", "failed", "waiting"]},
        "zoom": {"type": "object", "properties": {
            "meeting_id": {"type": ["integer", "null"]}, "join_url": {"type": ["string", "null"]},
            "start_url_expires_at": {"type": ["string", "null"]},
            "none_because": {"type": ["string", "null"]}}},
        "neetocal": {"type": "object", "properties": {
            "booking_sid": {"type": ["string", "null"]}, "meeting_slug": {"type": ["string", "null"]}}},
        "host_link": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "warning": {"type": ["string", "null"],
                    "description": "what the service noticed but could not fix, e.g. NeetoCal dropped the join URL"},
        "waiting": {"type": ["object", "null"]},
        "history": {"type": "array", "items": {"type": "object", "properties": {
            "at": {"type": "string"}, "event": {"type": "string"}, "detail": {"type": "string"}}}},
    },
}
_ADMIN_AUTH = [{"admin": []}]
_APPOINTMENT_ID = {"name": "appointment_id", "in": "path", "required": True, "schema": {"type": "string"}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "meetbridge", "version": "0.1.0",
             "description": "Keeps Zoom meetings and NeetoCal bookings in step with meetergo appointments."},
    "components": {"securitySchemes": {
        "admin": {"type": "http", "scheme": "bearer"},
        "webhookToken": {"type": "apiKey", "in": "query", "name": "token"},
    }},
    "paths": {
        "/webhooks/meetergo": {"post": {
            "summary": "A meetergo webhook delivery (either envelope).",
            "security": [{"webhookToken": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _DELIVERY}}},
            "responses": {
                "202": _json({"type": "object", "required": ["status", "appointment_id"], "properties": {
                    "status": {"type": "string", "enum": ["accepted", "duplicate", "ignored"]},
                    "appointment_id": {"type": ["string", "null"]}}}, "Durably queued (or a duplicate / ignored)."),
                "400": _error("Not a valid event; `details` names each bad field."),
                "401": _error("Missing or wrong token."),
                "413": _error("Body over 256 KiB."),
                "415": _error("Body is not JSON."),
                "503": _error("Could not be queued (Redis unreachable); send it again."),
            },
        }},
        "/api/appointments/{appointment_id}": {"get": {
            "summary": "The service's view of one appointment.",
            "security": _ADMIN_AUTH,
            "parameters": [_APPOINTMENT_ID],
            "responses": {"200": _json(_APPOINTMENT_VIEW, "The appointment."),
                          "401": _error("Missing or wrong admin token."),
                          "404": _error("Unknown appointment (or no ADMIN_TOKEN configured).")},
        }},
        "/api/appointments/{appointment_id}/replay": {"post": {
            "summary": "Run the appointment's sync again (safe to repeat).",
            "security": _ADMIN_AUTH,
            "parameters": [_APPOINTMENT_ID],
            "responses": {"202": _json({"type": "object"}, "Queued."),
                          "401": _error("Missing or wrong admin token."),
                          "404": _error("Unknown appointment.")},
        }},
        "/h/{appointment_id}/{signature}": {"get": {
            "summary": "A host's stable start link: redirects to a valid Zoom start_url.",
            "parameters": [_APPOINTMENT_ID,
                           {"name": "signature", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"302": {"description": "To the Zoom start_url."},
                          "403": _error("Tampered link."), "404": _error("Unknown appointment."),
                          "410": _error("Cancelled appointment."),
                          "503": _error("Zoom meeting not ready or Zoom unreachable; try again.")},
        }},
        "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": {"description": "Running."}}}},
        "/readyz": {"get": {"summary": "Readiness (Redis answers).",
                            "responses": {"200": {"description": "Ready."}, "503": _error("Redis unreachable.")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics.",
                             "responses": {"200": {"description": "Text exposition format."}}}},
    },
}


@bp.get("/openapi.json")
def openapi() -> object:
    return jsonify(DOCUMENT)
