"""`<PUBLIC_URL>/hosts/<token>` and `…/calendar.ics`: a host's private page and calendar feed.

Both are bearer links (whoever holds one sees the host's meetings and their "Start as host" links), so both
answer `Cache-Control: no-store`, `Referrer-Policy: no-referrer` and `X-Robots-Tag: noindex`, and a tampered
or revoked link gets a small 403 that says nothing about the host.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC
from typing import Any, NamedTuple

from flask import Blueprint, Response, current_app, render_template

from schemas.times import utc_seconds
from webhooks import services
from workers.host_pages import CALENDAR_FILE, PATH_PREFIX, HostMeeting, HostPages, calendar_feed

bp = Blueprint("host_pages", __name__, template_folder="templates")


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _host(token: str) -> tuple[HostPages, str | None]:
    pages = HostPages(services())
    return pages, pages.verify(token)


@bp.get(f"{PATH_PREFIX}/<token>")
def page(token: str) -> Any:
    pages, email = _host(token)
    nonce = secrets.token_urlsafe(16)
    if email is None:
        response = current_app.make_response((render_template("host_page_refused.html", nonce=nonce), 403))
    else:
        now = time.time()
        meetings = [_shown(m, now) for m in pages.meetings(email, now) if m.upcoming(now)]
        response = current_app.make_response(
            render_template("host_page.html", email=email, meetings=meetings, nonce=nonce))
    # Only this page's own inline style and script run; it loads nothing and cannot be framed.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'")
    return _private(response)


@bp.get(f"{PATH_PREFIX}/<token>/{CALENDAR_FILE}")
def calendar(token: str) -> Any:
    pages, email = _host(token)
    if email is None:
        return _private(Response("This calendar link is not valid (it may have been replaced).\n", 403,
                                 mimetype="text/plain"))
    now = time.time()
    feed = calendar_feed(email, pages.meetings(email, now))
    response = Response(feed, 200, content_type="text/calendar; charset=utf-8")
    response.headers["Content-Disposition"] = 'inline; filename="meetings.ics"'
    return _private(response)


class Shown(NamedTuple):
    """One meeting as the template shows it (attributes, not dict keys: Jinja reads those fastest)."""

    id: str
    start: str
    end: str
    fallback: str
    attendee: str
    meeting_type: str
    join_url: str | None
    host_link: str | None
    state: str | None


def _shown(meeting: HostMeeting, now: float) -> Shown:
    start, end = meeting.start.astimezone(UTC), meeting.end.astimezone(UTC)
    return Shown(
        id=meeting.appointment_id,
        start=utc_seconds(start),
        end=utc_seconds(end),
        # Shown until the browser rewrites it in the viewer's own zone (and when scripts are off).
        fallback=f"{start:%a %d %b %Y, %H:%M}–{end:%H:%M} UTC",
        attendee=meeting.attendee,
        meeting_type=meeting.meeting_type,
        join_url=meeting.join_url,
        host_link=meeting.host_link,
        state=meeting.state(now),
    )


