"""The control plane every simulator shares: config, reset, the request log, fault injection, latency.

A simulator builds one `SandboxControl` (its own config keys, its API's error bodies, a reset callback)
and calls `install(app)`. From then on every request outside `/_sandbox` is logged, delayed by
`latency_ms` and, with probability `fault_rate`, answered with a fault instead of (or, for calls that
change state, possibly after) being handled. Handlers take `control.lock` around their state and call
`control.mark_applied()` when they changed it, so the log can tell ambiguous outcomes apart.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import random
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import InternalServerError, MethodNotAllowed, NotFound

from sandbox.util import BodyError, iso_millis, json_object_body, utcnow

FAULT_KINDS = ("500", "429", "timeout", "reset")
CONTROL_PREFIX = "/_sandbox"
REDACTED = "<redacted>"
_REDACTED_HEADERS = frozenset({"authorization", "x-api-key"})
# Only these can leave state behind, so only they can fail "after commit".
_MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ABORTED_KEY = "sandbox.connection_aborted"

# --------------------------------------------------------------------------------------------- config

Check = Callable[[Any], str | None]
"""Validates one config value: None when acceptable, else a message for the 400."""


@dataclass(frozen=True)
class ConfigKey:
    default: Any
    check: Check
    # For object-valued keys: the allowed sub-keys. A PATCH merges into the object instead of replacing it.
    fields: Mapping[str, ConfigKey] | None = None


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is never a sensible number of milliseconds.
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(minimum: float | None = None, maximum: float | None = None, *, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        in_range = _is_number(value) and (minimum is None or value >= minimum)
        if in_range and (maximum is None or value <= maximum):
            return None
        bounds = f" between {minimum} and {maximum}" if maximum is not None else f" >= {minimum}"
        return "must be a number" + (bounds if minimum is not None else "") + (" or null" if nullable else "")

    return check


def integer(minimum: int | None = None, *, nullable: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum):
            return None
        bound = f" >= {minimum}" if minimum is not None else ""
        return f"must be an integer{bound}" + (" or null" if nullable else "")

    return check


def boolean() -> Check:
    return lambda value: None if isinstance(value, bool) else "must be true or false"


def text(choices: Iterable[str] | None = None) -> Check:
    allowed = tuple(choices) if choices is not None else None

    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if allowed is not None and value not in allowed:
            return f"must be one of {list(allowed)}"
        return None

    return check


def string_list(
    *, choices: Iterable[str] | None = None, non_empty: bool = False, nullable: bool = False
) -> Check:
    allowed = tuple(choices) if choices is not None else None

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return "must be a list of strings" + (" or null" if nullable else "")
        if non_empty and not value:
            return "must not be empty"
        if allowed is not None and any(item not in allowed for item in value):
            return f"items must be among {list(allowed)}"
        return None

    return check


def any_object() -> Check:
    return lambda value: None if isinstance(value, dict) else "must be an object"


SHARED_CONFIG: Mapping[str, ConfigKey] = {
    "latency_ms": ConfigKey(0, number(minimum=0)),
    "fault_rate": ConfigKey(0.0, number(0, 1)),
    "fault_kinds": ConfigKey(list(FAULT_KINDS), string_list(choices=FAULT_KINDS, non_empty=True)),
    "timeout_seconds": ConfigKey(5.0, number(minimum=0)),
    "fault_after_commit_rate": ConfigKey(0.5, number(0, 1)),
    # Seeds the fault dice so a test with 0 < fault_rate < 1 sees the same sequence every run.
    "seed": ConfigKey(None, integer(nullable=True)),
    # Faults aimed at named calls, for tests of one recovery path: each item is
    # {"method": "POST", "path": "/meetings", "kind": "reset", "after_commit": true, "times": 1};
    # `path` matches as a substring, `times` counts down to 0. "reset" after commit applies the request and
    # drops the connection: the client cannot tell whether it happened.
    "scripted_faults": ConfigKey([], lambda value: _check_scripted(value)),
}


def _check_scripted(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of objects"
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str) or not isinstance(
                item.get("path"), str) or item.get("kind") not in FAULT_KINDS:
            return f"each item needs method, path and a kind among {list(FAULT_KINDS)}"
        if not isinstance(item.get("times", 1), int) or not isinstance(item.get("after_commit", False), bool):
            return "times must be an integer and after_commit true or false"
    return None


class ConfigError(ValueError):
    pass


def _defaults(keys: Mapping[str, ConfigKey]) -> dict[str, Any]:
    return {name: copy.deepcopy(key.default) for name, key in keys.items()}


def _merge_patch(
    current: dict[str, Any], patch: Mapping[str, Any], keys: Mapping[str, ConfigKey]
) -> dict[str, Any]:
    """The config after applying `patch`; raises ConfigError without changing anything on a bad patch."""
    unknown = sorted(set(patch) - set(keys))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    merged = copy.deepcopy(current)
    for name, value in patch.items():
        key = keys[name]
        if key.fields is not None and isinstance(value, dict):
            merged[name] = _merge_patch(merged[name], value, key.fields)
            continue
        problem = key.check(value)
        if problem:
            raise ConfigError(f"{name}: {problem}")
        merged[name] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------- API errors


class ApiErrors(Protocol):
    """How one API spells its generic failures (used for injected faults and unknown routes)."""

    def server_error(self) -> Response: ...

    def rate_limited(self) -> Response: ...

    def gateway_timeout(self) -> Response: ...

    def not_found(self) -> Response: ...

    def method_not_allowed(self) -> Response: ...


def json_response(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


# ------------------------------------------------------------------------------------------ control


@dataclass
class _Call:
    """What the control plane tracks for one API call while it is being handled."""

    entry: dict[str, Any]  # its request-log entry, kept current while the call runs
    fault: str | None
    after_commit: bool
    fault_delivered: bool = False


@dataclass
class _State:
    config: dict[str, Any]
    rng: random.Random
    log: list[dict[str, Any]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Set on reset, so requests held by latency or a "timeout" fault give up at once.
    release: threading.Event = field(default_factory=threading.Event)


class SandboxControl:
    def __init__(
        self,
        *,
        config_keys: Mapping[str, ConfigKey],
        errors: ApiErrors,
        on_reset: Callable[[], None],
    ) -> None:
        overlap = set(config_keys) & set(SHARED_CONFIG)
        if overlap:
            raise ValueError(f"config keys clash with the shared ones: {sorted(overlap)}")
        self.lock = threading.RLock()
        self.errors = errors
        self._keys: dict[str, ConfigKey] = {**SHARED_CONFIG, **config_keys}
        self._on_reset = on_reset
        self._state = self._fresh_state()

    # ------------------------------------------------------------------ used by simulators

    def get(self, name: str) -> Any:
        """One config value (a copy, so callers cannot change the config by accident)."""
        with self.lock:
            return copy.deepcopy(self._state.config[name])

    def config(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._state.config)

    def mark_applied(self) -> None:
        """Record that the current API call changed state (shown as `applied` in the request log)."""
        call: _Call | None = g.get("sandbox_call")
        if call is not None:
            # Written into the log at once: after a "reset" the client may read the log before we return.
            with self.lock:
                call.entry["applied"] = True

    def current_seq(self) -> int | None:
        call: _Call | None = g.get("sandbox_call")
        return call.entry["seq"] if call is not None else None

    def install(self, app: Flask) -> None:
        app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        app.register_blueprint(self._blueprint())
        app.register_error_handler(NotFound, lambda _e: self.errors.not_found())
        app.register_error_handler(MethodNotAllowed, lambda _e: self.errors.method_not_allowed())
        app.register_error_handler(InternalServerError, lambda _e: self.errors.server_error())
        app.wsgi_app = _AbortAwareMiddleware(app.wsgi_app)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ control routes

    def _blueprint(self) -> Blueprint:
        blueprint = Blueprint("sandbox_control", __name__, url_prefix=CONTROL_PREFIX)
        blueprint.add_url_rule("/reset", "reset", self._reset_view, methods=["POST"])
        blueprint.add_url_rule("/config", "config", self._config_view, methods=["GET", "PATCH"])
        blueprint.add_url_rule("/requests", "requests", self._requests_view, methods=["GET"])
        return blueprint

    def _reset_view(self) -> Response:
        with self.lock:
            self._state.release.set()
            self._state = self._fresh_state()
            self._on_reset()
        return json_response({}, 200)

    def _config_view(self) -> Response:
        if request.method == "GET":
            return json_response(self.config(), 200)
        try:
            patch = json_object_body(request)
        except BodyError:
            return json_response({"error": "body must be a JSON object"}, 400)
        with self.lock:
            try:
                self._state.config = _merge_patch(self._state.config, patch, self._keys)
            except ConfigError as problem:
                return json_response({"error": str(problem)}, 400)
            if "seed" in patch:
                self._state.rng = random.Random(self._state.config["seed"])
            return json_response(copy.deepcopy(self._state.config), 200)

    def _requests_view(self) -> Response:
        with self.lock:
            return json_response({"requests": copy.deepcopy(self._state.log)}, 200)

    def _fresh_state(self) -> _State:
        config = _defaults(self._keys)
        return _State(config=config, rng=random.Random(config["seed"]))

    # ------------------------------------------------------------------ request hooks

    def _before_request(self) -> Response | None:
        if _is_control_path(request.path):
            return None
        call, latency_ms, release = self._begin_call()
        g.sandbox_call = call
        if latency_ms:
            release.wait(latency_ms / 1000)
        if call.fault is not None and not call.after_commit:
            return self._deliver_fault(call)
        return None

    def _after_request(self, response: Response) -> Response:
        call: _Call | None = g.get("sandbox_call")
        if call is None:
            return response
        if call.fault is not None and not call.fault_delivered:
            # An after-commit fault: the handler ran (and may have changed state); the client sees an error.
            response = self._deliver_fault(call)
        if call.fault != "reset":  # a reset connection has no status
            with self.lock:
                call.entry["status"] = response.status_code
        return response

    def _begin_call(self) -> tuple[_Call, float, threading.Event]:
        entry = _describe_request()
        with self.lock:
            state = self._state
            entry["seq"] = next(state.seq)
            state.log.append(entry)
            fault, after_commit = self._scripted_fault(state) or self._roll_fault(
                state, mutating=request.method in _MUTATING_METHODS)
            entry["fault"] = fault
            call = _Call(entry=entry, fault=fault, after_commit=after_commit)
            return call, state.config["latency_ms"], state.release

    @staticmethod
    def _scripted_fault(state: _State) -> tuple[str, bool] | None:
        for item in state.config["scripted_faults"]:
            if item.get("times", 1) > 0 and item["method"] == request.method and item["path"] in request.path:
                item["times"] = item.get("times", 1) - 1
                return item["kind"], bool(item.get("after_commit")) and request.method in _MUTATING_METHODS
        return None

    @staticmethod
    def _roll_fault(state: _State, *, mutating: bool) -> tuple[str | None, bool]:
        config = state.config
        if config["fault_rate"] <= 0 or state.rng.random() >= config["fault_rate"]:
            return None, False
        kind = state.rng.choice(config["fault_kinds"])
        after_commit = mutating and state.rng.random() < config["fault_after_commit_rate"]
        return kind, after_commit

    def _deliver_fault(self, call: _Call) -> Response:
        call.fault_delivered = True
        if call.fault == "500":
            return self.errors.server_error()
        if call.fault == "429":
            return self.errors.rate_limited()
        if call.fault == "timeout":
            with self.lock:
                hold, release = self._state.config["timeout_seconds"], self._state.release
            release.wait(hold)
            return self.errors.gateway_timeout()
        _abort_connection()
        return Response(status=500)  # never written: the middleware drops it


def _is_control_path(path: str) -> bool:
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


def _describe_request() -> dict[str, Any]:
    request.get_data(cache=True)  # keep the body readable by the handler after we parsed it here
    return {
        "seq": 0,
        "at": iso_millis(utcnow()),
        "method": request.method,
        "path": request.path,
        # As sent, before percent-decoding: shows whether a client encoded what it put in the path.
        "raw_path": (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "").split("?", 1)[0],
        "query": request.args.to_dict(),
        "headers": {
            name.lower(): (REDACTED if name.lower() in _REDACTED_HEADERS else value)
            for name, value in request.headers.items()
        },
        # A copy: Flask hands the handler the same cached object, and the log must show what was sent.
        "json": copy.deepcopy(request.get_json(force=True, silent=True)),
        "status": None,
        "fault": None,
        "applied": False,
    }


def _abort_connection() -> None:
    """Tear the TCP connection down under the client: it gets no response at all."""
    sock: socket.socket | None = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    request.environ[_ABORTED_KEY] = True


class _AbortAwareMiddleware:
    """Stops werkzeug from writing a response on a connection that a "reset" fault tore down.

    Raising ConnectionError is werkzeug's own signal for "the client went away": it then writes nothing
    and logs nothing, instead of failing on the closed socket and printing a traceback.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = self._app(environ, start_response)
        if environ.get(_ABORTED_KEY):
            close = getattr(body, "close", None)
            if close is not None:
                close()
            raise ConnectionAbortedError("sandbox: connection reset by fault injection")
        return body
