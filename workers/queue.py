"""Queueing tasks by name: Celery task messages built in-process, so they can be pushed inside a Redis script or
pipeline.

Imported by the web process, so it stays light: the Celery app and the task names (`workers.celery_app`), never
`workers.tasks`, the sync or an API client (`tests/webhooks/test_thin_web.py`).

The webhook records a delivery and queues its sync in one atomic Redis script (never recorded-but-not-queued,
one round trip on the hot path), and the sweep queues a thousand refreshes in one pipeline. Both need the
exact message Celery's Redis transport would LPUSH; `task_message` builds it with Celery's own protocol code.
`tests/workers/test_queue.py` checks it against what `send_task` publishes, and every flow test runs it
through a real worker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

from workers.celery_app import QUEUE, SYNC
from workers.celery_app import app as celery_app

if TYPE_CHECKING:
    from workers.state import Store
    from workers.wiring import Services


def task_message(app: Celery, task_name: str, args: tuple[Any, ...], queue: str = QUEUE) -> str:
    task_id = uuid()
    # argsrepr given: Celery's own safe repr of the arguments costs more than the rest of the message.
    headers, properties, body, _ = app.amqp.as_task_v2(task_id, task_name, args=args, kwargs={},
                                                       argsrepr=repr(args), kwargsrepr="{}")
    content_type, content_encoding, data = dumps(body, serializer="json")
    payload = data.encode() if isinstance(data, str) else data
    return json.dumps({
        "body": base64.b64encode(payload).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid(),
        },
    })


def enqueue_many(store: Store, app: Celery, task_name: str, arg_tuples: Iterable[tuple[Any, ...]],
                 queue: str = QUEUE) -> int:
    """Queue one task per argument tuple in a single round trip."""
    messages = [task_message(app, task_name, args, queue) for args in arg_tuples]
    store.push_tasks(queue, messages)
    return len(messages)


def sync_message(appointment_id: str) -> str:
    """The message that runs an appointment's sync (the webhook pushes it inside its recording script)."""
    return task_message(celery_app, SYNC, (appointment_id,))


def queue_syncs(services: Services, appointment_ids: list[str]) -> int:
    """Mark the appointments pending and queue a sync for each, in one round trip for the queue."""
    services.store.mark_pending(appointment_ids)
    return enqueue_many(services.store, celery_app, SYNC, [(appointment_id,) for appointment_id in appointment_ids])
