"""Converge one appointment: compare what Zoom and NeetoCal hold with what the appointment is now, and
apply only the difference.

Every step is safe to repeat. Zoom's create call has no idempotency key, so before it is sent the record
notes that a create is under way; a later attempt that finds that note first looks for the meeting the
earlier one may have made (by the appointment id written into its agenda) and adopts it. NeetoCal bookings
work the same way, found by the client's email and the join URL they carry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import redis

from meetbridge.config import Settings
from schemas.events import AppointmentEvent, Attendee
from schemas.neetocal import Booking, BookingRequest, Link, LinkSpec
from schemas.times import epoch_of, parse_utc
from schemas.zoom import TOPIC_LIMIT, MeetingSpec, ZoomMeeting, agenda, one_line, zoom_time
from workers.clients.base import before_remote_call
from workers.clients.errors import CannotSync, LinkGone, MeetbridgeError, NotFound, ValidationFailed
from workers.clients.neetocal import join_url_dropped_warning
from workers.desired import Desired, answering, fold, needs_confirmation
from workers.host_pages import HostPages
from workers.limits import LOCK_MARGIN_SECONDS
from workers.reconciliation import read_back
from workers.start_urls import StartUrls
from workers.state import AppointmentBusy, AppointmentRecord, Lease, Note
from workers.state.caches import LinkCache
from workers.wiring import Services

log = logging.getLogger(__name__)
T = TypeVar("T")

SPOT_TEXT = "Zoom: the join link is in your booking details."
LINK_CACHE_SECONDS = 7 * 24 * 3600
# Zoom's answers to a delete of a meeting that is in progress or over (API-FACTS: DELETE 400 3002, 3007), and to
# an update of one that has started (PATCH 400 3000: "You cannot update or delete meetings that have started").
MEETING_UNDER_WAY_OR_OVER = (3002, 3007)
MEETING_STARTED_OR_OVER = (3000, 3002, 3007)
# Zoom's answers to a GET of a meeting that another account holds (API-FACTS: GET 400 1010, 3000; 404 1001, 3001).
NOT_IN_THIS_ACCOUNT = (1010, 3000, 1001, 3001)
# A Zoom meeting link: https://[subdomain.]zoom.us/j/<meeting number>[?pwd=…] (also /w/ links, and /s/ start links,
# which only ever name the meeting: see join_link).
ZOOM_LINK = re.compile(r"^https://(?P<host>[a-z0-9.-]+)/(?:j|w|s)/(?P<id>\d{9,12})(?:[/?#]|$)", re.IGNORECASE)


def meeting_spec(desired: Desired) -> MeetingSpec:
    assert desired.start is not None
    kind = (desired.meeting_type.name if desired.meeting_type else None) or "Appointment"
    guest = desired.attendee.name or desired.attendee.email if desired.attendee else None
    topic = one_line(f"{kind} with {guest}" if guest else kind)[:TOPIC_LIMIT]
    return MeetingSpec(
        topic=topic,
        start_time=desired.start.astimezone(UTC),
        duration=desired.duration_minutes,
        timezone=desired.time_zone,
        agenda=agenda(topic, desired.appointment_id),
        alternative_hosts=desired.alternative_hosts,
    )


def link_spec(desired: Desired, *, grouped: bool = False, place: str | None = None) -> LinkSpec:
    """One NeetoCal scheduling link per meetergo meeting type, host and length, and where the appointment is not
    on Zoom, per place (`place`: what the link says of where it happens); one of kind `grouped` beside each for
    group appointments (a link's kind is fixed, and only a grouped one seats several at one slot)."""
    meeting_type = desired.meeting_type
    base = (meeting_type.slug or meeting_type.id) if meeting_type else None
    host = desired.host
    duration = desired.duration_minutes
    suffix = (f"-{desired.channel}" if place else "") + ("-group" if grouped else "")
    readable = re.sub(r"[^a-z0-9]+", "-",
                      f"{base or 'appointment'}-{host.email.split('@')[0]}-{duration}m{suffix}".lower())
    identity = "|".join([str(base), host.email, str(duration), *(["grouped"] if grouped else []),
                         *([place] if place else [])])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:6]
    kind = (meeting_type.name if meeting_type else None) or "Appointment"
    return LinkSpec(
        slug=f"{readable.strip('-')[:60]}-{digest}",
        name=f"{kind} with {host.name or host.email} ({duration} min)",
        host_email=host.email,
        duration=duration,
        description="Mirrors meetergo bookings (managed by meetbridge).",
        kind="grouped" if grouped else "one_on_one",
        spot_text=place or SPOT_TEXT,
    )


def place_of(desired: Desired) -> str:
    """What a NeetoCal booking of a non-Zoom appointment says of where it happens: its own location, or its kind."""
    label = {"phone": "Phone call", "local": "In person", "in_person": "In person"}.get(
        desired.channel or "", (desired.channel or "Meeting").replace("_", " ").capitalize())
    return one_line(f"{label}: {desired.location}" if desired.location else label)[:200]


