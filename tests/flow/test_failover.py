"""Redis high availability: replicas acknowledging a 202, Sentinel failover followed by every process, READONLY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
import redis

from sandbox import meetergo as meetergo_sim
from tests.support import ROOT, RedisServer, SentinelCluster, Sims, Stack, appointment, wait_until


def deliver_until_accepted(stack: Stack, payload: dict, timeout: float = 60) -> httpx.Response:
    """As meetergo does: anything but a 2xx (or no answer) is sent again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = stack.deliver(payload)
            if response.status_code == 202:
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "no 202 in time"
        time.sleep(0.2)


def replicas_connected(server: RedisServer, count: int) -> bool:
    """The replicas are online: a write is acknowledged by all of them."""
    try:
        client = redis.Redis(port=server.port)
        client.set("replication-probe", time.time())
        return client.wait(count, 1000) >= count
    except redis.RedisError:
        return False


def test_a_202_waits_for_a_replica_and_a_retry_after_a_503_is_a_duplicate(make_stack, sims: Sims,
                                                                           tmp_path) -> None:
    primary = RedisServer(tmp_path / "primary")
    primary.start()
    replica = RedisServer(tmp_path / "replica", replica_of=primary.port)
    replica.start()
    try:
        wait_until(lambda: replicas_connected(primary, 1), timeout=20, message="the replica to connect")
        stack = make_stack(workers=0, REDIS_URL=primary.url, REDIS_MIN_REPLICAS_ACK=1)
        first = appointment(hour=8)
        assert stack.deliver(meetergo_sim.booking_created(first)).status_code == 202

        replica.signal(signal.SIGSTOP)  # the replica stops acknowledging
        appt = appointment(hour=11)
        payload = meetergo_sim.booking_created(appt)
        refused = stack.deliver(payload)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        replica.signal(signal.SIGCONT)
        retried = stack.deliver(payload)
        assert retried.status_code == 202
        assert retried.json()["status"] == "duplicate"  # the first write was on the primary all along

        stack.start_worker()
        for one in (first, appt):
            stack.wait_for_status(one["id"], "synced")
        assert len(sims.zoom_meetings()) == 2 and len(sims.neetocal_bookings()) == 2
    finally:
        replica.signal(signal.SIGCONT)
        replica.stop()
        primary.stop()


def test_readonly_makes_the_client_reconnect_instead_of_failing_the_delivery(make_stack, tmp_path) -> None:
    server, other = RedisServer(tmp_path / "a"), RedisServer(tmp_path / "b")
    server.start()
    other.start()
    try:
        stack = make_stack(workers=0, REDIS_URL=server.url)
        admin = redis.Redis(port=server.port)
        # A managed Redis failing over behind one DNS name: the node we are connected to turns replica for a
        # moment (writes answer READONLY), then a writable primary is there again.
        admin.replicaof("127.0.0.1", other.port)
        wait_until(lambda: admin.info("replication")["role"] == "slave", timeout=10)
        promote = threading.Timer(1.0, lambda: redis.Redis(port=server.port).replicaof("NO", "ONE"))
        promote.start()
        response = stack.deliver(meetergo_sim.booking_created(appointment()))
        promote.join()
        assert response.status_code == 202, response.text
        assert admin.info("replication")["role"] == "master"
    finally:
        server.stop()
        other.stop()


@pytest.mark.slow
def test_web_worker_and_beat_follow_a_sentinel_failover_and_lose_nothing(make_stack, sims: Sims,
                                                                          tmp_path) -> None:
    cluster = SentinelCluster(tmp_path / "ha")
    cluster.start()
    try:
        sims.configure("zoom", start_url_ttl_seconds=8, latency_ms=100)
        # A 202 promises that a replica holds the delivery: it survives the primary's loss.
        stack = make_stack(workers=1, beat=True, REDIS_SENTINELS=cluster.addresses,
                           REDIS_URL="redis://sentinel-managed/0", REDIS_MIN_REPLICAS_ACK=1,
                           START_URL_REFRESH_LEAD_SECONDS=4, REFRESH_SWEEP_SECONDS=1)
        hosts = [{"id": f"h{n}", "email": f"h{n}@example.com", "givenName": "H", "familyName": str(n)}
                 for n in range(10)]
        appointments = [appointment(days=2 + n // 10, hour=8, host=hosts[n % 10]) for n in range(40)]
        accepted: list[str] = []
        killed_at: list[float] = []
        first_202_after_kill: list[float] = []

        def stream() -> None:
            for n, appt in enumerate(appointments):
                if n == 15:
                    old = cluster.current_primary_port()
                    cluster.primary.signal(signal.SIGKILL)  # mid-stream, no goodbye
                    killed_at.append(time.monotonic())
                deliver_until_accepted(stack, meetergo_sim.booking_created(appt))
                if killed_at and not first_202_after_kill:
                    first_202_after_kill.append(time.monotonic())
                accepted.append(appt["id"])
            # The web already writes to the new primary; the sentinels agree on it within a moment.
            wait_until(lambda: cluster.current_primary_port() != old, timeout=10, message="the sentinels to agree")

        stream()
        ids = [a["id"] for a in appointments]
        assert accepted == ids
        def unsynced() -> list[tuple[str, str | None]]:
            return [(i, (stack.appointment(i) or {}).get("status")) for i in ids
                    if (stack.appointment(i) or {}).get("status") != "synced"]

        try:
            wait_until(lambda: not unsynced(), timeout=150, interval=1,
                       message="every appointment to be synced after the failover")
        except AssertionError:
            raise AssertionError(f"not synced: {unsynced()}\n{stack.logs()[-6000:]}") from None
        meetings = Counter(m["agenda"].rsplit("[meetbridge:", 1)[1].rstrip("]") for m in sims.zoom_meetings())
        assert meetings == Counter(ids), "each appointment has exactly one Zoom meeting"
        assert len(sims.neetocal_bookings()) == len(ids)
        # Beat kept sweeping on the new primary: start_urls (8 s) are still being refreshed.
        gets = sum(m["gets"] for m in sims.zoom_meetings())
        wait_until(lambda: sum(m["gets"] for m in sims.zoom_meetings()) > gets + 5, timeout=30,
                   message="beat's refreshes to go on after the failover")
        assert all(p.popen.poll() is None for p in stack.processes), "a process died during the failover"
        # The worker followed the failover itself: it lost its broker connection and made a new one.
        worker_log = stack.processes[0].log()
        assert "Connection to broker lost" in worker_log and worker_log.count("Connected to sentinel://") >= 2
        doctor = subprocess.run([sys.executable, "-m", "meetbridge.cli", "doctor"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, **stack.env})
        assert (f"[ok  ] Redis topology: primary 127.0.0.1:{cluster.current_primary_port()} (mymaster), "
                "1 replica(s), 3 of 3 sentinel(s) agree") in doctor.stdout, doctor.stdout
        print(f"first 202 after the primary's loss: {first_202_after_kill[0] - killed_at[0]:.1f} s")
    finally:
        cluster.stop()
