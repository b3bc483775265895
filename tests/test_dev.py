"""Issue 2: the README's run command brings a demo booking to `synced`."""

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
