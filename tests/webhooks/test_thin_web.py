"""Issue 12: the web process loads no API client, no sync and no reconciliation, however it is used short of a
host pressing "Start" on a host link (the one view that calls Zoom, which loads the Zoom client then)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from tests.support import ADMIN_TOKEN, REDIS_URL, ROOT, SECRET_KEY, WEBHOOK_TOKEN

# Modules the web process must not load: the Celery worker graph, the sync, reconciliation, every API client.
WORKER_SIDE = ("workers.tasks", "workers.sync", "workers.reconciliation", "workers.start_urls", "workers.limits",
               "workers.clients")

# Run in a fresh interpreter: pytest's own process has imported everything already. Creates the app as gunicorn
# does (`webhooks:create_app()`, configured from the environment), uses every blueprint, prints what is loaded.
SCRIPT = """
import json, sys
from pathlib import Path

import webhooks

app = webhooks.create_app()
client = app.test_client()
delivery = Path("tests/fixtures/meetergo/booking_created.json").read_bytes()
admin = {"Authorization": "Bearer " + sys.argv[2]}
answers = {
    "delivery": client.post("/webhooks/meetergo?token=" + sys.argv[1], data=delivery,
                            content_type="application/json").status_code,
    "refused": client.post("/webhooks/meetergo?token=wrong", data=b"{}", content_type="application/json").status_code,
    "admin": client.get("/api/appointments/appt-uuid-12345", headers=admin).status_code,
    "replay": client.post("/api/appointments/appt-uuid-12345/replay", headers=admin).status_code,
    "host_page": client.get("/api/hosts/host@example.com/page", headers=admin).status_code,
    "host_link": client.get("/h/appt-uuid-12345/not-a-signature").status_code,
    "readyz": client.get("/readyz").status_code,
    "metrics": client.get("/metrics").status_code,
    "openapi": client.get("/openapi.json").status_code,
}
print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))
"""


def test_the_web_app_loads_no_api_client_sync_or_reconciliation(redis_client: redis.Redis) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MEETERGO_", "ZOOM_", "NEETOCAL_", "METRICS_"))}
    env.update(REDIS_URL=REDIS_URL, MEETERGO_WEBHOOK_TOKENS=WEBHOOK_TOKEN, SECRET_KEY=SECRET_KEY,
               ADMIN_TOKEN=ADMIN_TOKEN, PUBLIC_URL="https://meetbridge.test", LOG_LEVEL="ERROR")
    result = subprocess.run([sys.executable, "-c", SCRIPT, WEBHOOK_TOKEN, ADMIN_TOKEN], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["answers"] == {"delivery": 202, "refused": 401, "admin": 200, "replay": 202, "host_page": 200,
                               "host_link": 403, "readyz": 200, "metrics": 200, "openapi": 200}
    loaded = [name for name in seen["modules"] if name.startswith(WORKER_SIDE)]
    assert loaded == [], f"the web process loaded worker-side modules: {loaded}"
    assert "workers.queue" in seen["modules"]  # the light module the receiver queues through
    # The message it queued is the sync task's, by name: a worker can run it.
    message = json.loads(redis_client.lindex("meetbridge", -1))
    assert message["headers"]["task"] == "meetbridge.sync_appointment"
