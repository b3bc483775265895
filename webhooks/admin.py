"""`/api/*`: the operators' view of appointments (bearer ADMIN_TOKEN; answers 404 when none is set)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, abort, jsonify, request

from webhooks import services
from workers.admin import appointment_view, replay
from workers.host_pages import HostPages, normalize_email

bp = Blueprint("admin", __name__, url_prefix="/api")


@bp.before_request
def require_admin_token() -> Any:
    token = services().settings.admin_token
    if not token:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return jsonify(error="missing or wrong admin token"), 401
    return None


@bp.after_request
def not_stored(response: Any) -> Any:
    # Answers carry host links and host-page links (bearer credentials): no cache may keep them.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/appointments/<appointment_id>")
def show(appointment_id: str) -> Any:
    view = appointment_view(services(), appointment_id)
    if view is None:
        return jsonify(error=f"no appointment {appointment_id}"), 404
    return jsonify(view)


@bp.post("/appointments/<appointment_id>/replay")
def replay_one(appointment_id: str) -> Any:
    if not replay(services(), appointment_id):
        return jsonify(error=f"no appointment {appointment_id}"), 404
    return jsonify(status="queued", appointment_id=appointment_id), 202


@bp.get("/hosts/<email>/page")
def host_page(email: str) -> Any:
    """The host's private page and calendar links (bearer links: hand them to the host alone)."""
    try:
        email = normalize_email(email)
    except ValueError as error:
        return jsonify(error=str(error)), 400
    return jsonify(HostPages(services()).page_links(email).as_dict())
