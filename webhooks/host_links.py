"""`<PUBLIC_URL>/h/<appointment_id>/<token>`: the host's link to start their Zoom meeting.

`GET` answers a small page with a "Start the meeting as host" button; only the button's `POST` redirects to
the start_url. Mail scanners and chat previews fetch every link they see (some in a sandbox browser), so a
`GET` must never hand out the start_url, which logs its holder in as host.

The `POST` is the one place the web process talks to Zoom: the start_url logic and the Zoom client are loaded
when the first host presses the button, not with the web app (`tests/webhooks/test_thin_web.py`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template

from webhooks import services
from workers.host_link_tokens import (
    PATH_PREFIX,
    Claims,
    LinkRefused,
    check_still_open,
    is_zoom_start_url,
    read_claims,
)
from workers.queue import queue_syncs
from workers.state import AppointmentRecord

bp = Blueprint("host_links", __name__)
ROUTE = f"{PATH_PREFIX}/<appointment_id>/<token>"


def _private(response: Any) -> Any:
    # The page and the redirect concern a host credential: keep them out of caches, Referer headers and indexes.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _page(status: int, title: str, message: str, *, can_start: bool = False,
          retry_after: int | None = None) -> Any:
    response = current_app.make_response(
        (render_template("host_link.html", title=title, message=message, can_start=can_start), status))
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return _private(response)


def _open(appointment_id: str, token: str) -> tuple[Claims, AppointmentRecord]:
    these = services()
    claims = read_claims(these.settings, appointment_id, token)
    record = these.store.load(appointment_id)
    if record is None:
        raise LinkRefused(404, "there is no such appointment")
    check_still_open(these.settings, claims, record)
    return claims, record


def _refused(error: LinkRefused) -> Any:
    titles = {403: "This link is not valid", 404: "Unknown meeting", 410: "This link no longer works"}
    return _page(error.status, titles.get(error.status, "This link does not work"), error.reason)


@bp.get(ROUTE)
def show_start_page(appointment_id: str, token: str) -> Any:
    try:
        _, record = _open(appointment_id, token)
    except LinkRefused as error:
        return _refused(error)
    when = (record.zoom_start or "").replace("T", " ").replace("Z", " UTC")
    topic = record.zoom_topic or "Your meeting"
    return _page(200, "Start your Zoom meeting", f"{topic}, {when}".rstrip(", "), can_start=True)


@bp.post(ROUTE)
def start_meeting(appointment_id: str, token: str) -> Any:
    try:
        claims, record = _open(appointment_id, token)
    except LinkRefused as error:
        return _refused(error)
    from workers.clients.errors import MeetbridgeError
    from workers.start_urls import StartUrls

    these = services()
    try:
        found = StartUrls(these).valid_start_url(appointment_id)
    except MeetbridgeError as error:
        current_app.logger.warning("host link for %s: Zoom did not give a start_url: %s", appointment_id, error)
        found = None
    if found is not None:
        try:
            # The start_url comes from a read of its own: it must still be this host's, under this link.
            check_still_open(these.settings, claims, found[1])
        except LinkRefused as error:
            return _refused(error)
    start_url = found[0] if found else None
    if found is None and (these.store.load(appointment_id) or record).zoom_drift:
        queue_syncs(these, [appointment_id])  # changed in Zoom (another host?): put it back, then start
    if not is_zoom_start_url(these.settings, start_url):
        return _page(503, "The meeting cannot be started just now",
                     "Zoom did not give us a way to start it yet. Try again in a minute.", retry_after=30)
    return _private(redirect(start_url, 302))
