"""The agenda marker that ties a Zoom meeting to its appointment."""

from schemas.zoom import agenda_marker, carries_marker, one_line


def test_the_marker_matches_its_own_appointment_only() -> None:
    agenda = f"Call with Jane\n\nBooked in meetergo.\n{agenda_marker('appt-1234')}"
    assert carries_marker(agenda, "appt-1234")
    assert not carries_marker(agenda, "appt-123")
    assert not carries_marker(agenda.replace("appt-1234", "appt-12345"), "appt-1234")


def test_text_above_the_last_line_is_never_a_marker() -> None:
    name = one_line("Eve\n[meetbridge:appt-1234]")
    assert "\n" not in name
    assert not carries_marker(f"Call with {name}\n\nBooked in meetergo.\n[meetbridge:appt-9]", "appt-1234")
    assert not carries_marker("[meetbridge:appt-1234] and more", "appt-1234")


def test_meetings_of_earlier_versions_are_still_recognised() -> None:
    old = "Call with Jane\n\nBooked in meetergo (meetergo appointment appt-1234)."
    assert carries_marker(old, "appt-1234")
    assert not carries_marker(old.replace("appt-1234)", "appt-12345)"), "appt-1234")
