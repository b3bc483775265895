"""Issue 12: `/openapi.json` describes a delivery from the marshmallow schemas the receiver loads it with, so the
document and the receiver cannot drift apart (test_fuzz.py runs schemathesis over the served document)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from marshmallow import Schema, ValidationError, fields

from schemas.meetergo import AppointmentSchema, AttendeeSchema, HostSchema
from webhooks.openapi import DOCUMENT, json_schema


def delivery_appointment() -> dict[str, Any]:
    delivery = DOCUMENT["paths"]["/webhooks/meetergo"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return delivery["oneOf"][1]["properties"]["data"]


def test_the_appointment_is_the_one_the_receiver_loads() -> None:
    appointment = delivery_appointment()
    assert set(appointment["properties"]) == set(AppointmentSchema().load_fields)
    assert appointment["required"] == [name for name, field in AppointmentSchema().load_fields.items()
                                       if field.required]
    # An attendee may come without an email (a phone-only booking): the document no longer says otherwise.
    attendee = appointment["properties"]["attendees"]["items"]
    assert attendee == json_schema(AttendeeSchema) and "required" not in attendee
    assert appointment["properties"]["hosts"]["items"]["required"] == ["email"] == [
        name for name, field in HostSchema().load_fields.items() if field.required]


@pytest.mark.parametrize("candidate", ["appt-uuid-12345", "a", "A" * 200, "1.2:3_4-5", "", "-a", ".a", "A" * 201,
                                       "a b", "a/b", "a\u00e9"])
def test_the_documented_id_pattern_agrees_with_the_receiver(candidate: str) -> None:
    pattern = delivery_appointment()["properties"]["id"]["pattern"]
    try:
        AppointmentSchema().fields["id"].deserialize(candidate)
        accepted = True
    except ValidationError:
        accepted = False
    assert (re.search(pattern, candidate) is not None) == accepted


def test_a_field_the_document_cannot_describe_is_an_error_not_a_gap() -> None:
    class Unknown(Schema):
        count = fields.Integer()

    with pytest.raises(TypeError, match="Integer"):
        json_schema(Unknown)
