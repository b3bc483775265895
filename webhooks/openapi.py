"""`GET /openapi.json`: the service's own HTTP API, as operators and the fuzz tests see it.

A delivery's schema is derived from the marshmallow schemas the receiver loads it with (`json_schema`), so the
two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from marshmallow import Schema, fields
from marshmallow.validate import Length, Regexp

from schemas.events import ACTIONABLE_EVENTS, IGNORED_EVENTS
from schemas.meetergo import AppointmentSchema

bp = Blueprint("openapi", __name__)

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "details": {"type": "object"}},
          "required": ["error"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ERROR, description)


def json_schema(schema: Schema | type[Schema]) -> dict[str, Any]:
    """The JSON Schema of what a marshmallow schema loads: its fields (by their `data_key`), required ones,
    `allow_none`, and the `Length` and `Regexp` validators. Validators written as functions (a time zone's name,
    the years allowed) and `@validates_schema` rules stay the receiver's own: it answers 400 for them."""
    loaded = schema() if isinstance(schema, type) else schema
    properties = {field.data_key or name: _field(field) for name, field in loaded.load_fields.items()}
    required = [field.data_key or name for name, field in loaded.load_fields.items() if field.required]
    return {"type": "object", **({"required": required} if required else {}), "properties": properties}


# The JSON type of each field class; subclasses first (an Email is a String).
_TYPES: tuple[tuple[type[fields.Field], dict[str, Any]], ...] = (
    (fields.Email, {"type": "string", "format": "email"}),
    (fields.DateTime, {"type": "string", "format": "date-time"}),
    (fields.String, {"type": "string"}),
    (fields.Boolean, {"type": "boolean"}),
)


def _field(field: fields.Field) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        nested = json_schema(field.schema)
        return {"anyOf": [nested, {"type": "null"}]} if field.allow_none else nested
    if isinstance(field, fields.List):
        described: dict[str, Any] = {"type": "array", "items": _field(field.inner)}
    elif type(field) is fields.Raw:
        return {}  # anything, null included
    else:
        kind = next((dict(kind) for cls, kind in _TYPES if isinstance(field, cls)), None)
        if kind is None:  # a new kind of field: describe it here rather than let the document drift
            raise TypeError(f"no JSON Schema for {type(field).__name__}")
        described = kind
    for validator in field.validators:
        described.update(_constraints(validator, described["type"]))
    if field.allow_none:
        described["type"] = [described["type"], "null"]
    return described


def _constraints(validator: Any, json_type: str) -> dict[str, Any]:
    if isinstance(validator, Length):
        names = ("minItems", "maxItems") if json_type == "array" else ("minLength", "maxLength")
        return {name: bound for name, bound in zip(names, (validator.min, validator.max), strict=True)
                if bound is not None}
    if isinstance(validator, Regexp):
        # Python's whole-string anchors, in the ECMA-262 dialect JSON Schema patterns use.
        return {"pattern": validator.regex.pattern.replace("\\A", "^").replace("\\Z", "$")}
    return {}


_APPOINTMENT = json_schema(AppointmentSchema)
_DELIVERY = {
    "oneOf": [
        {"allOf": [_APPOINTMENT, {"type": "object", "required": ["webhookType"], "properties": {
            "webhookType": {"type": "string", "enum": [*ACTIONABLE_EVENTS, *IGNORED_EVENTS]},
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
