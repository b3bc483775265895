"""What issue 11's cost cuts must not break: one scrape still sees every worker's counts within seconds, and the
rate limiter still keeps Zoom's budget when several processes use it flat out (the simulator enforcing it)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter

import redis

from sandbox import meetergo as meetergo_sim
from tests.flow.test_resilience import bookings, deliver_all, wait_all_synced
from tests.support import REDIS_URL, ROOT, Sims, Stack, wait_until

SUCCEEDED = re.compile(r"meetbridge\.sync_appointment\[[^\]]+\] succeeded")


def scrape(stack: Stack) -> dict[str, float]:
    text = stack.http.get(f"{stack.web_url}/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_one_scrape_sees_both_workers_counts_within_seconds(make_stack, sims: Sims,
                                                            redis_client: redis.Redis) -> None:
    stack = make_stack(workers=2, concurrency=4)
    appointments = bookings(24, hosts=12)
    assert set(deliver_all(stack, [meetergo_sim.booking_created(a) for a in appointments])) == {202}
    ids = [a["id"] for a in appointments]
    wait_all_synced(redis_client, ids, timeout=90)
    # Both processes did part of the work, so both had counts of their own to send.
    workers = [p for p in stack.processes if "worker" in p.name]
    assert len(workers) == 2
    assert all(SUCCEEDED.search(p.log()) for p in workers), "each worker synced some"
    zoom_creates = len(sims.calls("zoom", "POST", "/meetings"))
    zoom_calls = len(sims.requests("zoom"))  # the token request too: it goes through the same counted client

    def totals_match() -> bool:
        samples = scrape(stack)
        return (samples.get('meetbridge_syncs_total{outcome="synced"}') == len(ids)
                and samples.get('meetbridge_deliveries_total{status="accepted"}') == len(ids)  # the intake script
                and samples.get('meetbridge_api_requests_total{operation="create_meeting",service="zoom",'
                                'status="201"}') == zoom_creates
                and samples.get('meetbridge_api_request_seconds_count{service="zoom"}') == zoom_calls)

    started = time.monotonic()
    wait_until(totals_match, timeout=5, interval=0.2, message=f"one scrape to hold every count: {scrape(stack)}")
    assert time.monotonic() - started < 3
    samples = scrape(stack)
    # The histogram's buckets are cumulative and end at the count.
    buckets = [v for k, v in samples.items() if k.startswith('meetbridge_api_request_seconds_bucket{')
               and 'service="zoom"' in k]
    assert buckets == sorted(buckets) and max(buckets) == zoom_calls
    assert samples['meetbridge_api_request_seconds_sum{service="zoom"}'] > 0


def test_counts_of_work_outside_a_task_reach_redis_by_the_flush_interval_and_at_exit(
        redis_client: redis.Redis) -> None:
    script = """
import sys, time, redis
from workers.metrics import Metrics
metrics = Metrics(redis.Redis.from_url(sys.argv[1], decode_responses=True), flush_seconds=0.3, buffered=True)
for _ in range(50):
    metrics.count("meetbridge_lookups_total", step="interval")
metrics.observe("meetbridge_api_request_seconds", 0.07, service="interval")
time.sleep(1.0)  # the flusher sends these
for _ in range(7):
    metrics.count("meetbridge_lookups_total", step="exit")  # these go at exit
"""
    subprocess.run([sys.executable, "-c", script, REDIS_URL], cwd=ROOT, check=True, timeout=60)
    fields = redis_client.hgetall("mb:metrics")
    assert fields['["meetbridge_lookups_total",[["step","interval"]]]'] == "50"
    assert fields['["meetbridge_lookups_total",[["step","exit"]]]'] == "7"
    assert fields['["meetbridge_api_request_seconds_hits",[["le","0.1"],["service","interval"]]]'] == "1"


LIMITED_CALLER = """
import sys, threading, httpx, redis
from workers.limits import RateLimiter
zoom, redis_url, token, per_second, threads, calls = sys.argv[1:7]
limiter = RateLimiter(redis.Redis.from_url(redis_url), "zoom:medium", float(per_second), max_wait_seconds=60)
http = httpx.Client(base_url=zoom, headers={"Authorization": f"Bearer {token}"}, timeout=30)
statuses = []
def run():
    for _ in range(int(calls)):
        limiter.acquire()
        statuses.append(http.post("/v2/users/host@example.com/meetings",
                                  json={"topic": "t", "start_time": "2030-01-01T10:00:00Z"}).status_code)
workers = [threading.Thread(target=run) for _ in range(int(threads))]
[w.start() for w in workers]
[w.join() for w in workers]
print(" ".join(map(str, statuses)))
"""


def test_the_limiter_keeps_several_processes_inside_zoom_budget(sims: Sims, redis_client: redis.Redis) -> None:
    """Three processes of four threads each take the same budget as fast as the limiter lets them; the Zoom
    simulator, enforcing 10 creates a second (sliding 1 s window), refuses none, and the budget is used."""
    budget = 10
    sims.configure("zoom", rate_limits_per_second={"medium": budget})
    token = sims.http.post(f"{sims.url('zoom')}/oauth/token",
                           params={"grant_type": "account_credentials", "account_id": "sandbox-account"},
                           auth=("sandbox-client", "sandbox-secret")).json()["access_token"]
    processes = [subprocess.Popen([sys.executable, "-c", LIMITED_CALLER, sims.url("zoom"),
                                   REDIS_URL, token, str(budget), "4", "5"], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True) for _ in range(3)]
    started = time.monotonic()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    elapsed = time.monotonic() - started
    statuses = Counter(int(s) for out in outputs for s in out.split())
    assert statuses == Counter({201: 60}), statuses
    limits = sims.get("zoom", "rate_limits")["labels"]["medium"]
    assert limits["refused"] == 0 and limits["accepted"] == 60
    assert limits["peak_per_second"] >= budget * 0.8  # used at (nearly) the whole pace: 9/s with the headroom
    assert elapsed >= 59 / (budget * 0.9) - 0.5  # and never faster than it