class AppointmentSync:
    """One run of the sync for one appointment, under its lock."""

    def __init__(self, services: Services, appointment_id: str, lease: Lease, record: AppointmentRecord | None,
                 events: list[AppointmentEvent]) -> None:
        """`record` and `events`: as read under the lock (Store.start_sync)."""
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.appointment_id = appointment_id
        self.lease = lease
        self.record = record or AppointmentRecord(appointment_id)
        self.events = events
        self.start_urls = StartUrls(services)
        # Set changes the run decided on that only its last write carries (read by `doctor`, not by a sync).
        self.sets_at_end: dict[str, float | None] = {}
        # save_later's changes, notes and set changes, for the next write to carry.
        self.unsaved: dict[str, Any] = {}
        self.unsaved_notes: list[Note] = []
        self.unsaved_sets: dict[str, float | None] = {}

    def run(self) -> str:
        """Converge and return the outcome: "synced" or "cancelled"."""
        hooked = before_remote_call.set(self.before_remote_call)
        try:
            return self.converge()
        except Exception:
            # What the run learned before it failed (a meeting it made, say) outlives the failure: the next run
            # need not look for it.
            if self.kept_for_later():
                with contextlib.suppress(redis.RedisError, AppointmentBusy):
                    self.save()
            raise
        finally:
            before_remote_call.reset(hooked)

    def before_remote_call(self, method: str) -> None:
        """Before each call to Zoom or NeetoCal: a write goes out only once what the run kept for later is
        recorded (so a crash never leaves a change made but neither recorded nor noted as pending), and the lock
        is extended when what is left of it might not outlast the call (its rate wait, attempts and pauses: the
        lock's length less its margin), as every write does. A sync's first calls come well inside the margin."""
        if method != "GET" and self.kept_for_later():
            self.save()
        elif time.monotonic() - self.lease.extended_at > LOCK_MARGIN_SECONDS:
            self.lease.extend()

    def kept_for_later(self) -> bool:
        return bool(self.unsaved or self.unsaved_notes or self.unsaved_sets)

    def converge(self) -> str:
        desired = self.desired()
        if desired is None:
            raise CannotSync("no event for this appointment says when it is and who hosts it")
        if desired.cancelled:
            self.cancel(desired)
            outcome = "cancelled"
        elif desired.end is not None and desired.end <= datetime.now(UTC) and not self.record.zoom_meeting_id \
                and not self.record.neetocal_bookings and not self.record.neetocal_booking_sid:
            # Delivered (or first synced) after it ended: nothing to set up, and nothing an operator must fix.
            outcome = "skipped"
            self.save(skipped_reason=f"the appointment ended ({desired.end.isoformat()}) before it was synced")
        else:
            if desired.wants_zoom(self.settings.zoom_channels):
                self.ensure_zoom(desired)
                self.save_later(zoom_skipped=None)
            else:
                self.no_zoom(desired)
            self.ensure_neetocal(desired)
            outcome = "synced"
        HostPages(self.services).record_sync(self.appointment_id, desired, self.record, outcome)
        self.finish(outcome, cancelled=desired.cancelled)
        return outcome

    # --- what the appointment is now ---------------------------------------------------------------------
    def desired(self) -> Desired | None:
        events = list(self.events)
        if self.settings.meetergo_readback and needs_confirmation(events):
            # booking_cancelled also fires when one attendee leaves a group booking: ask before deleting.
            confirmed = read_back(self.services, self.appointment_id)
            if confirmed is not None:
                confirmed = answering(confirmed, events)
                self.store.add_event(confirmed)
                events.append(confirmed)
        return fold(events)

    # --- Zoom --------------------------------------------------------------------------------------------
    def no_zoom(self, desired: Desired) -> None:
        """A phone, in-person or other non-Zoom appointment: no meeting (one made earlier goes), and the admin
        API says why."""
        if self.record.zoom_meeting_id or self.record.zoom_create_pending:
            # No host link leads anywhere from now on (as on a cancel), even if Zoom cannot delete it yet.
            self.record.host_link_version = self.store.revoke_host_link(self.appointment_id)
            self.delete_zoom(f"the appointment's channel is now {desired.channel}")
        self.save(ends_at=desired.end.isoformat() if desired.end else None,
                  zoom_skipped=f"channel {desired.channel!r} is not in ZOOM_CHANNELS "
                               f"({', '.join(sorted(self.settings.zoom_channels))}): no Zoom meeting")

    def ensure_zoom(self, desired: Desired) -> None:
        meetergo_meeting = zoom_meeting_id_in(desired.meeting_link, self.settings.zoom_start_url_domains)
        if meetergo_meeting is not None:
            self.use_meetergo_meeting(desired, meetergo_meeting)
            return
        if self.record.zoom_owner:  # meetergo's link is gone from the appointment: meetbridge makes one now
            self.forget_zoom()
        spec = meeting_spec(desired)
        host = desired.host.email
        # Found deleted or changed in Zoom by the refresh: meetergo is the source of truth, so put it back.
        drift = self.record.zoom_drift
        put_back = drift == "changed"
        # An attempt for another host whose answer was lost may have made a meeting: it is looked for and
        # deleted too (delete_zoom), or it would live on in Zoom, recorded nowhere.
        abandoned = not self.record.zoom_meeting_id and self.record.zoom_create_pending not in (None, host)
        if (self.record.zoom_meeting_id and self.record.zoom_host != host) or abandoned:
            # The old host's link dies first, even if the meeting cannot be deleted yet (a Zoom error, a spent
            # daily cap); the new host gets a new one on their page.
            self.record.host_link_version = self.store.revoke_host_link(self.appointment_id)
            self.delete_zoom(f"the host changed to {host}")
            put_back = False
        self.save_later(ends_at=desired.end.isoformat() if desired.end else None)
        if drift == "gone":
            self.forget_zoom()  # made again below; the NeetoCal booking then follows the new join URL
        if not self.record.zoom_meeting_id:
            self.create_zoom(host, spec)
            put_back = False
        if (self.zoom_differs(spec) and self.record.zoom_kept != _update_marker(spec)) or put_back:
            meeting_id = self.record.zoom_meeting_id
            assert meeting_id is not None
            try:
                # Zoom's refusal of the alternative hosts ("" for none). The look-up finds the update only if Zoom
                # holds every alternative host: then none was refused.
                refusal, _ = self.adopt_or_apply(
                    "zoom_update_pending", self.record.zoom_update_pending, _update_marker(spec),
                    mark=lambda marker: self.save(zoom_update_pending=marker),
                    look_up=lambda: "" if self.zoom_already_updated(meeting_id, spec) else None,
                    apply=lambda: self.services.zoom.update_meeting(meeting_id, spec, host=host) or "",
                    adopted=f"meeting {meeting_id} was updated by an earlier attempt")
            except NotFound:
                self.note("zoom_meeting_gone", f"meeting {meeting_id} was deleted in Zoom (3001); creating it again")
                self.forget_zoom()
                self.create_zoom(host, spec)
                return
            except ValidationFailed as error:
                if error.code not in MEETING_STARTED_OR_OVER:
                    raise
                # The meeting is under way or over: Zoom keeps it as it is. Its answer is recorded, the NeetoCal
                # side still follows the appointment, and the same change is not sent again.
                self.save(zoom_kept=_update_marker(spec), zoom_update_pending=None)
                self.note("zoom_meeting_kept", f"meeting {meeting_id}: Zoom said {error.message} ({error.code})")
                return
            expires_at = self.record.zoom_start_url_expires_at
            # The refresh schedule follows the meeting. Without a start_url (the ended sweep dropped it, and the
            # meeting was then moved to a later time) one is fetched now, not when the host presses Start.
            refresh = self.start_urls.schedule_change(expires_at, epoch_of(self.record.ends_at)) if expires_at \
                else {self.store.refresh.key: time.time()}
            self.save(**_applied(spec), zoom_update_pending=None, zoom_kept=None, sets=refresh,
                      zoom_warning=_without_alternative_hosts_warning(refusal, host),
                      note=("zoom_meeting_updated", f"meeting {meeting_id} now starts {zoom_time(spec.start_time)}"
                                                    + (f"; {refusal}" if refusal else "")))
        if drift:
            self.save(zoom_drift=None)
            self.note("zoom_drift_healed", f"the Zoom meeting was {'made again' if drift == 'gone' else 'put back'}")
            self.services.metrics.count("meetbridge_drift_healed_total", kind=drift)

    def use_meetergo_meeting(self, desired: Desired, meeting_id: int) -> None:
        """meetergo's own Zoom integration made the meeting: use it rather than make a second one. In this Zoom
        account, its start_url is kept fresh as for any other and meetergo moves and deletes it; outside it, its
        link is the join URL and there is nothing for a host link to start."""
        assert desired.meeting_link is not None
        ours = self.record.zoom_meeting_id or self.record.zoom_create_pending  # made, or maybe made (answer lost)
        if ours and self.record.zoom_meeting_id != meeting_id and not self.record.zoom_owner:
            self.delete_zoom("meetergo made its own Zoom meeting for the appointment")
        ends_at = desired.end.timestamp() if desired.end else None
        fetched_at = time.time()
        try:
            meeting = self.services.zoom.get_meeting(meeting_id)
        except (NotFound, ValidationFailed) as error:
            if isinstance(error, ValidationFailed) and error.code not in NOT_IN_THIS_ACCOUNT:
                raise
            if not self.record.zoom_external:
                self.note("zoom_meeting_external", f"meetergo's meeting {meeting_id} is not in this Zoom account "
                                                   f"({error.code}): its link is the join URL")
            self.forget_zoom()
            self.save(zoom_owner="meetergo", zoom_external=1, zoom_join_url=join_link(desired.meeting_link),
                      ends_at=desired.end.isoformat() if desired.end else None)
            return
        adopted = None
        if self.record.zoom_meeting_id != meeting.id:
            adopted = ("zoom_meeting_adopted", f"meetergo's own meeting {meeting.id}, hosted by {meeting.host_email}")
        host = (meeting.host_email or desired.host.email).lower()
        start_url = self.start_urls.fields(meeting, host, fetched_at)
        self.save(zoom_meeting_id=meeting.id, zoom_host=host, zoom_join_url=meeting.join_url,
                  **_applied_from_meeting(meeting), zoom_owner="meetergo", zoom_external=None, zoom_drift=None,
                  ends_at=desired.end.isoformat() if desired.end else None, **start_url,
                  sets=self.refresh_change(start_url, ends_at), note=adopted)

    def zoom_already_updated(self, meeting_id: int, spec: MeetingSpec) -> ZoomMeeting | None:
        meeting = self.services.zoom.get_meeting(meeting_id)
        return meeting if _applied_from_meeting(meeting) == _applied(spec) else None

    def create_zoom(self, host: str, spec: MeetingSpec) -> None:
        fetched_at = time.time()

        def look_up() -> ZoomMeeting | None:
            found = self.services.zoom.find_meeting(host, self.appointment_id, zoom_time(spec.start_time))
            return self.services.zoom.get_meeting(found.id) if found else None

        meeting, adopted = self.adopt_or_apply(
            "zoom_create_pending", self.record.zoom_create_pending, host,
            mark=lambda marker: self.save(zoom_create_pending=marker), look_up=look_up,
            apply=lambda: self.services.zoom.create_meeting(host, spec),
            adopted="meeting created by an earlier attempt")
        start_url = self.start_urls.fields(meeting, host, fetched_at)
        refusal = meeting.alternative_hosts_refusal
        if adopted and spec.alternative_hosts and not meeting.alternative_hosts:
            # An earlier attempt's create, whose answer was lost, went without them: Zoom had refused them.
            refusal = f"Zoom holds the meeting without the alternative hosts ({', '.join(spec.alternative_hosts)})"
        applied = _applied_from_meeting(meeting)
        if refusal:  # not asked for again until the appointment's hosts change
            applied["zoom_alt_hosts"] = ";".join(spec.alternative_hosts)
        # Written with the run's next write, which comes before any other write to Zoom or NeetoCal
        # (before_remote_call); until then the pending note makes a crashed run's successor look for the meeting.
        self.save_later(zoom_meeting_id=meeting.id, zoom_host=host, zoom_join_url=meeting.join_url,
                        **applied, zoom_create_pending=None, **start_url,
                        zoom_warning=_without_alternative_hosts_warning(refusal, host),
                        sets=self.refresh_change(start_url, epoch_of(self.record.ends_at)),
                        note=None if adopted else ("zoom_meeting_created", f"meeting {meeting.id} hosted by {host}"
                                                   + (f"; {refusal}" if refusal else "")))

    def refresh_change(self, start_url: dict[str, Any], meeting_ends_at: float | None) -> dict[str, float | None]:
        """The refresh schedule's change for a newly fetched start_url (none when Zoom gave none)."""
        if not start_url:
            return {}
        return self.start_urls.schedule_change(start_url["zoom_start_url_expires_at"], meeting_ends_at)

    def zoom_differs(self, spec: MeetingSpec) -> bool:
        return _applied(spec) != {
            "zoom_start": self.record.zoom_start,
            "zoom_duration": self.record.zoom_duration,
            "zoom_topic": self.record.zoom_topic,
            "zoom_timezone": self.record.zoom_timezone,
            "zoom_alt_hosts": self.record.zoom_alt_hosts or "",
        }

    def delete_zoom(self, why: str) -> None:
        if self.record.zoom_owner:
            # meetergo made it and deletes it; meetbridge only lets go of it.
            self.note("zoom_meeting_left_to_meetergo", why)
            self.forget_zoom()
            return
        meeting_id = self.record.zoom_meeting_id
        if meeting_id is None and self.record.zoom_create_pending:
            found = self.services.zoom.find_meeting(self.record.zoom_create_pending, self.appointment_id)
            meeting_id = found.id if found else None
        if meeting_id is not None:
            try:
                existed = self.services.zoom.delete_meeting(meeting_id, notify=self.settings.zoom_cancel_reminder)
            except ValidationFailed as error:
                if error.code not in MEETING_UNDER_WAY_OR_OVER:
                    raise
                # Zoom keeps a meeting in progress (3002) or over (3007): record its answer; the rest goes on.
                self.note("zoom_meeting_kept", f"meeting {meeting_id}: Zoom said {error.message} ({error.code})")
                self.forget_zoom()
                return
            self.note("zoom_meeting_deleted", f"meeting {meeting_id}: {why}" + ("" if existed else " (already gone)"))
        self.forget_zoom()

    def forget_zoom(self) -> None:
        self.save(zoom_meeting_id=None, zoom_host=None, zoom_join_url=None, zoom_start=None, zoom_duration=None,
                  zoom_topic=None, zoom_timezone=None, zoom_alt_hosts=None, zoom_start_url=None,
                  zoom_start_url_expires_at=None, zoom_create_pending=None, zoom_update_pending=None,
                  zoom_drift=None, refresh_error=None, zoom_owner=None, zoom_external=None, zoom_kept=None,
                  zoom_warning=None, sets={self.store.refresh.key: None})  # no meeting, no start_url to refresh

    # --- NeetoCal ----------------------------------------------------------------------------------------
    def ensure_neetocal(self, desired: Desired) -> None:
        """Give every attendee with an email a booking of their own (with their guests and the join URL), on one
        link; cancel the bookings of attendees who left. NeetoCal is read before it is written, so a booking
        cancelled or moved there is booked again or moved back: meetergo is the source of truth."""
        neetocal = self.services.neetocal
        if not neetocal.configured:
            return
        if not desired.attendees:
            raise CannotSync("no attendee to make the NeetoCal booking with")
        bookings = self.bookings(desired)
        attending = {attendee.email.lower(): attendee for attendee in desired.attendees if attendee.email}
        each_attendee([email for email in bookings if email not in attending],
                      lambda email: self.cancel_booking(bookings, email, f"{email} left the appointment",
                                                        "The attendee left the appointment in meetergo."))
        warnings: list[str] = []
        if len(attending) < len(desired.attendees):
            # meetergo's phoneOnlyBooking: NeetoCal requires an email, so there is no booking to make.
            warnings.append("phone-only booking (no attendee email): NeetoCal needs an email, so no NeetoCal "
                            "booking was made for that attendee; the host has the Zoom meeting")
            self.note("neetocal_skipped", "phone-only attendee")
        if desired.group and not self.record.neetocal_grouped:
            self.save(neetocal_grouped=1)  # from now on its bookings stay on a grouped link
        dropped = refused = False
        if attending:
            link = self.scheduling_link(desired)
            for email, attendee in attending.items():
                entry = bookings.setdefault(email, {"email": email})
                try:
                    booking = self.ensure_booking(desired, attendee, link, bookings, entry)
                except NotFound as error:
                    # The cache named a link that was deleted in NeetoCal: a week of failed bookings otherwise.
                    LinkCache(self.services.redis, LINK_CACHE_SECONDS).forget(self.wanted_link(desired).slug)
                    raise LinkGone(f"NeetoCal does not know the scheduling link {link.slug} any more "
                                   f"({error.message}): it is found or made again") from error
                except ValidationFailed as error:
                    # NeetoCal's own rule (a start in the past, say): asking again will not change its mind.
                    refused = True
                    warnings.append(f"NeetoCal refused the booking of {email}: {error.message}")
                    if entry.get("refused") != error.message:
                        self.save_booking(bookings, email, refused=error.message)
                        self.note("neetocal_booking_refused", f"{email}: {error}")
                        self.services.metrics.count("meetbridge_neetocal_refused_total")
                    continue
                if entry.get("refused"):
                    self.save_booking(bookings, email, refused=None)
                if booking is not None:
                    lost = self.join_url_dropped(booking, entry.get("join_url") or "")
                    if lost != bool(entry.get("join_url_dropped")):
                        self.save_booking(bookings, email, join_url_dropped=lost or None)
                    if lost:
                        self.services.metrics.count("meetbridge_neetocal_join_url_dropped_total")
            dropped = any(bookings[email].get("join_url_dropped") for email in attending if email in bookings)
        if dropped:
            warnings.append(join_url_dropped_warning(self.settings.neetocal_join_url_field))
        self.save_later(neetocal_warning="; ".join(warnings) or None)
        self.sets_at_end.update(self.store.neetocal_problem_sets(join_url_dropped=dropped, refused=refused))

    def ensure_booking(self, desired: Desired, attendee: Attendee, link: Link, bookings: dict[str, dict[str, Any]],
                       entry: dict[str, Any]) -> Booking | None:
        """Converge one attendee's booking; returns the booking when this run wrote it (to check its join URL)."""
        neetocal = self.services.neetocal
        email = entry["email"]
        join_url = self.record.zoom_join_url or ""
        request = self.booking_request(desired, attendee, link, join_url)
        slot = zoom_time(request.start)
        sid = entry.get("sid")
        held: Booking | None = None
        if sid:
            try:
                held = neetocal.get_booking(sid)  # read before writing: the attendee may have changed it there
            except NotFound:
                held = Booking(sid=sid, status="cancelled")
            if held.status == "cancelled":
                self.note("neetocal_booking_rebooked", f"booking {sid} of {email} was cancelled in NeetoCal; "
                                                       "booking again")
                self.services.metrics.count("meetbridge_drift_healed_total", kind="neetocal_cancelled")
                sid = None
                self.save_booking(bookings, email, sid=None, slug=None, slot=None, join_url=None)
            elif entry.get("slug") != link.slug or entry.get("join_url") != join_url:
                # A new host or a new Zoom meeting: the booking belongs on another link or carries a dead URL.
                neetocal.cancel_booking(sid, "Moved to a new booking by meetbridge.")
                self.note("neetocal_booking_cancelled", f"booking {sid} of {email} replaced")
                sid = None
                self.save_booking(bookings, email, sid=None, slug=None, slot=None, join_url=None)
        if not sid and self.pending_elsewhere(entry, link, join_url):
            self.cancel_abandoned_booking(bookings, email, entry)
        if not sid:
            booking, adopted = self.adopt_or_apply(
                "neetocal_create_pending", entry.get("create_pending"), link.slug,
                mark=lambda marker: self.save_booking(bookings, email, create_pending=marker,
                                                      pending_join_url=join_url or None, pending_slot=slot,
                                                      pending_host=desired.host.email),
                # Where the earlier attempt sent it (its note; what this run would send, after a Redis restart).
                look_up=lambda: neetocal.find_booking(
                    email, entry.get("pending_join_url") or join_url, field=self.settings.neetocal_join_url_field,
                    starts_at=entry.get("pending_slot") or slot,
                    host_email=entry.get("pending_host") or desired.host.email),
                apply=lambda: neetocal.create_booking(request),
                adopted=f"booking of {email} made by an earlier attempt")
            created = None if adopted else ("neetocal_booking_created",
                                            f"booking {booking.sid} of {email} on {link.slug}")
            # An adopted booking is where the earlier attempt put it: the appointment may have moved since.
            booked_slot = _zoom_utc(booking.starts_at) if adopted and booking.starts_at else slot
            # Written with the run's next write (at the latest its last), as the Zoom meeting's result is.
            self.save_booking(bookings, email, sid=booking.sid, slug=link.slug, slot=booked_slot, join_url=join_url,
                              note=created, later=True, **NO_PENDING_BOOKING)
            if booked_slot == slot:
                return booking
            sid, held = booking.sid, booking
        assert held is not None
        if entry.get("slot") == slot and _zoom_utc(held.starts_at) == slot:
            return None
        if entry.get("slot") == slot:
            self.note("neetocal_booking_moved", f"booking {sid} of {email} was moved in NeetoCal; moving it back")
            self.services.metrics.count("meetbridge_drift_healed_total", kind="neetocal_moved")

        def already_moved() -> Booking | None:
            booking = neetocal.get_booking(sid)
            moved = booking.starts_at is not None and _zoom_utc(booking.starts_at) == slot
            return booking if moved and booking.status != "cancelled" else None

        moved, _ = self.adopt_or_apply(
            "neetocal_reschedule_pending", entry.get("reschedule_pending"), slot,
            mark=lambda marker: self.save_booking(bookings, email, reschedule_pending=marker),
            look_up=already_moved, apply=lambda: neetocal.reschedule_booking(sid, request),
            adopted=f"booking {sid} was moved by an earlier attempt")
        self.save_booking(bookings, email, slot=slot, reschedule_pending=None)
        self.note("neetocal_booking_rescheduled", f"booking {sid} of {email} moved to {slot}")
        return moved

    def bookings(self, desired: Desired) -> dict[str, dict[str, Any]]:
        """The attendees' bookings as recorded (an earlier version's single booking taken for the first one's)."""
        if self.record.neetocal_bookings:
            return json.loads(self.record.neetocal_bookings)
        if not self.record.neetocal_booking_sid or not desired.attendee or not desired.attendee.email:
            return {}
        email = desired.attendee.email.lower()
        bookings = {email: {"email": email, "sid": self.record.neetocal_booking_sid,
                            "slug": self.record.neetocal_meeting_slug, "slot": self.record.neetocal_slot,
                            "join_url": self.record.neetocal_join_url}}
        self.save(neetocal_bookings=json.dumps(bookings), neetocal_booking_sid=None, neetocal_meeting_slug=None,
                  neetocal_slot=None, neetocal_join_url=None)
        return bookings

    def save_booking(self, bookings: dict[str, dict[str, Any]], email: str, *, note: Note | None = None,
                     later: bool = False, **values: Any) -> None:
        """Record what changed of one attendee's booking (a value of None removes it), with its history `note`;
        `later`: with the run's next write (save_later)."""
        entry = bookings.setdefault(email, {"email": email})
        for name, value in values.items():
            if value is None:
                entry.pop(name, None)
            else:
                entry[name] = value
        write = self.save_later if later else self.save
        write(neetocal_bookings=json.dumps(bookings, sort_keys=True), note=note)

    def pending_booking(self, email: str, entry: dict[str, Any]) -> Booking | None:
        """The booking an attempt whose answer was lost may have made (its pending note says one was sent), found
        by the join URL it carried or, without one (not a Zoom appointment), by its time and host."""
        join_url = entry.get("pending_join_url") or entry.get("join_url")
        by_time = entry.get("pending_slot") and entry.get("pending_host")  # an earlier version noted neither
        if not entry.get("create_pending") or not (join_url or by_time):
            return None
        return self.services.neetocal.find_booking(email, join_url, field=self.settings.neetocal_join_url_field,
                                                   starts_at=entry.get("pending_slot"),
                                                   host_email=entry.get("pending_host"))

    @staticmethod
    def pending_elsewhere(entry: dict[str, Any], link: Link, join_url: str) -> bool:
        """Whether an earlier attempt whose answer was lost sent its booking on another link (the host, the length
        or the place changed since) or with a join URL that is no longer the meeting's (a new Zoom meeting): the
        booking this run would make cannot be that one, and a look-up for it would not find that one."""
        pending = entry.get("create_pending")
        if pending is None:
            return False
        return pending != link.slug or entry.get("pending_join_url") not in (None, join_url)

    def cancel_abandoned_booking(self, bookings: dict[str, dict[str, Any]], email: str, entry: dict[str, Any]) -> None:
        """An earlier attempt on another link, or with a join URL that is dead now, may have made a booking and lost
        the answer: it is cancelled, or the attendee would hold two."""
        found = self.pending_booking(email, entry)
        if found is not None:
            self.services.neetocal.cancel_booking(found.sid, "Moved to a new booking by meetbridge.")
            self.note("neetocal_booking_cancelled",
                      f"booking {found.sid} of {email} made by an earlier attempt on {entry['create_pending']}")
        self.save_booking(bookings, email, **NO_PENDING_BOOKING)

    def cancel_booking(self, bookings: dict[str, dict[str, Any]], email: str, why: str, reason: str) -> None:
        """Cancel one attendee's booking (one whose create lost its answer is looked for first), and forget it."""
        entry = bookings[email]
        sid = entry.get("sid")
        if sid is None:
            found = self.pending_booking(email, entry)
            sid = found.sid if found else None
        if sid is not None:
            self.services.neetocal.cancel_booking(sid, reason)
            self.note("neetocal_booking_cancelled", f"booking {sid}: {why}")
        del bookings[email]
        self.save(neetocal_bookings=json.dumps(bookings, sort_keys=True) if bookings else None)

    def join_url_dropped(self, booking: Booking, join_url: str) -> bool:
        """Prove the join URL landed: read it back from the booking NeetoCal returned (once more from NeetoCal
        if that answer lacks it). NeetoCal keeps only the answers its booking form has a question for (its
        docs are silent on the rest), so a missing one was dropped: the booking stays, but an operator must
        fix the form, and the appointment says so until a later create or reschedule finds the URL there."""
        field = self.settings.neetocal_join_url_field
        if not join_url:
            return False
        if booking.answer(field) != join_url:
            booking = self.services.neetocal.get_booking(booking.sid)
        if booking.answer(field) == join_url:
            return False
        self.note("neetocal_join_url_dropped", f"booking {booking.sid}: the booking form has no question with "
                                               f"field code {field}")
        return True

    def booking_request(self, desired: Desired, attendee: Attendee, link: Link, join_url: str) -> BookingRequest:
        assert desired.start is not None
        # The booking is the attendee's: only what attendees may read goes on it. Never the host link or the
        # start_url (each logs its holder in as host); hosts find those on their own page.
        answers = {self.settings.neetocal_join_url_field: join_url} if join_url else {}
        return BookingRequest(
            meeting_slug=link.slug,
            name=attendee.name or attendee.email,
            email=attendee.email,
            start=desired.start,
            time_zone=attendee.timezone or "UTC",
            form_responses=answers,
            guests=attendee.guests,
        )

    def wanted_link(self, desired: Desired) -> LinkSpec:
        """The scheduling link the appointment belongs on, as it is now."""
        on_zoom = desired.wants_zoom(self.settings.zoom_channels)
        return link_spec(desired, grouped=desired.group or bool(self.record.neetocal_grouped),
                         place=None if on_zoom else place_of(desired))

    def scheduling_link(self, desired: Desired) -> Link:
        """Find or create the link once; its id is then kept in Redis."""
        spec = self.wanted_link(desired)
        links = LinkCache(self.services.redis, LINK_CACHE_SECONDS)
        cached = links.get(spec.slug)
        if cached:
            return Link(**cached)
        neetocal = self.services.neetocal
        link = neetocal.find_link(spec.host_email, spec.slug)
        if link is None:
            try:
                link = neetocal.create_link(spec)
                self.note("neetocal_link_created", spec.slug)
            except ValidationFailed:
                link = neetocal.find_link(spec.host_email, spec.slug)  # another worker created it just now
                if link is None:
                    raise
        # Set up on every cache miss: a crash between creating the link and setting it up leaves no gap.
        if not links.has_own_schedule(link.sid) and neetocal.set_mirror_availability(link, spec.host_email):
            links.note_own_schedule(link.sid)
        if link.spot != "custom" or (link.spot_custom_text is not None and link.spot_custom_text != spec.spot_text):
            neetocal.set_custom_spot(link, spec.spot_text)
        # Cached for a week: a link deleted in NeetoCal meanwhile is found (or made) again after that.
        links.put(spec.slug, {"sid": link.sid, "slug": link.slug, "spot": "custom"})
        return link

    # --- cancellation ------------------------------------------------------------------------------------
    def cancel(self, desired: Desired) -> None:
        if self.record.zoom_meeting_id or self.record.zoom_create_pending or self.record.zoom_owner:
            # No host link leads to the meeting from now on, even if Zoom cannot delete it yet.
            self.record.host_link_version = self.store.revoke_host_link(self.appointment_id)
            self.delete_zoom("the appointment was cancelled")
        self.sets_at_end[self.store.refresh.key] = None
        bookings = self.bookings(desired)
        reason = desired.cancel_reason or "The appointment was cancelled in meetergo."
        each_attendee(list(bookings), lambda email: self.cancel_booking(bookings, email,
                                                                        "the appointment was cancelled", reason))
        self.save(neetocal_warning=None)
        self.sets_at_end.update(self.store.neetocal_problem_sets(join_url_dropped=False, refused=False))

    # --- bookkeeping -------------------------------------------------------------------------------------
    def adopt_or_apply(self, step: str, noted: str | None, marker: str, *, mark: Callable[[str], None],
                       look_up: Callable[[], T | None], apply: Callable[[], T], adopted: str) -> tuple[T, bool]:
        """Apply a change that the remote API cannot deduplicate, at most once.

        The record notes the change (`mark(marker)`; `noted` is what it holds now) before it is sent. A later
        attempt that finds the note first looks for the change's effect, since an earlier attempt may have been
        applied and then lost its answer (a timeout, a reset, a killed worker), and adopts what it finds. The
        caller clears the note once it has recorded the result. Returns the result and whether it was adopted."""
        # After a Redis restart the note itself may be among the writes lost in its last second.
        if noted == marker or self.store.epoch.recently_restarted():
            self.services.metrics.count("meetbridge_lookups_total", step=step)
            found = look_up()
            if found is not None:
                self.note(step.replace("_pending", "_adopted"), adopted)
                return found, True
        mark(marker)
        return apply(), False

    def save(self, *, note: Note | None = None, sets: Mapping[str, float | None] | None = None,
             **values: Any) -> None:
        """Write what changed of the record (nothing when nothing did), under the lock, in one round trip, with the
        history `note` that tells of it and the changes of `sets` that follow it (Store.update_held); and what
        save_later kept for it."""
        changed = {**self.unsaved,
                   **{name: value for name, value in values.items() if getattr(self.record, name) != value}}
        notes = self.unsaved_notes + ([note] if note is not None else [])
        sets = {**self.unsaved_sets, **(sets or {})}
        if not changed and not notes and not sets:
            # Progress all the same: keep the lock from lapsing in a long run of calls that change nothing.
            if time.monotonic() - self.lease.extended_at > self.lease.ttl_ms / 3000:
                self.lease.extend()
            return
        if note is not None:
            log.info("%s: %s", *note)
        self.store.update_held(self.appointment_id, self.lease, notes=notes, sets=sets, **changed)
        self.unsaved.clear()
        self.unsaved_notes.clear()
        self.unsaved_sets.clear()
        for name, value in changed.items():
            setattr(self.record, name, value)

    def save_later(self, *, note: Note | None = None, sets: Mapping[str, float | None] | None = None,
                   **values: Any) -> None:
        """Change the record now, but write the change (its note and sets too) with the run's next write, at the
        latest its last: for what nothing needs in Redis before then. Saves a round trip. A run that fails writes
        it before it gives up (`run`); one that crashes loses it, and the next run makes it again (or finds it,
        when a pending note says to look)."""
        for name, value in values.items():
            if getattr(self.record, name) != value:
                self.unsaved[name] = value
                setattr(self.record, name, value)
        if note is not None:
            log.info("%s: %s", *note)
            self.unsaved_notes.append(note)
        self.unsaved_sets.update(sets or {})

    def note(self, event: str, detail: str) -> None:
        """A history entry of its own (one that comes with a record change goes with `save`); it goes with what
        save_later kept, if anything, so that the history stays in order."""
        if self.kept_for_later():
            self.save(note=(event, detail))
            return
        log.info("%s: %s", event, detail)
        self.store.note(self.appointment_id, event, detail)

    def finish(self, outcome: str, *, cancelled: bool) -> None:
        """The run's last write, in one round trip: the outcome and its note, the sets the run decided on, the
        appointment settled and retained (Store.finish_sync); the lock is let go with it."""
        meeting_end, keep_until = retention(self.settings, epoch_of(self.record.ends_at), cancelled=cancelled)
        self.store.finish_sync(self.appointment_id, self.lease, outcome, ends_at=meeting_end, keep_until=keep_until,
                               sets={**self.unsaved_sets, **self.sets_at_end}, notes=self.unsaved_notes,
                               **{**self.unsaved, "error": None, "waiting_reason": None, "resume_at": None})
        self.unsaved.clear()
        self.unsaved_notes.clear()
        self.unsaved_sets.clear()
        self.record.status = outcome


