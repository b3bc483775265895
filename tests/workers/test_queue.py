"""The message the webhook builds must be exactly what Celery's Redis transport would publish."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from celery import Celery

from tests.support import REDIS_URL
from workers.celery_app import app
from workers.queue import celery_built_message, task_message


def test_task_message_matches_what_send_task_publishes(redis_client: redis.Redis) -> None:
    queue = "mb-test-queue"
    producer_app = Celery("shape-check", broker=REDIS_URL)
    producer_app.conf.task_default_queue = queue
    producer_app.send_task("meetbridge.sync_appointment", args=("a1",))
    published = json.loads(redis_client.lpop(queue))
    built = json.loads(task_message(app, "meetbridge.sync_appointment", ("a1",), queue))

    assert built.keys() == published.keys()
    assert built["headers"].keys() == published["headers"].keys()
    assert built["properties"].keys() == published["properties"].keys()
    for key in ("content-type", "content-encoding"):
        assert built[key] == published[key]
    for key in ("task", "argsrepr", "retries", "lang"):
        assert built["headers"][key] == published["headers"][key]
    assert built["properties"]["delivery_info"] == published["properties"]["delivery_info"]
    assert base64.b64decode(built["body"]) == base64.b64decode(published["body"])


@pytest.mark.parametrize("args", [("a1",), ('quote " and \\ backslash', "ünïcode ✓"), ("@argsrepr@", "@body@")])
def test_the_message_template_fills_in_exactly_what_celery_builds(args: tuple[str, ...]) -> None:
    # task_message fills a template cut once from Celery's own message; for the same ids the two must agree.
    for task_name in ("meetbridge.sync_appointment", "meetbridge.refresh_start_url"):
        built = json.loads(task_message(app, task_name, args, "mb-test-queue"))
        reference = celery_built_message(app, task_name, args, "mb-test-queue", built["headers"]["id"],
                                         built["properties"]["delivery_tag"])

        assert built == reference


def test_each_message_has_its_own_task_id_and_delivery_tag() -> None:
    first, second = (json.loads(task_message(app, "meetbridge.sync_appointment", ("a1",))) for _ in range(2))

    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
    assert first["headers"]["root_id"] == first["properties"]["correlation_id"] == first["headers"]["id"]
