"""Property tests of the fold: whatever the events say, it answers, and the answer ignores arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

from schemas.events import AppointmentEvent, Attendee, Host, MeetingType
from workers.desired import fold, snapshot

T0 = datetime(2030, 1, 1, tzinfo=UTC)
moments = st.none() | st.integers(-10**6, 10**9).map(lambda s: T0 + timedelta(seconds=s)) | st.sampled_from(
    [datetime(2099, 1, 1, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC)])
texts = st.text(max_size=30)
events = st.builds(
    AppointmentEvent,
    kind=st.sampled_from(["booking_created", "booking_rescheduled", "booking_cancelled", "readback"]),
    appointment_id=st.just("a1"),
    occurred_at=moments,
    start=moments,
    end=moments,
    hosts=st.lists(st.builds(Host, email=texts, name=texts), max_size=3).map(tuple),
    attendees=st.lists(st.builds(Attendee, email=texts, name=texts, timezone=st.none() | texts), max_size=3)
    .map(tuple),
    meeting_type=st.none() | st.builds(MeetingType, id=st.none() | texts, slug=st.none() | texts,
                                       name=st.none() | texts),
    cancelled=st.booleans(),
    cancel_reason=st.none() | texts,
    received_at=moments,
)


@given(st.lists(events, max_size=8))
@settings(max_examples=1500, derandomize=True, deadline=None, database=None)
def test_fold_never_raises_and_ignores_arrival_order(history: list[AppointmentEvent]) -> None:
    desired = fold(history)
    assert fold(list(reversed(history))) == desired
    if desired is not None:
        assert desired.cancelled or (desired.start is not None and desired.hosts)
        compacted = snapshot(history)
        assert compacted is not None and fold([compacted]) == desired


@given(st.lists(events, max_size=6))
@settings(max_examples=500, derandomize=True, deadline=None, database=None)
def test_events_survive_their_stored_form(history: list[AppointmentEvent]) -> None:
    for event in history:
        assert AppointmentEvent.from_dict(event.to_dict()) == event
        assert event.fingerprint() == AppointmentEvent.from_dict(event.to_dict()).fingerprint()