def retain(services: Services, appointment_id: str, ends_at: float | None, *, cancelled: bool = False) -> None:
    """Keep the appointment's records RETENTION_DAYS past its end, or past now once it is cancelled."""
    services.store.retain(appointment_id, *retention(services.settings, ends_at, cancelled=cancelled))


def retention(settings: Settings, ends_at: float | None, *, cancelled: bool = False) -> tuple[float | None, float]:
    """The meeting's end for the ended schedule (None once cancelled: nothing is left to close), and when the
    appointment's records expire: RETENTION_DAYS past its end, or past now once it is cancelled."""
    now = time.time()
    last_use = now if cancelled or ends_at is None else max(now, ends_at)
    return (None if cancelled else ends_at), last_use + settings.retention_days * 86400


def _without_alternative_hosts_warning(refusal: str | None, host: str) -> str | None:
    """The appointment's warning when Zoom would not take its alternative hosts (not licensed in the account?)."""
    return f"{refusal}; the meeting goes without them, so only {host} can start it" if refusal else None


def _applied(spec: MeetingSpec) -> dict[str, Any]:
    """The record's fields for what the sync asks Zoom to hold."""
    return _zoom_fields(zoom_time(spec.start_time), spec.duration, spec.topic, spec.timezone,
                        ";".join(spec.alternative_hosts))


