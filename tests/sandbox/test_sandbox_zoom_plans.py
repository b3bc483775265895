"""The Zoom simulator enforces an account plan's per-second budgets, label by label (API-FACTS 2.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sandbox import zoom
from tests.sandbox.sandbox_helpers import configure
from tests.sandbox.test_sandbox_zoom import create, created

PER_SECOND = "You have reached the maximum per-second rate limit for this API. Try again later."


@pytest.mark.parametrize(("plan", "medium"), [("free", 2), ("pro", 20), ("business", 60)])
def test_a_plan_caps_creates_at_its_medium_budget(zoom_api: httpx.Client, plan: str, medium: int) -> None:
    configure(zoom_api, rate_limit_plan=plan)
    statuses = [create(zoom_api).status_code for _ in range(medium + 2)]
    # Sent back to back, well inside one second: the budget passes, the rest are refused.
    assert statuses[:medium] == [201] * medium
    assert 429 in statuses[medium:]
    limits = zoom_api.get("/_sandbox/rate_limits").json()
    assert limits["plan"] == plan
    assert limits["labels"]["medium"]["limit_per_second"] == medium
    assert limits["labels"]["medium"]["peak_per_second"] == medium
    assert limits["labels"]["light"]["limit_per_second"] == zoom.PLAN_RATES_PER_SECOND[plan]["light"]
    assert limits["labels"]["heavy"]["limit_per_second"] == zoom.PLAN_RATES_PER_SECOND[plan]["heavy"]


def test_the_429_says_what_zoom_says(zoom_api: httpx.Client) -> None:
    configure(zoom_api, rate_limit_plan="free")  # light: 4/s
    meeting = created(zoom_api)
    answers = [zoom_api.get(f"/v2/meetings/{meeting['id']}") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 4 + [429]
    refused = answers[-1]
    assert refused.json() == {"code": 429, "message": PER_SECOND}
    assert refused.headers["X-RateLimit-Category"] == "Light"
    assert refused.headers["X-RateLimit-Type"] == "QPS"
    assert refused.headers["X-RateLimit-Limit"] == "4"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    retry_at = datetime.fromisoformat(refused.headers["Retry-After"].replace("Z", "+00:00"))
    assert timedelta(0) < retry_at - datetime.now(UTC) <= timedelta(seconds=2)
    counts = zoom_api.get("/_sandbox/rate_limits").json()["labels"]["light"]
    assert (counts["accepted"], counts["refused"]) == (4, 1)


def test_a_label_setting_overrides_the_plan_and_reset_clears_both(zoom_api: httpx.Client) -> None:
    configure(zoom_api, rate_limit_plan="business", rate_limits_per_second={"medium": 1})
    assert [create(zoom_api).status_code for _ in range(2)] == [201, 429]
    assert zoom_api.post("/_sandbox/reset").status_code in (200, 204)
    limits = zoom_api.get("/_sandbox/rate_limits").json()
    assert limits["plan"] is None
    assert all(label["limit_per_second"] is None for label in limits["labels"].values())


def test_an_unknown_plan_is_refused(zoom_api: httpx.Client) -> None:
    response = zoom_api.patch("/_sandbox/config", json={"rate_limit_plan": "platinum"})
    assert response.status_code == 400
