"""`GET /h/<appointment_id>/<signature>`: the host's stable link, redirected to a valid Zoom start_url."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, redirect

from workers.clients.errors import APIError
from workers.host_links import PATH_PREFIX, is_valid
from workers.start_urls import StartUrls

bp = Blueprint("host_links", __name__)


def _no_store(response: Any) -> Any:
    # The redirect target logs its holder in as host: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get(f"{PATH_PREFIX}/<appointment_id>/<signature>")
def open_host_link(appointment_id: str, signature: str) -> Any:
    services = current_app.extensions["meetbridge"]
    secret_key = services.settings.secret_key
    if not secret_key or not is_valid(secret_key, appointment_id, signature):
        return jsonify(error="this link is not valid"), 403
    record = services.store.load(appointment_id)
    if record is None:
        return jsonify(error="no such appointment"), 404
    if record.status == "cancelled":
        return jsonify(error="this appointment was cancelled"), 410
    try:
        found = StartUrls(services).valid_start_url(appointment_id)
    except APIError as error:
        current_app.logger.warning("host link for %s: Zoom did not give a start_url: %s", appointment_id, error)
        response = jsonify(error="Zoom did not answer in time; try the link again in a moment")
        response.headers["Retry-After"] = "5"
        return response, 503
    if found is None:
        response = jsonify(error="the Zoom meeting is still being set up; try again in a moment")
        response.headers["Retry-After"] = "10"
        return response, 503
    start_url, _ = found
    return _no_store(redirect(start_url, 302))
