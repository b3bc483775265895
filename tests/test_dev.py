"""Issue 2: the README's run command brings a demo booking to `synced` (issue 14: through `meetbridge connect`
and the webhook it registered in meetergo)."""

from __future__ import annotations

import os
import subprocess

from tests.support import REDIS_URL, ROOT, free_port


def test_readme_run_command_syncs_a_demo_booking(redis_client) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOOM_", "NEETOCAL_", "MEETERGO_"))}
    env.update(PORT=str(free_port()), REDIS_URL=REDIS_URL)
    result = subprocess.run(["scripts/dev", "--exit-after-demo"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "demo appointment is synced" in result.stdout
    assert "zoom_meeting_created" in result.stdout and "neetocal_booking_created" in result.stdout
    # `connect` registered the webhook, and the demo booking came to the service through it: meetergo's
    # delivery log has booking_created posted to that endpoint (token redacted) and accepted.
    assert "[ok  ] meetergo webhook: registered as" in result.stdout
    assert "connected: meetergo delivers to meetbridge" in result.stdout
    assert "meetergo delivered booking_created to http://localhost:" in result.stdout
    assert "/webhooks/meetergo?token=<redacted>: 202" in result.stdout
