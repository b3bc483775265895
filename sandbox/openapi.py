"""Request and response checks against an OpenAPI 3.0 document (used for the Zoom subset).

Two deliberate departures from a literal reading of the document, both because the document itself is
wrong for real traffic:
- `oneOf` is checked as `anyOf`. Zoom's `userId` is `oneOf: [string, string/email, "me"]`; the branches
  overlap, so under strict `oneOf` every email and "me" would match two branches and be rejected.
- Callers may drop `format` from named body fields they check more strictly themselves (Zoom's
  `start_time` also accepts a local `yyyy-MM-ddTHH:mm:ss`, which RFC 3339 `date-time` rejects).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker

ZOOM_SPEC_RESOURCE = "specs/zoom-meetings-openapi-subset.json"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # "path" | "query"
    required: bool
    schema: Mapping[str, Any]
    validator: OAS30Validator


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[Parameter, ...]
    body_validator: OAS30Validator | None
    responses: Mapping[str, Any]

    def check_parameters(self, values: Mapping[str, Mapping[str, str]]) -> list[FieldError]:
        """Check raw string parameters, keyed by location ("path", "query"), against their schemas."""
        errors: list[FieldError] = []
        for parameter in self.parameters:
            raw = values.get(parameter.location, {}).get(parameter.name)
            if raw is None:
                if parameter.required:
                    errors.append(FieldError(parameter.name, f"{parameter.name} is required"))
                continue
            value = coerce(raw, parameter.schema)
            errors.extend(
                FieldError(parameter.name, error.message) for error in parameter.validator.iter_errors(value)
            )
        return errors

    def check_body(self, body: Any) -> list[FieldError]:
        if self.body_validator is None:
            return []
        return [_field_error(error) for error in _sorted(self.body_validator.iter_errors(body))]

    def response_schema(self, status: int | str) -> Mapping[str, Any] | None:
        """The JSON schema of a documented response, or None when it has no JSON body."""
        content = self.responses.get(str(status), {}).get("content", {})
        media = content.get("application/json")
        return media.get("schema") if media else None


class OpenApiContract:
    def __init__(self, document: Mapping[str, Any], *, unformatted_body_fields: Iterable[str] = ()) -> None:
        self._operations: dict[tuple[str, str], Operation] = {}
        relaxed = set(unformatted_body_fields)
        for path, methods in document["paths"].items():
            for method, spec in methods.items():
                self._operations[(method.upper(), path)] = _operation(method.upper(), path, spec, relaxed)

    def operation(self, method: str, path: str) -> Operation:
        return self._operations[(method.upper(), path)]


def validate_instance(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every problem with `instance` under `schema` (OAS 3.0 rules and formats); empty when valid."""
    errors = _sorted(_validator(_any_of_for_one_of(schema)).iter_errors(instance))
    return [f"{_dotted(error.absolute_path) or '<root>'}: {error.message}" for error in errors]


@cache
def zoom_contract() -> OpenApiContract:
    text = resources.files("sandbox").joinpath(ZOOM_SPEC_RESOURCE).read_text(encoding="utf-8")
    return OpenApiContract(json.loads(text), unformatted_body_fields=("start_time",))


def coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    """A query/path string as the type its schema declares (left as is when it does not parse)."""
    kind = schema.get("type")
    if kind == "integer" and raw.lstrip("-").isdigit():
        return int(raw)
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


# --------------------------------------------------------------------------------------- internals


def _operation(method: str, path: str, spec: Mapping[str, Any], relaxed: set[str]) -> Operation:
    parameters = []
    for item in spec.get("parameters", []):
        schema = _any_of_for_one_of(item.get("schema", {}))
        required = bool(item.get("required", False))
        parameters.append(Parameter(item["name"], item["in"], required, schema, _validator(schema)))
    body_validator = None
    if "requestBody" in spec:
        body_schema = _without_formats(spec["requestBody"]["content"]["application/json"]["schema"], relaxed)
        body_validator = _validator(body_schema)
    return Operation(method, path, tuple(parameters), body_validator, spec.get("responses", {}))


def _any_of_for_one_of(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            ("anyOf" if key == "oneOf" else key): _any_of_for_one_of(value) for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_any_of_for_one_of(item) for item in schema]
    return schema


def _without_formats(schema: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    relaxed = copy.deepcopy(dict(schema))
    for name in fields:
        relaxed.get("properties", {}).get(name, {}).pop("format", None)
    return _any_of_for_one_of(relaxed)


def _validator(schema: Mapping[str, Any]) -> OAS30Validator:
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def _sorted(errors: Iterable[ValidationError]) -> list[ValidationError]:
    return sorted(errors, key=lambda error: [str(part) for part in error.absolute_path])


def _field_error(error: ValidationError) -> FieldError:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        path.append(missing[0] if missing else "")
    return FieldError(_dotted(path), error.message)


def _dotted(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
