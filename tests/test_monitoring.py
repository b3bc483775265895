"""The dashboard and alert rules that ship in deploy/: valid, unit-tested, and reading metrics that exist."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sandbox import meetergo as meetergo_sim
from tests.support import ROOT, Stack, appointment, wait_until

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "meetbridge.json"
METRIC = re.compile(r"\bmeetbridge_[a-z_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]])
def test_the_alert_rules_are_valid_and_their_unit_tests_pass(args: list[str]) -> None:
    result = subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def named_metrics() -> set[str]:
    names = set(METRIC.findall((PROMETHEUS / "alerts.yml").read_text()))
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            names |= set(METRIC.findall(target["expr"]))
    # A histogram is announced by its base name; a counter without its _total in the TYPE line.
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_every_metric_the_dashboard_and_rules_read_exists(stack: Stack) -> None:
    appt = appointment()
    stack.deliver(meetergo_sim.booking_created(appt))
    stack.wait_for_status(appt["id"], "synced")
    stack.deliver(meetergo_sim.booking_created(appt), token="not-the-token-at-all-0123456789")
    # A worker sends its counts when it goes idle, and at least every second.
    scraped = wait_until(lambda: (text := stack.http.get(f"{stack.web_url}/metrics").text).count(
        "meetbridge_syncs_total{") and text, timeout=5, message="the sync's counts")
    announced = set(re.findall(r"^# TYPE (\S+)", scraped, flags=re.M))
    announced |= {name + "_total" for name in announced}
    missing = sorted(name for name in named_metrics() if name not in announced)
    assert not missing, f"read by deploy/ but not exported: {missing}"
    assert 'meetbridge_zoom_daily_used{host="john@example.com"} 1.0' in scraped
    assert "meetbridge_redis_up 1.0" in scraped


def test_metrics_say_when_redis_is_down(make_stack, private_redis) -> None:
    stack = make_stack(workers=0, REDIS_URL=private_redis.url)
    private_redis.stop()
    scraped = stack.http.get(f"{stack.web_url}/metrics")
    assert scraped.status_code == 200
    assert "meetbridge_redis_up 0.0" in scraped.text


def test_the_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "meetbridge" and dashboard["panels"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert Path(DASHBOARD).stat().st_size < 100_000


def test_workers_send_task_events_for_flower() -> None:
    from meetbridge.config import Settings
    from workers.celery_app import celery_config

    config = celery_config(Settings())
    assert config["worker_send_task_events"] and config["task_send_sent_event"]


def test_task_events_reach_an_event_receiver_in_batches(stack: Stack, redis_client) -> None:
    # Flower reads task events with Celery's EventReceiver, capturing in a thread; the worker publishes them
    # batched (on the task.multi routing key), not one PUBLISH per event.
    from celery import Celery

    received: list[dict] = []
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    # This stack's database only (pub/sub is server-wide), and the worker's events only (task.sent is a sender's).
    database = redis_client.connection_pool.connection_kwargs["db"]
    listener.psubscribe(f"/{database}.celeryev/task.*")
    monitor = Celery("flower-stand-in", broker=stack.env["REDIS_URL"])
    with monitor.connection_for_read() as connection:
        receiver = monitor.events.Receiver(connection, handlers={"*": received.append})
        capture = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        capture.start()
        with monitor.connection_for_write() as probe_connection, \
                monitor.events.Dispatcher(probe_connection) as probe:
            wait_until(lambda: probe.send("meetbridge-probe") or any(e["type"] == "meetbridge-probe" for e in received),
                       message="the receiver to be subscribed")
        appts = [appointment(hour=9 + n) for n in range(6)]
        for appt in appts:
            stack.deliver(meetergo_sim.booking_created(appt))
        for appt in appts:
            stack.wait_for_status(appt["id"], "synced")

        def sync_task_events() -> list[str]:
            syncs = {e["uuid"] for e in list(received) if e.get("name") == "meetbridge.sync_appointment"}
            return [e["type"] for e in list(received) if e.get("uuid") in syncs]

        wait_until(lambda: sync_task_events().count("task-succeeded") >= len(appts), timeout=15,
                   message="the syncs' task events")
        assert {"task-received", "task-started", "task-succeeded"} <= set(sync_task_events())
        receiver.should_stop = True
        capture.join(timeout=5)
    channels = []
    deadline = time.monotonic() + 2  # every event is published by now; read what the listener was sent
    while time.monotonic() < deadline:
        if (message := listener.get_message(timeout=0.1)) is not None:
            channels.append(message["channel"])
    listener.close()
    task_channels = [channel for channel in channels if not channel.endswith("task.sent")]
    assert task_channels and all(channel.endswith("task.multi") for channel in task_channels), task_channels
    task_events = [event for event in received if event["type"].startswith("task-")]
    assert len(task_channels) * 4 <= len(task_events), (len(task_channels), len(task_events))


def published_task_events(message: dict) -> list[dict]:
    """The task events of one PUBLISH on the task.multi channel (a kombu message whose body is a list)."""
    envelope = json.loads(message["data"])
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)


def test_a_warm_shutdown_publishes_the_task_events_still_buffered(make_stack, redis_client, tmp_path) -> None:
    # The timer is set an hour out in this worker (a sitecustomize on its path), so a task's events can only
    # leave it by the stop: a warm shutdown that dropped the buffer would lose the last second of them.
    hook = tmp_path / "slow_event_timer"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport workers.task_events\n"
        "workers.task_events.FLUSH_SECONDS = 3600.0\n")
    stack = make_stack(workers=0)
    worker = stack.start_worker(PYTHONPATH=str(hook))
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    database = redis_client.connection_pool.connection_kwargs["db"]
    listener.psubscribe(f"/{database}.celeryev/task.multi")
    try:
        appt = appointment()
        stack.deliver(meetergo_sim.booking_created(appt))
        stack.wait_for_status(appt["id"], "synced")
        time.sleep(0.5)
        assert listener.get_message(timeout=0.5) is None, "published before the stop: the timer was not held off"
        worker.stop()
        assert worker.popen.returncode == 0, worker.log()[-2000:]
        events = []
        while (message := listener.get_message(timeout=1)) is not None:
            events += published_task_events(message)
    finally:
        listener.close()
    succeeded = [event for event in events if event["type"] == "task-succeeded"]
    assert succeeded, [event["type"] for event in events]


def test_after_a_consumer_stop_task_events_go_out_one_by_one(redis_client) -> None:
    """A consumer that lost its broker connection stops, then starts again with a new dispatcher; Celery hands that
    one only the events that failed to go out, so the old dispatcher must not keep a batch nobody flushes."""
    from types import SimpleNamespace

    from celery import Celery
    from celery.utils.timer2 import Timer

    from tests.support import REDIS_URL
    from workers.task_events import BatchedTaskEvents

    database = redis_client.connection_pool.connection_kwargs["db"]
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(f"/{database}.celeryev/task.*")
    app = Celery("events-stand-in", broker=REDIS_URL)
    timer = Timer()
    try:
        with app.connection_for_write() as connection, app.events.Dispatcher(connection) as dispatcher:
            consumer = SimpleNamespace(event_dispatcher=dispatcher, hub=None, timer=timer)
            step = BatchedTaskEvents(consumer)
            step.start(consumer)
            dispatcher.send("task-started", uuid="batched")
            assert listener.get_message(timeout=0.3) is None, "sent at once: not batched"
            step.stop(consumer)
            assert listener.get_message(timeout=1)["channel"].endswith("task.multi")  # the batch, at the stop
            dispatcher.send("task-succeeded", uuid="after-the-stop")
            message = listener.get_message(timeout=1)
    finally:
        timer.stop()
        listener.close()
    assert message is not None and message["channel"].endswith("task.succeeded"), message
