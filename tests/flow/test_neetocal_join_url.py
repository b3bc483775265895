"""Issue 14: links made from NEETOCAL_TEMPLATE_ID, and proof that the join URL landed on the NeetoCal booking.

NeetoCal's docs are silent on what happens to a form_responses key no question of the form has, so the
simulator does both (keeps it by default; `drop_unknown_form_responses` drops it) and these tests run both."""

from __future__ import annotations

import pytest

from sandbox import meetergo as meetergo_sim
from tests.support import (
    NEETOCAL_VERSIONS,
    Sims,
    appointment,
    assert_neetocal_calls_fit,
    future_start,
    metric,
    moved,
    neetocal_env,
    run_doctor,
    wait_until,
)

FIELD = "zoom_join_url"


def add_template(sims: Sims, *field_codes: str) -> str:
    body = {"name": "meetbridge", "questions": [{"field_code": code, "type": "short_text"} for code in field_codes]}
    return sims.post("neetocal", "templates", body)["template"]["id"]


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_dropped_join_url_is_a_warning_a_count_and_a_doctor_failure(make_stack, sims: Sims, neetocal: str
                                                                      ) -> None:
    sims.configure("neetocal", drop_unknown_form_responses=True)
    stack = make_stack(**neetocal_env(sims, neetocal))
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")  # still synced: the booking exists

    [booking] = sims.neetocal_bookings()
    assert FIELD not in booking["form_responses"]
    assert "NeetoCal dropped the join URL" in view["warning"] and f"field code {FIELD}" in view["warning"]
    assert "NEETOCAL_TEMPLATE_ID" in view["warning"]
    assert "neetocal_join_url_dropped" in [entry["event"] for entry in view["history"]]
    wait_until(lambda: metric(stack, "meetbridge_neetocal_join_url_dropped_total") == 1, timeout=5,
               message="the dropped join URL counted")

    result = run_doctor(stack.env)
    assert result.returncode != 0
    assert f"[FAIL] NeetoCal join URL: 1 appointment(s) (e.g. {appt['id']})" in result.stdout, result.stdout
    assert f"field code {FIELD}" in result.stdout
    if neetocal == "v2":
        assert_neetocal_calls_fit(sims, neetocal)


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_template_with_the_question_keeps_the_join_url(make_stack, sims: Sims, neetocal: str) -> None:
    sims.configure("neetocal", drop_unknown_form_responses=True)
    template_id = add_template(sims, FIELD)
    stack = make_stack(NEETOCAL_TEMPLATE_ID=template_id, **neetocal_env(sims, neetocal))
    appt = appointment(hour=10)
    stack.deliver(meetergo_sim.booking_created(appt))
    view = stack.wait_for_status(appt["id"], "synced")

    [link] = sims.get("neetocal", "meetings")["meetings"]
    assert link["template_id"] == template_id and FIELD in link["questions"]
    assert all(call["json"]["template_id"] == template_id for call in sims.calls("neetocal", "POST", "/meetings")
               if call["path"].endswith("/meetings"))
    [booking] = sims.neetocal_bookings()
    assert booking["form_responses"] == {FIELD: view["zoom"]["join_url"]}
    assert view["warning"] is None

    # A reschedule is read back too, and still finds it.
    later = moved(appt, future_start(days=4, hour=15))
    stack.deliver(meetergo_sim.booking_rescheduled(later, appt["start"]))
    wait_until(lambda: sims.neetocal_bookings()[0]["starts_at"].startswith(future_start(days=4).date().isoformat()))
    view = stack.wait_for_status(appt["id"], "synced")
    assert view["warning"] is None
    assert metric(stack, "meetbridge_neetocal_join_url_dropped_total") == 0

    result = run_doctor(stack.env)
    assert "[ok  ] NEETOCAL_TEMPLATE_ID: template meetbridge" in result.stdout, result.stdout
    assert "[ok  ] NeetoCal join URL" in result.stdout
    if neetocal == "v2":
        assert_neetocal_calls_fit(sims, neetocal)


@pytest.mark.parametrize("neetocal", NEETOCAL_VERSIONS)
def test_a_template_with_its_own_place_text_still_shows_where_each_appointment_happens(make_stack, sims: Sims,
                                                                                      neetocal: str) -> None:
    """A template's custom spot is copied onto every link made from it: its words ("we will call you") would stand
    where the booking should say the appointment's own place, or that the Zoom link is in the booking."""
    body = {"name": "meetbridge", "questions": [{"field_code": FIELD}], "spot": "custom",
            "spot_custom_text": "We will call you."}
    template_id = sims.post("neetocal", "templates", body)["template"]["id"]
    stack = make_stack(NEETOCAL_TEMPLATE_ID=template_id, **neetocal_env(sims, neetocal))
    in_person = appointment(channel="local", hour=10)
    in_person["location"] = "Hauptstr. 1, Berlin"
    on_zoom = appointment(hour=14, attendee={"email": "eve@example.com", "firstname": "Eve"})
    for appt in (in_person, on_zoom):
        stack.deliver(meetergo_sim.booking_created(appt))
    slugs = {appt["id"]: stack.wait_for_status(appt["id"], "synced")["neetocal"]["meeting_slug"]
             for appt in (in_person, on_zoom)}
    links = {m["slug"]: m for m in sims.get("neetocal", "meetings")["meetings"]}
    assert all(link["template_id"] == template_id for link in links.values())
    assert links[slugs[in_person["id"]]]["spot_custom_text"] == "In person: Hauptstr. 1, Berlin"
    assert links[slugs[on_zoom["id"]]]["spot_custom_text"] == "Zoom: the join link is in your booking details."


def test_doctor_refuses_an_unknown_template_and_a_link_that_is_no_template(make_stack, sims: Sims) -> None:
    stack = make_stack()
    unknown = run_doctor({**stack.env, "NEETOCAL_TEMPLATE_ID": "no-such-template"})
    assert unknown.returncode != 0
    assert "[FAIL] NEETOCAL_TEMPLATE_ID: no-such-template is not a scheduling-link template" in unknown.stdout
    unset = run_doctor(stack.env)
    assert "[warn] NEETOCAL_TEMPLATE_ID: not set" in unset.stdout and f"field code {FIELD}" in unset.stdout


def test_a_neetocal_url_without_a_version_is_refused_at_start_up(sims: Sims) -> None:
    from meetbridge.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="NEETOCAL_API_URL must end in the API version"):
        Settings.from_env({"NEETOCAL_API_URL": f"{sims.url('neetocal')}/api/external/v3"}, validate=False)
    assert Settings.from_env({"NEETOCAL_API_URL": "https://acme.neetocal.com/api/external/v1"},
                             validate=False).neetocal_api_version == "v1"
