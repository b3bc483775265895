"""The host page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

The page is opened as a host would, from a browser in another time zone than the server's: the times must be
the meeting's in the viewer's zone (rewritten by the page's own script), the "Start as host" button must lead
to the appointment's host link, and a cancelled meeting must not be there.

Playwright's own browser download does not work on these machines, so the test drives the system's chromium
(scripts/test installs it). Without it the test fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from sandbox import meetergo as meetergo_sim
from tests.flow.test_host_page import ANN, BEN, CARA, JOHN, book, page_links
from tests.support import Stack, appointment, cancelled_payload

VIEWER_ZONE = "America/New_York"


def _chromium() -> str:
    """The chromium executable, and Playwright importable; else fail under CI, skip elsewhere."""
    executable = shutil.which("chromium")
    missing = [] if executable else ["the chromium executable (apt-get install -y chromium)"]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    assert executable is not None
    return executable


def _viewer_text(value: str) -> str:
    # ICU puts narrow no-break spaces before AM/PM and in ranges; compare with plain spaces.
    return " ".join(value.replace("\u202f", " ").replace("\xa0", " ").split())


def _shown_as(moment: datetime, zone: str) -> tuple[str, str]:
    """How en-US shows `moment` in `zone`: ("Tue, Dec 1, 10:30 AM", "EST")."""
    local = moment.astimezone(ZoneInfo(zone))
    clock = f"{local.hour % 12 or 12}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"
    return f"{local:%a}, {local:%b} {local.day}, {clock}", local.tzname() or ""


def _soon_start() -> datetime:
    """A start 5 to 10 minutes from now, on a 5-minute mark (NeetoCal slots start on them)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    mark = now + timedelta(minutes=(5 - now.minute % 5) % 5 or 5)
    return mark + timedelta(minutes=5)


def test_host_page_in_a_browser_shows_times_in_the_viewers_zone(stack: Stack, tmp_path: Path) -> None:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    upcoming = appointment(days=2, hour=15, minute=30, attendee=ANN)
    dropped = appointment(days=2, hour=18, attendee=CARA)
    soon = meetergo_sim.make_appointment(_soon_start(), attendee=BEN)
    book(stack, upcoming, dropped, soon)
    stack.deliver(cancelled_payload(dropped))
    stack.wait_for_status(dropped["id"], "cancelled")
    views: dict[str, Any] = {a["id"]: stack.appointment(a["id"]) for a in (upcoming, soon)}
    links = page_links(stack, JOHN["email"])
    assert stack.web_url is not None
    url = stack.web_url + urlsplit(links["page_url"]).path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            # A phone in New York, while the server (and the page's fallback text) speak UTC.
            context = browser.new_context(timezone_id=VIEWER_ZONE, locale="en-US",
                                          viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                          is_mobile=True, has_touch=True)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            response = page.goto(url)
            assert response is not None and response.status == 200
            page.wait_for_function("document.getElementById('zone').textContent.includes('America/')")
            assert _viewer_text(page.inner_text("#zone")) == f"times in {VIEWER_ZONE}"

            # Sorted by start: the meeting starting soon first, highlighted; the cancelled one absent.
            ids = page.eval_on_selector_all("li.meeting", "items => items.map(i => i.dataset.appointmentId)")
            assert ids == [soon["id"], upcoming["id"]]
            assert page.locator(f'li[data-appointment-id="{dropped["id"]}"]').count() == 0
            assert "Cara" not in page.inner_text("body")

            for appt in (upcoming, soon):
                item = page.locator(f'li[data-appointment-id="{appt["id"]}"]')
                shown = _viewer_text(item.locator("time").inner_text())
                start = datetime.fromisoformat(appt["start"]).astimezone(UTC)
                day_and_time, zone_name = _shown_as(start, VIEWER_ZONE)
                assert shown.startswith(day_and_time), (shown, day_and_time)
                assert shown.endswith(zone_name) and "UTC" not in shown, shown
                assert item.locator("time").get_attribute("datetime") == start.strftime("%Y-%m-%dT%H:%M:%SZ")

                button = item.get_by_role("link", name="Start as host")
                assert button.is_visible()
                assert button.get_attribute("href") == views[appt["id"]]["host_link"] is not None
                join = item.locator(".join a")
                assert join.get_attribute("href") == views[appt["id"]]["zoom"]["join_url"]

            highlighted = page.locator(f'li[data-appointment-id="{soon["id"]}"]')
            assert "soon" in (highlighted.get_attribute("class") or "").split()
            assert highlighted.locator(".label").text_content() == "Starting soon"
            assert highlighted.locator(".label").is_visible()
            plain = page.locator(f'li[data-appointment-id="{upcoming["id"]}"]')
            assert plain.locator(".label").count() == 0
            # The highlight is visible: another background than an ordinary meeting's.
            backgrounds = [item.evaluate("el => getComputedStyle(el).backgroundColor") for item in (highlighted, plain)]
            assert backgrounds[0] != backgrounds[1]
            # Readable on a phone: nothing wider than the screen.
            assert page.evaluate("document.documentElement.scrollWidth") <= 390

            screenshot = tmp_path / "host_page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 1000
            assert errors == [], errors  # the CSP lets the page's own script and style run, and nothing fails
        finally:
            browser.close()


def test_a_missing_browser_fails_under_ci_and_is_skipped_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        _chromium()
