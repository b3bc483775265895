"""Queueing tasks by name: Celery task messages built in-process, so they can be pushed inside a Redis script or
pipeline.

Imported by the web process, so it stays light: the Celery app and the task names (`workers.celery_app`), never
`workers.tasks`, the sync or an API client (`tests/webhooks/test_thin_web.py`).

The webhook records a delivery and queues its sync in one atomic Redis script (never recorded-but-not-queued,
one round trip on the hot path), and the sweep queues a thousand refreshes in one pipeline. Both need the
exact message Celery's Redis transport would LPUSH; `task_message` fills in a template cut once per process from
the message Celery's own protocol code builds. `tests/workers/test_queue.py` checks the template against that
message and against what `send_task` publishes, and every flow test runs it through a real worker.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.serialization import dumps
from kombu.utils import json as kombu_json
from kombu.utils.uuid import uuid

from workers.celery_app import QUEUE, SYNC
from workers.celery_app import app as celery_app

if TYPE_CHECKING:
    from workers.state import Store
    from workers.wiring import Services


def task_message(app: Celery, task_name: str, args: tuple[Any, ...], queue: str = QUEUE) -> str:
    """The message Celery's Redis transport would LPUSH for `task_name(*args)`, with a new task id."""
    return _template(app, task_name, queue, os.getpid()).fill(uuid(), args, uuid())


def celery_built_message(app: Celery, task_name: str, args: tuple[Any, ...], queue: str, task_id: str,
                         delivery_tag: str) -> dict[str, Any]:
    """The message as Celery's own protocol code builds it: the reference `task_message`'s template is cut from."""
    # argsrepr given: Celery's own safe repr of the arguments costs more than the rest of the message.
    headers, properties, body, _ = app.amqp.as_task_v2(task_id, task_name, args=args, kwargs={},
                                                       argsrepr=repr(args), kwargsrepr="{}")
    content_type, content_encoding, data = dumps(body, serializer="json")
    payload = data.encode() if isinstance(data, str) else data
    return {
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
            "delivery_tag": delivery_tag,
        },
    }


# Stand-ins for a message's variable parts: no JSON escaping touches them, and no id or base64 text contains "@".
_TASK_ID, _DELIVERY_TAG, _BODY, _ARGSREPR = "@task_id@", "@delivery_tag@", "@body@", "@argsrepr@"


@dataclass(frozen=True)
class _MessageTemplate:
    """Celery's message for one task name and queue, as JSON text with stand-ins where messages differ.

    Built once per process: Celery's protocol code, its serializer and the JSON of the whole message cost the
    webhook more than the rest of its message work (bench/ingest).
    """

    text: str
    embed: Any  # the body's third part (callbacks, errbacks, chain, chord), the same for every message

    def fill(self, task_id: str, args: tuple[Any, ...], delivery_tag: str) -> str:
        body = base64.b64encode(kombu_json.dumps([list(args), {}, self.embed]).encode()).decode()
        argsrepr = json.dumps(repr(args))[1:-1]  # as the JSON of the message would escape it
        # argsrepr last: it is the one part whose text comes from outside, and a stand-in in it stays as it is.
        return (self.text.replace(_TASK_ID, task_id).replace(_DELIVERY_TAG, delivery_tag)
                .replace(_BODY, body).replace(_ARGSREPR, argsrepr))


@functools.lru_cache(maxsize=32)
def _template(app: Celery, task_name: str, queue: str, pid: int) -> _MessageTemplate:
    # Keyed by the process id too: the message names its sender's process (headers.origin), and a forked
    # worker must not send its parent's.
    message = celery_built_message(app, task_name, (), queue, _TASK_ID, _DELIVERY_TAG)
    _, _, embed = json.loads(base64.b64decode(message["body"]))
    message["body"] = _BODY
    message["headers"]["argsrepr"] = _ARGSREPR
    return _MessageTemplate(text=json.dumps(message), embed=embed)


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