def _applied_from_meeting(meeting: ZoomMeeting) -> dict[str, Any]:
    """The same fields for what Zoom holds."""
    return _zoom_fields(_zoom_utc(meeting.start_time), meeting.duration, meeting.topic, meeting.timezone,
                        meeting.alternative_hosts or "")


def _zoom_fields(start: str | None, duration: int | None, topic: str | None, timezone: str | None,
                 alternative_hosts: str) -> dict[str, Any]:
    return {"zoom_start": start, "zoom_duration": duration, "zoom_topic": topic, "zoom_timezone": timezone,
            "zoom_alt_hosts": alternative_hosts}


def _update_marker(spec: MeetingSpec) -> str:
    return hashlib.sha256(json.dumps(_applied(spec), sort_keys=True).encode()).hexdigest()[:16]


def zoom_meeting_id_in(link: str | None, zoom_domains: tuple[str, ...]) -> int | None:
    """The meeting number of a Zoom meeting link on one of `zoom_domains` (or a subdomain), else None."""
    found = ZOOM_LINK.match(link or "")
    if found is None:
        return None
    host = found["host"].lower()
    if not any(host == domain or host.endswith(f".{domain}") for domain in zoom_domains):
        return None
    return int(found["id"])


def join_link(link: str) -> str:
    """A Zoom meeting link as attendees may hold it: `/j/<number>`, its passcode (`pwd`) kept and nothing else. A
    start link (`/s/<number>?zak=…`, pasted as the meeting type's link, say) logs its holder in as the host."""
    found = ZOOM_LINK.match(link)
    if found is None:
        return link
    passcode = parse_qs(urlsplit(link).query).get("pwd")
    return f"https://{found['host']}/j/{found['id']}" + (f"?{urlencode({'pwd': passcode[0]})}" if passcode else "")


def each_attendee(emails: list[str], step: Callable[[str], None]) -> None:
    """`step` for every attendee, each whatever became of the ones before: one booking NeetoCal will not cancel
    must not leave the others live. The first error is raised once all were tried."""
    first: MeetbridgeError | None = None
    for email in emails:
        try:
            step(email)
        except MeetbridgeError as error:
            first = first or error
    if first is not None:
        raise first


# What a booking's pending create note holds (`ensure_booking`), cleared together.
NO_PENDING_BOOKING: dict[str, Any] = {"create_pending": None, "pending_join_url": None, "pending_slot": None,
                                      "pending_host": None}


def _zoom_utc(value: str | None) -> str | None:
    if not value:
        return None
    return zoom_time(parse_utc(value))


